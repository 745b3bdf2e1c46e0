import { GdpError } from '../shared/errors.js';
import { globalPrune, type GlobalPruneInfo, type GroupScores, type MaskDecision } from '../shared/pruning/decision.js';
import { groupMask } from '../shared/pruning/gates.js';
import { prunableGroups, type ChannelStructure } from '../shared/pruning/groups.js';
import { GateScoreAccumulator, gateImportance, l1Importance, randomImportance } from '../shared/pruning/importance.js';
import type { Rng } from '../shared/rng.js';
import type { BatchSampler } from '../shared/train/batch_sampler.js';
import { selectLayout } from '../shared/train/model_state.js';
import type { SgdOptions } from '../shared/train/sgd.js';
import type { Cluster } from './cluster.js';
import { placeDivergence } from './divergence.js';
import type { RunObserver } from './run_observer.js';
import type { ResumeWhen } from './stages.js';
import type { GbnConfig, TickPosition } from './tick_tock.js';

/** What a Tick drives: the cluster's steps on the gates and its replica (gate values, masks, weights). */
export type TickCluster = Pick<Cluster, 'replica' | 'step'>;

/**
 * A Tick's training: `batches` global batches at lr_min on the parameters `gbn.tick_trains` names (the gates alone,
 * or all but the convolutions as the paper's code; with `gbn.tick_decay_frozen` the others that have momentum
 * still take weight decay and momentum), from `at` (a position it reported) or its start (see tickBatches),
 * accumulating |g * dL/dg| per channel (the paper's gate importance). `report` gets the position after every step;
 * `watch` (the live dashboard) every step and the progress, under `label`. Returns the scores and the mean training
 * loss. Throws BAD_LAYOUT when a step returns another layout than it trains.
 */
export async function tickSteps(
  cluster: TickCluster,
  gbn: GbnConfig,
  sgd: Omit<SgdOptions, 'lr'>,
  sampler: BatchSampler,
  batches: number,
  at: TickPosition | undefined,
  report: (when: ResumeWhen, at: () => TickPosition) => Promise<void>,
  watch?: { observer: Pick<RunObserver, 'step' | 'progress'>; label: string },
): Promise<{ acc: GateScoreAccumulator; trainLoss: number }> {
  const layout = cluster.replica.layout('gates');
  const trained = cluster.replica.layout(gbn.tick_trains);
  const stepSgd = { ...sgd, lr: gbn.lr_min, ...(gbn.tick_decay_frozen ? { decayFrozen: true } : {}) };
  const acc = new GateScoreAccumulator(layout);
  let { batch, lossSum, count } = at ?? { batch: 0, lossSum: 0, count: 0 };
  if (at) acc.restore(at.scores);
  for (let b = batch; b < batches; b++) {
    // The score uses the gate values the gradient was computed at, i.e. before this step's update.
    const gates = cluster.replica.readParams(layout);
    const started = Date.now();
    const r = await cluster.step(sampler.next(), gbn.tick_trains, stepSgd).catch((err: unknown) => {
      throw placeDivergence(err, `Tick batch ${b + 1}/${batches}`, gbn.lr_min);
    });
    if (r.layout.size !== trained.size) throw new GdpError('BAD_LAYOUT', `Tick step returned ${r.layout.size} gradients, it trains ${trained.size}`);
    watch?.observer.step('tick', r, gbn.lr_min, Date.now() - started);
    watch?.observer.progress('tick', watch.label, b + 1, batches);
    acc.add(gates, trained.size === layout.size ? r.avgGrad : selectLayout(r.layout, r.avgGrad, layout));
    lossSum += r.stats.lossSum;
    count += r.stats.count;
    await report('step', () => ({ batch: b + 1, scores: acc.state(), lossSum, count }));
  }
  return { acc, trainLoss: count ? lossSum / count : 0 };
}

/**
 * Global batches in one Tick: `gbn.tick_batches`, or when unset one pass over the training set as the paper's code
 * makes it (`ceil(trainSize / batchSize)`, at most `maxStepsPerEpoch`).
 */
export function tickBatches(gbn: GbnConfig, sampler: BatchSampler, maxStepsPerEpoch?: number): number {
  return gbn.tick_batches ?? Math.min(sampler.stepsPerEpoch, maxStepsPerEpoch ?? Infinity);
}

/** The smallest BN feature-map area (H*W) of the network, which flops_eta is divided by (1 without BNs). */
export function minArea(s: ChannelStructure): number {
  const areas = s.groups.flatMap((g) => g.areas);
  return areas.length ? Math.min(...areas) : 1;
}

/**
 * The Tick's decision: one importance per channel of every prunable group for the configured criterion (`gate`:
 * the accumulated scores; `l1`: filter weight norms; `random`: from `rng`), then one global threshold pruning
 * `gbn.p` of the alive filters (`globalPrune`, the paper's `get_threshold`/`set_mask`), every group keeping its
 * minimum (`gbn.minimal_ratio`, `minimal_rounding`, `min_filters`). `previousLeft` is the alive count before the
 * previous Tick's prune, which `gbn.prune_count: lagged` counts from (unset on the first Tick: the filters alive now).
 */
export function tickDecision(
  cluster: Pick<Cluster, 'replica'>,
  gbn: GbnConfig,
  s: ChannelStructure,
  acc: GateScoreAccumulator,
  rng: Rng,
  previousLeft?: number,
): { decision: MaskDecision; info: GlobalPruneInfo } {
  const model = cluster.replica.model;
  const entries: GroupScores[] = prunableGroups(s).map((group) => {
    const scores =
      gbn.criterion === 'gate' ? gateImportance(group, acc.perBn()) : gbn.criterion === 'l1' ? l1Importance(group, model) : randomImportance(group, rng);
    return { group, scores, mask: groupMask(model, group) };
  });
  return globalPrune(entries, {
    p: gbn.p,
    minimalRatio: gbn.minimal_ratio,
    minFilters: gbn.min_filters,
    minimalRounding: gbn.minimal_rounding,
    countFrom: gbn.prune_count === 'lagged' ? previousLeft : undefined,
    flopsEta: gbn.flops_eta,
    minArea: minArea(s),
    roundTo: gbn.round_to,
  });
}
