#!/usr/bin/env node
import '../dist/src/model/cli.js';
