#!/usr/bin/env node
import '../dist/src/worker/cli.js';
