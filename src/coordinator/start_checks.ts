import { isAbsolute, relative, resolve } from 'node:path';
import type { Config } from '../shared/config/schema.js';
import { computesNormalisation, loadRunData, resolveNormalisation, type ResolvedNormalisation } from '../shared/data/index.js';
import { describeNormalisation } from '../shared/data/transforms.js';
import type { DatasetPair } from '../shared/data/dataset.js';
import { SubsetDataset } from '../shared/data/subset.js';
import { checkModelFitsData, configModel } from '../shared/models/registry.js';
import { GdpError } from '../shared/errors.js';
import { channelStructure, prunableGroups, whyNothingToPrune } from '../shared/pruning/groups.js';
import { backendMemoryLimit, checkShardFits } from '../shared/train/memory.js';
import { initialWeightsSource, readInitialWeights } from './initial_weights.js';
import { checkRunFolder, runFolder } from './run_folder.js';

export interface StartCheckOptions {
  /** `--data-dir`, over the config's data.dir. */
  dataDir?: string;
  /** Workers the run waits for; without it (a dry run without --workers) the shard-size check is skipped. */
  workers?: number;
  /**
   * The workers' tensor backend ('wasm', 'cpu', 'tensorflow') when the coordinator knows it (`--local`,
   * `--in-process`: its own). Without it the check assumes wasm, the workers' default.
   */
  workerBackend?: string;
  /** Where to say which backend the shard-size check assumed, or why it was skipped. */
  note?: (line: string) => void;
  /** A resumed run takes its weights from the resume point, not model.weights, and writes on in its folder. */
  resumed: boolean;
  /** `--overwrite`: an earlier run in the run's folder is to be replaced (checkRunFolder). */
  overwrite?: boolean;
  /** `--discard-resume`: a continuation may replace an interrupted run's resume point in its folder (checkRunFolder). */
  discardResume?: boolean;
}

/**
 * Throws unless a shard of the training batch (a training step) and of the test batch (a forward pass) fits the
 * backend's memory, with the batch split over `workers` as the coordinator splits it (sizes differ by at most 1).
 * @throws GdpError BATCH_TOO_LARGE naming the config key, the shard size and the limit.
 */
export function checkBatchFits(config: Config, workers: number, backend: string): void {
  const { model, inputShape } = configModel(config.model, 0);
  try {
    const info = { model, inputShape, arch: config.model.name };
    const advice = 'more workers, or a smaller batch';
    const shard = (b: number) => Math.ceil(b / workers);
    const { batch_size: train, test_batch_size: test } = config.data;
    checkShardFits(info, shard(train), backend, 'train', { batch: `data.batch_size ${train}`, workers, total: train, advice });
    checkShardFits(info, shard(test), backend, 'forward', { batch: `data.test_batch_size ${test}`, workers, total: test, advice });
  } finally {
    model.dispose();
  }
}

/**
 * Throws unless the starting weights (model.weights or base.checkpoint_path) load into the config's model, and, for
 * a run that starts afresh, lie outside the run's own log folder: it would rewrite the earlier run's results
 * (summary.json, its checkpoints), e.g. a finetune of `logs/<task>/pruned.safetensors` under the same task name. A
 * continuation (`base.epoch` > 0) numbers its epochs on in the same folder, as the paper's main.py does.
 * @throws GdpError BAD_CONFIG naming the file and the folder; readInitialWeights' codes.
 */
export function checkInitialWeights(config: Config): void {
  const source = initialWeightsSource(config);
  if (!source) return;
  const { key, path } = source;
  const dir = runFolder(config);
  const rel = relative(resolve(dir), resolve(path));
  if (config.base.epoch === 0 && rel && !rel.startsWith('..') && !isAbsolute(rel)) {
    throw new GdpError(
      'BAD_CONFIG',
      `${key} '${path}' is inside this run's log folder ${dir}, whose results a new run rewrites: set base.task_name to another name`,
    );
  }
  const full = configModel(config.model, 0);
  try {
    readInitialWeights(config, path, full).loaded.model.dispose();
  } finally {
    full.model.dispose();
  }
}

/**
 * Throws unless a run with a prune stage has a channel group to prune, so that a model without one fails at start,
 * not after the train stage. Gate Decorator gates BatchNorm channels, so the model needs a BN after a convolution.
 * @throws GdpError NOTHING_TO_PRUNE naming the groups found and why each is not prunable.
 */
export function checkPrunable(config: Config): void {
  if (!config.stages.includes('prune')) return;
  const { model, inputShape } = configModel(config.model, 0);
  try {
    const s = channelStructure(model, inputShape);
    if (!prunableGroups(s).length) throw new GdpError('NOTHING_TO_PRUNE', `stages include 'prune', but ${whyNothingToPrune(s)}`);
  } finally {
    model.dispose();
  }
}

/**
 * Throws unless `data.batch_size` is at most the training set and `data.test_subset` at most the test set (a
 * larger one would silently mean fewer samples than asked).
 * @throws GdpError BAD_CONFIG naming the key and both sizes.
 */
