import { InvalidArgumentError, Option } from 'commander';
import type { BackendChoice } from '../shared/backend_choice.js';
import { KERAS_SUFFIXES, isKerasFile } from '../shared/io/keras_suffixes.js';
import { ARCH_NAMES } from '../shared/models/arch_names.js';

/**
 * What gdp-model's command line shares: common flags and output (human lines vs JSON). Light on purpose: it loads
 * with every command line, flag errors and --help included; what the commands share once they run is in run_common.ts.
 */

/** Flags every command takes. */
export interface Common {
  backend: BackendChoice;
  json?: boolean;
}

export const fmt = (n: number): string => n.toLocaleString('en-US');
export const mega = (n: number): string => (n >= 1e9 ? `${(n / 1e9).toFixed(2)} G` : `${(n / 1e6).toFixed(2)} M`);

/** Human-readable lines go to stdout, or to stderr when stdout carries JSON. */
export function say(o: Common, line: string): void {
  (o.json ? process.stderr : process.stdout).write(`${line}\n`);
}

/** A commander parser for a flag taking a positive integer. */
export function positiveInt(flag: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${flag} must be a positive integer`);
    return n;
  };
}

/** A commander parser for a flag taking a positive finite number. */
export function positiveNumber(flag: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!(n > 0) || !Number.isFinite(n)) throw new InvalidArgumentError(`${flag} must be a positive number`);
    return n;
  };
}

/** A commander parser for a flag naming a Keras file: refused by its suffix before anything is read or loaded. */
export function kerasFile(path: string): string {
  if (!isKerasFile(path)) throw new InvalidArgumentError(`a Keras file ends in ${KERAS_SUFFIXES.join(', ')}`);
  return path;
}

/** The --arch option, listing the architectures gdp builds. */
export function archOption(required: boolean): Option {
  const o = new Option('--arch <name>', `architecture (${ARCH_NAMES.join(', ')})${required ? '' : '; needed only for files without gdp metadata'}`);
  return required ? o.makeOptionMandatory() : o;
}
