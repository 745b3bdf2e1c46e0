#!/usr/bin/env node
import "../dist/src/model_cli.js";
