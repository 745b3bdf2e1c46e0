import type { Config } from '../shared/config/schema.js';
import { loadDataset } from '../shared/data/index.js';
import type { DatasetPair } from '../shared/data/dataset.js';
import { layerWidths } from '../shared/io/model_file.js';
import { checkModelFitsData, configModel } from '../shared/models/registry.js';
import { checkShardFits } from '../shared/train/memory.js';
import { initialWeightsPath, readInitialWeights } from './initial_weights.js';

export interface StartCheckOptions {
  /** `--data-dir`, over the config's data.dir. */
  dataDir?: string;
  /** Workers the run waits for; without it (a dry run) the shard-size check is skipped. */
  workers?: number;
  /**
   * The workers' tensor backend ('wasm', 'cpu', 'tensorflow') when the coordinator knows it (`--local`,
   * `--in-process`: its own); workers that connect from elsewhere check their shards themselves.
   */
  workerBackend?: string;
  /** A resumed run takes its weights from the resume point, not model.weights. */
  resumed: boolean;
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

/** Throws unless the starting weights (model.weights or base.checkpoint_path) load into the config's model. */
export function checkInitialWeights(config: Config): void {
  const path = initialWeightsPath(config);
  if (!path) return;
  const { model } = configModel(config.model, 0);
  const want = layerWidths(model);
  model.dispose();
  readInitialWeights(config, path, want).model.dispose();
}

/**
 * Every start-up check that needs no worker, in the order a start meets them: the data (files, sizes, labels),
 * the model against the data, the starting weights, the shard size against the workers' backend memory. `--dry-run` runs
 * exactly these, so that it says yes only to what starts. Needs an initialised tensor backend.
 * @returns the dataset (closed: the coordinator needs only its sizes and fingerprint).
 */
export async function runStartChecks(config: Config, o: StartCheckOptions): Promise<DatasetPair> {
  // The coordinator needs only the sizes (sample indices are all it hands out); workers load the data themselves.
  const data = await loadDataset(config, { dataDir: o.dataDir, numWorkers: 0 });
  await data.close?.();
  checkModelFitsData(config, data.train);
  if (!o.resumed) checkInitialWeights(config);
  if (o.workers !== undefined && o.workerBackend !== undefined) checkBatchFits(config, o.workers, o.workerBackend);
  return data;
}
