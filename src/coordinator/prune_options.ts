import { join } from 'node:path';
import { GdpError } from '../shared/errors.js';
import type { ModelDescription } from '../shared/io/model_file.js';
import type { SgdOptions } from '../shared/train/sgd.js';
import { modelDescription } from './checkpoint.js';
import type { Cluster } from './cluster.js';
import { evaluatedTestSize } from './epoch_loop.js';
import type { PruneEvent } from './prune_events.js';
import type { StageContext } from './stages.js';
import type { GbnConfig } from './tick_tock.js';

/** What the pruning engine drives: the coordinator's cluster (or anything with these operations, e.g. a test double). */
export type PruneCluster = Pick<Cluster, 'replica' | 'step' | 'evaluate' | 'syncBatchNormStats' | 'broadcastModelUpdate'>;

/** The coordinator's StageContext, needing only the pruning engine's part of the cluster. */
export type PruneStageContext = Omit<StageContext, 'cluster'> & { cluster: PruneCluster };

export interface PruneRunOptions {
  gbn: GbnConfig;
  /** momentum, weight decay and nesterov of the `train` section (the paper's optimizer keeps them while pruning). */
  sgd: Omit<SgdOptions, 'lr'>;
  batchSize: number;
  /** `data.shuffle`: Tock, Tick and finetune batches come from a fresh permutation per epoch, or in sample order. */
  shuffle: boolean;
  trainSize: number;
  /** Test samples 0..testSize-1 are evaluated after every prune and epoch. */
  testSize: number;
  /** Input of one image, HWC. */
  inputShape: readonly [number, number, number];
  seed: number;
  /** logs/<task_name>: where checkpoints go. */
  checkpointDir: string;
  /** Cut every epoch (Tock, finetune) after this many global batches (smoke runs). */
  maxStepsPerEpoch?: number;
  log?: (e: PruneEvent) => void;
  /** The model-file fields of every checkpoint (arch, num_class), which let gdp-model load it without the config. */
  model: ModelDescription;
  /** Receives the loop's position after every step and at every Tick/Tock boundary (StageContext.resumePoint). */
  resumePoint?: StageContext['resumePoint'];
  /** Where per-step progress of Tock and finetune epochs goes (a bar on a terminal, periodic lines otherwise). */
  progressLog?: (line: string) => void;
  /** Told of every step and the progress of Tocks, Ticks and the finetune (StageContext.observer). */
  observer?: StageContext['observer'];
}

/** Runner options from the config: the gbn section, the train section's SGD settings, logs/<task_name>/. Throws BAD_CONFIG without a gbn section. */
export function pruneRunOptions(
  ctx: Pick<PruneStageContext, 'cluster' | 'config' | 'trainSize' | 'testSize'> &
    Partial<Pick<PruneStageContext, 'files' | 'resumePoint' | 'log' | 'observer'>>,
  onEvent?: (e: PruneEvent) => void,
): PruneRunOptions {
  const { config } = ctx;
  if (!config.gbn) throw new GdpError('BAD_CONFIG', `config.stages runs pruning but the config has no 'gbn' section`);
  const t = config.train;
  return {
    gbn: config.gbn,
    sgd: { momentum: t.momentum, weightDecay: t.weight_decay, nesterov: t.nesterov },
    batchSize: config.data.batch_size,
    shuffle: config.data.shuffle,
    trainSize: ctx.trainSize,
    testSize: evaluatedTestSize(config, ctx.testSize),
    inputShape: ctx.cluster.replica.inputShape,
    seed: config.base.seed,
    checkpointDir: ctx.files?.dir ?? join(config.base.log_dir, config.base.task_name),
    maxStepsPerEpoch: t.max_steps_per_epoch,
    model: modelDescription(config),
    log: onEvent,
    resumePoint: ctx.resumePoint,
    progressLog: ctx.log,
    observer: ctx.observer,
  };
}
