import type { Config } from '../shared/config/schema.js';
import { configNormalisation } from '../shared/data/index.js';
import { serializeModel, type ModelDescription } from '../shared/io/model_file.js';
import type { Module } from '../shared/nn/module.js';
import { writeFileAtomic } from './atomic_write.js';
import type { Cluster } from './cluster.js';

/**
 * The model-file fields of the run's network (arch, num_class, input size and the input normalisation), from its
 * config. A folder run's normalisation is in the config once `decideNormalisation` has run (gdp-coord's start, or
 * startInProcess for a run started from code).
 */
export function modelDescription(config: Config): ModelDescription {
  return { arch: config.model.name, numClasses: config.model.num_class, inputSize: config.model.input_size, norm: configNormalisation(config) };
}

/**
 * The run's one checkpoint writer (save points, pruned.safetensors, finetuned.safetensors, epoch checkpoints):
 * averages BN running statistics over the workers first (they differ per worker until then), then writes `model`
 * atomically as a gdp model file (`serializeModel`: arch, num_class and widths in its metadata, plus `extra`), so
 * that every checkpoint loads with `gdp-model` without its config. Returns `path`.
 */
export async function writeCheckpoint(
  cluster: Pick<Cluster, 'syncBatchNormStats'>,
  model: Module,
  path: string,
  desc: ModelDescription,
  extra: Record<string, string>,
): Promise<string> {
  await cluster.syncBatchNormStats();
  writeFileAtomic(path, serializeModel(model, desc, extra));
  return path;
}