export function checkDataSizes(config: Config, sizes: { train: number; test: number }): void {
  const { batch_size: batch, test_subset: subset } = config.data;
  if (batch > sizes.train) {
    throw new GdpError('BAD_CONFIG', `data.batch_size: ${batch} is larger than the training set (${sizes.train} samples)`);
  }
  if (subset !== undefined && subset > sizes.test) {
    throw new GdpError('BAD_CONFIG', `data.test_subset: ${subset} is larger than the test set (${sizes.test} samples)`);
  }
}

/**
 * The shard-size memory check of a start: against the workers' backend when known, else against wasm (the workers'
 * default), saying so through `note`; skipped, with a note saying why, without a worker count or a known memory limit.
 */
function checkShards(config: Config, o: StartCheckOptions): void {
  const say = o.note ?? (() => {});
  if (o.workers === undefined) {
    say('shard-size memory check skipped: without --workers the shard size is not known');
    return;
  }
  const backend = o.workerBackend ?? 'wasm';
  if (backendMemoryLimit(backend) === undefined) {
    say(`shard-size memory check skipped: gdp knows no memory limit for the ${backend} backend`);
    return;
  }
  checkBatchFits(config, o.workers, backend);
  const how = o.workerBackend ? 'the local workers' : "assumed: the workers' default; a worker on another backend checks its shards itself";
  say(`shard-size memory check: ${o.workers} worker(s) fit on the ${backend} backend (${how})`);
}

/**
 * Fixes the run's input normalisation, decided by `resolved`, and says it through `note`: a folder run without
 * `data.mean`/`data.std` gets the values computed from its training images written into `config` (so the workers,
 * cfg.json, the resume points and every checkpoint carry the same numbers, and no worker computes its own).
 */
function fixNormalisation(config: Config, resolved: ResolvedNormalisation, note: ((line: string) => void) | undefined): void {
  const { norm, source } = resolved;
  if (computesNormalisation(config)) {
    config.data.mean = [...norm.mean];
    config.data.std = [...norm.std];
  }
  note?.(`input normalisation (x / 255 - mean) / std, ${source}: ${describeNormalisation(norm)}`);
}

/**
 * Decides the run's input normalisation once, before any worker loads the data (resolveNormalisation, which reads
 * the data as loadRunData does), and fixes it into `config` (a computed one: `data.mean`/`data.std`), saying it
 * through `note`: gdp-coord's start decision (runStartChecks takes it from its own reading of the data), for a run
 * started without that start: an in-process run started from code (startInProcess).
 * @throws GdpError resolveNormalisation's errors.
 */
export async function decideNormalisation(config: Config, o: Pick<StartCheckOptions, 'dataDir' | 'note'>): Promise<void> {
  fixNormalisation(config, await resolveNormalisation(config, { dataDir: o.dataDir }), o.note);
}

/**
 * Every start-up check that needs no worker, in the order a start meets them: for a run that is not resumed, its
 * log folder (no earlier run's files there, unless `overwrite`; for a continuation, no interrupted run's resume point,
 * unless `discardResume`: checkRunFolder), the input normalisation, the data
 * (files, sizes, labels, each image's first bytes (Dataset.checkFiles), the batch and test subset against them), the
 * model against the data, a prunable group when a prune stage runs, the starting weights, the shard size against the
 * workers' backend memory. `--dry-run` runs exactly these, so that it says yes only to what starts. Needs an
 * initialised tensor backend. Fixes a folder run's computed normalisation into `config` (as `decideNormalisation`).
 * The data is read once (loadRunData): a folder is listed, and each image's first bytes read, once.
 * @returns the dataset (closed: the coordinator needs only its sizes and fingerprint).
 * @throws GdpError the codes of each check (checkRunFolder's BAD_CONFIG first).
 */
export async function runStartChecks(config: Config, o: StartCheckOptions): Promise<DatasetPair> {
  if (!o.resumed) checkRunFolder(config, { overwrite: o.overwrite, discardResume: o.discardResume, note: o.note });
  // The normalisation and the data from one reading: the normalisation is part of the data's fingerprint, which the
  // workers' copies must match; it is fixed and said as soon as decided (before the data is read when it is known).
  // The coordinator needs only the sizes (sample indices are all it hands out); workers load the data themselves.
  const { pair: full } = await loadRunData(config, { dataDir: o.dataDir, decided: (n) => fixNormalisation(config, n, o.note) });
  // loadRunData checked the training images; loadDataset shrinks the test set to data.test_subset: check against
  // the full size, then take the subset as it does.
  full.test.checkFiles?.();
  checkDataSizes(config, { train: full.train.size, test: full.test.size });
  const subset = config.data.test_subset;
  const data = subset !== undefined && subset < full.test.size ? { ...full, test: new SubsetDataset(full.test, subset) } : full;
  checkModelFitsData(config, data.train);
  checkPrunable(config);
  if (!o.resumed) checkInitialWeights(config);
  checkShards(config, o);
  return data;
}
