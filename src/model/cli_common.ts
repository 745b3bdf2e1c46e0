import { InvalidArgumentError, Option } from 'commander';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, type BackendChoice } from '../shared/backend.js';
import { loadModelFile, type LoadedModel } from '../shared/io/model_file.js';
import { ARCHITECTURES } from '../shared/models/registry.js';
import { checkShardFits } from '../shared/train/memory.js';

/** What gdp-model's commands share: common flags, output (human lines vs JSON), backend start-up, model loading. */

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

/** Starts the tensor backend the flags ask for; throws BACKEND_* codes (see backend.ts). */
export async function startBackend(o: Common): Promise<void> {
  const info = await initBackend(o.backend);
  say(o, `backend: ${info.description}`);
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

/** The --arch option, listing the architectures gdp builds. */
export function archOption(required: boolean): Option {
  const o = new Option(
    '--arch <name>',
    `architecture (${Object.keys(ARCHITECTURES).join(', ')})${required ? '' : '; needed only for files without gdp metadata'}`,
  );
  return required ? o.makeOptionMandatory() : o;
}

/** Loads a weights file (errors: loadModelFile's) and says what it holds. */
export async function load(weights: string, arch: string | undefined, o: Common): Promise<LoadedModel> {
  const m = await loadModelFile(weights, { arch });
  say(o, `model: ${m.arch}, ${m.numClasses} classes, input ${m.inputShape.join('x')} (HWC)${m.gated ? ', gated (GBN) checkpoint' : ''}`);
  return m;
}

/** Throws BATCH_TOO_LARGE before a forward pass over `batch` images could exhaust the backend's memory. */
export function checkBatch(m: Pick<LoadedModel, 'model' | 'inputShape' | 'arch'>, batch: number, flag: string, setting = batch): void {
  checkShardFits(m, batch, tf.getBackend(), 'forward', { batch: `${flag} ${setting}`, advice: `use a smaller ${flag}` });
}
