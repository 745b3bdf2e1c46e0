import { Option } from 'commander';
import { BACKEND_CHOICES } from './backend.js';

/** `--backend auto|tensorflow|wasm|cpu`, checked by commander at parse time, for every gdp command line. */
export function backendOption(): Option {
  return new Option('--backend <name>', 'tensor backend').choices([...BACKEND_CHOICES]).default('auto');
}
