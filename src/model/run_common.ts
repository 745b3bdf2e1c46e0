import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../shared/backend.js';
import { GdpError } from '../shared/errors.js';
import { loadModelFile, type LoadedModel } from '../shared/io/model_file.js';
import { checkIsModelFile } from '../shared/io/run_file_kinds.js';
import { readSafetensorsMetadata } from '../shared/io/safetensors.js';
import '../shared/tfjs_quiet.js';
import { checkShardFits } from '../shared/train/memory.js';
import { say, type Common } from './cli_common.js';

/** What gdp-model's commands share once they run: backend start-up, a look at a file's header, model loading, the batch check. */

/** Starts the tensor backend the flags ask for; throws BACKEND_* codes (see backend.ts). */
export async function startBackend(o: Common): Promise<void> {
  const info = await initBackend(o.backend);
  say(o, `backend: ${info.description}`);
}

/**
 * The metadata of weights file `path`, from its header alone: what a command checks before the backend starts or the
 * file loads. Undefined when the header cannot be read (a missing or broken file): loading it says why, with its code.
 */
export function peekMetadata(path: string): Record<string, string> | undefined {
  try {
    return readSafetensorsMetadata(path);
  } catch (e) {
    if (e instanceof GdpError || (e as NodeJS.ErrnoException).code !== undefined) return undefined;
    throw e;
  }
}

/**
 * peekMetadata, for a file a command is about to load as a model: throws NOT_A_MODEL (checkIsModelFile) for a
 * resume point or momentum file before the backend starts, rather than once loading fails on its missing tensors.
 */
export function peekModelMetadata(path: string): Record<string, string> | undefined {
  const meta = peekMetadata(path);
  if (meta) checkIsModelFile(meta, path);
  return meta;
}

/** Loads a weights file (errors: loadModelFile's) and says what it holds. */
export async function load(weights: string, arch: string | undefined, o: Common): Promise<LoadedModel> {
  const m = await loadModelFile(weights, { arch });
  say(o, `model: ${m.arch}, ${m.numClasses} classes, input ${m.inputShape.join('x')} (HWC)${m.gated ? ', gated (GBN) checkpoint' : ''}`);
  return m;
}

/**
 * Starts the backend, loads `o.weights` and runs `use` on the model, which is freed however `use` ends. Throws what
 * peekModelMetadata (first: NOT_A_MODEL), startBackend and load throw, and what `use` throws.
 */
export async function withModel<T>(o: Common & { weights: string; arch?: string }, use: (m: LoadedModel) => Promise<T>): Promise<T> {
  peekModelMetadata(o.weights);
  await startBackend(o);
  const m = await load(o.weights, o.arch, o);
  try {
    return await use(m);
  } finally {
    m.model.dispose();
  }
}

/** Throws BATCH_TOO_LARGE before a forward pass over `batch` images could exhaust the backend's memory. */
export function checkBatch(m: Pick<LoadedModel, 'model' | 'inputShape' | 'arch'>, batch: number, flag: string, setting = batch): void {
  checkShardFits(m, batch, tf.getBackend(), 'forward', { batch: `${flag} ${setting}`, advice: `use a smaller ${flag}` });
}
