import { readdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { GdpError } from '../errors.js';

/**
 * The safetensors files of a run folder that hold no model, told apart by their `format` metadata field, and the run's
 * model files beside them, told apart by their names. Their writers (coordinator/resume_point.ts, run_files.ts) take the
 * formats from here; loading a model refuses these files by name and points to the model files instead. The names
 * are read here only (the run folder's listing, a continuation's plan, gdp-model's advice).
 */

/** The resume point, logs/<task_name>/resume.safetensors: a run's whole state under gdp's own names, for gdp-coord --resume. */
export const RESUME_FORMAT = 'gdp-resume/1';

/** `<name>.optim.safetensors`: the SGD momentum saved beside the epoch checkpoint `<name>.safetensors`. */
export const MOMENTUM_FORMAT = 'gdp-momentum/1';

/** A run's model file told by its name: an epoch checkpoint, a save point, the melted network or its finetuned form. */
export type RunModelFile = { kind: 'epoch'; epoch: number } | { kind: 'save_point'; percent: number } | { kind: 'pruned' } | { kind: 'finetuned' };

/** The model files a run writes: epoch checkpoints, save points, the melted network and its finetuned form. */
const RUN_MODEL_FILE = /^(?:train-epoch(\d+)|gbn_(\d+)|(pruned)|finetuned)\.safetensors$/;
/** `train-epoch<N>.optim.safetensors`: the only checkpoints saved with their momentum are the epoch checkpoints. */
const MOMENTUM_FILE = /^train-epoch(\d+)\.optim\.safetensors$/;

/** What run model file `name` (a file name, no folder) is; undefined for any other name, a momentum file included. */
export function runModelFile(name: string): RunModelFile | undefined {
  const m = RUN_MODEL_FILE.exec(name);
  if (!m) return undefined;
  if (m[1] !== undefined) return { kind: 'epoch', epoch: Number(m[1]) };
  if (m[2] !== undefined) return { kind: 'save_point', percent: Number(m[2]) };
  return { kind: m[3] !== undefined ? 'pruned' : 'finetuned' };
}

/** The epoch N of `name` when it is the SGD momentum file of an epoch checkpoint, train-epoch<N>.optim.safetensors. */
export function momentumFileEpoch(name: string): number | undefined {
  const m = MOMENTUM_FILE.exec(name);
  return m ? Number(m[1]) : undefined;
}

const ORDER: readonly RunModelFile['kind'][] = ['epoch', 'save_point', 'pruned', 'finetuned'];

/** The run's model files in folder `dir`, in the order the run writes them; none when the folder cannot be read. */
export function runModelFiles(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  // Epochs ascending; save points from the largest MACs ratio down, as they are written: gbn_70 before gbn_40.
  const key = (f: RunModelFile) => [ORDER.indexOf(f.kind), f.kind === 'epoch' ? f.epoch : f.kind === 'save_point' ? -f.percent : 0];
  const files = names.flatMap((n) => {
    const f = runModelFile(n);
    return f ? [{ n, k: key(f) }] : [];
  });
  return files.sort((a, b) => a.k[0] - b.k[0] || a.k[1] - b.k[1]).map((f) => f.n);
}

/** What to pass instead of a run's non-model file `source`: the run's model files in its folder, or when it has none yet. */
function modelFilesAdvice(source: string): string {
  const files = runModelFiles(dirname(source));
  if (files.length) return `pass one of the run's model files instead: ${files.map((f) => join(dirname(source), f)).join(', ')}`;
  return (
    `the run has written no model file yet (train-epoch<N>.safetensors every base.model_saving_interval epochs and at ` +
    `the last, gbn_<percent>.safetensors, pruned.safetensors and finetuned.safetensors while pruning)`
  );
}

/**
 * Returns when metadata `meta` of file `source` may be a model file's, else says what the file is and what to pass.
 * @throws GdpError NOT_A_MODEL naming `source`: a resume point (resume its run with gdp-coord --resume, or pass one
 *   of the run's model files, listed), or the SGD momentum of a checkpoint (pass the checkpoint, named).
 */
export function checkIsModelFile(meta: Record<string, string>, source: string): void {
  if (meta.format === RESUME_FORMAT) {
    throw new GdpError(
      'NOT_A_MODEL',
      `${source} is a resume point (format '${RESUME_FORMAT}'), not a model file: it holds a run's state for ` +
        `\`gdp-coord --resume ${dirname(source)}\` (README, Resuming); ${modelFilesAdvice(source)}`,
    );
  }
  if (meta.format === MOMENTUM_FORMAT) {
    const name = basename(source);
    const weights = name.endsWith('.optim.safetensors') ? join(dirname(source), name.replace(/\.optim\.safetensors$/, '.safetensors')) : undefined;
    throw new GdpError(
      'NOT_A_MODEL',
      `${source} holds the SGD momentum of a checkpoint (format '${MOMENTUM_FORMAT}'), not a model file: ` +
        (weights ? `pass the checkpoint itself, ${weights}` : `pass the checkpoint it was saved with (the same name without .optim)`),
    );
  }
}
