#!/usr/bin/env node
import '../dist/src/coordinator/cli.js';
