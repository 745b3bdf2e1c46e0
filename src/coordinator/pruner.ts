import { join } from 'node:path';
import { z } from 'zod';
import type { Config } from '../shared/config/schema.js';
import { GdpError } from '../shared/errors.js';
import { modelCost, type ModelCost } from '../shared/graph/flops.js';
import type { ModelDescription } from '../shared/io/model_file.js';
import { effectiveCost } from '../shared/pruning/cost.js';
import { globalPrune, type GlobalPruneInfo, type GroupScores } from '../shared/pruning/decision.js';
import { batchNorms, groupMask } from '../shared/pruning/gates.js';
import { channelStructure, prunableGroups, type ChannelStructure } from '../shared/pruning/groups.js';
import { GateScoreAccumulator, gateImportance, l1Importance, randomImportance, type Criterion } from '../shared/pruning/importance.js';
import { planMelt, type MeltRecord } from '../shared/pruning/melt.js';
import { pruningUpdate, type PruningUpdate } from '../shared/pruning/updates.js';
import { stepStatsSchema } from '../shared/protocol/messages.js';
import { Rng } from '../shared/rng.js';
import type { SgdOptions } from '../shared/train/sgd.js';
import { addStats, emptyStats, type StepStats } from '../shared/train/replica.js';
import { modelDescription, writeCheckpoint } from './checkpoint.js';
import type { Cluster } from './cluster.js';
import { StepProgress } from './progress.js';
import { rngStateSchema } from './resume_point.js';
import { registerStage, type ResumeWhen, type StageContext } from './stages.js';

/** What the pruner drives: the coordinator's cluster (or anything with these operations, e.g. a test double). */
export type PruneCluster = Pick<Cluster, 'replica' | 'step' | 'evaluate' | 'syncBatchNormStats' | 'broadcastModelUpdate'>;

export type GbnConfig = NonNullable<Config['gbn']>;

export interface PruneRunOptions {
  gbn: GbnConfig;
  /** momentum, weight decay and nesterov of the `train` section (the paper's optimizer keeps them while pruning). */
  sgd: Omit<SgdOptions, 'lr'>;
  batchSize: number;
  trainSize: number;
  /** Test samples 0..testSize-1 are evaluated after every prune and epoch. */
  testSize: number;
  /** Input of one image, HWC. */
  inputShape: readonly [number, number, number];
  seed: number;
  /** logs/<task_name>: where save-point checkpoints go. */
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
}

export type PruneEvent =
  | {
      type: 'tock' | 'finetune';
      epoch: number;
      epochs: number;
      trainLoss: number;
      trainAcc: number;
      acc1: number;
      acc5: number;
      loss: number;
      /** The rate of the epoch's last step (the paper's "Final LR"). */
      lr: number;
      imgS: number;
      /** Images per second of each worker's own compute. */
      workerImgS: Record<string, number>;
    }
  | {
      type: 'tick';
      tick: number;
      flopsRatio: number;
      paramsRatio: number;
      filtersLeft: number;
      pruned: number;
      trainLoss: number;
      acc1: number;
      loss: number;
      info: GlobalPruneInfo;
    }
  | { type: 'checkpoint'; tick: number; savePoint: number; path: string; flopsRatio: number }
  | { type: 'melt'; macs: number; params: number; flopsRatio: number; paramsRatio: number };

export interface PruneResult {
  ticks: number;
  baseline: ModelCost;
  /** Cost of the melted network. */
  final: { macs: number; params: number };
  melt: MeltRecord;
  checkpoints: string[];
  stoppedBy: 'target_flops' | 'max_ticks' | 'save_points' | 'nothing_to_prune';
}

/**
 * The paper's triangular cycle (Tock and finetune), per iteration: `step` is 1-based over `total` iterations;
 * lr rises linearly from lr_min to lr_max at total/2 and falls back to lr_min at the last step.
 */
export function triangularLr(step: number, total: number, lrMin: number, lrMax: number): number {
  const half = total / 2;
  if (step < half) return (1 - step / half) * lrMin + (step / half) * lrMax;
  const s = step - half;
  return Math.max(0, (1 - s / half) * lrMax + (s / half) * lrMin);
}

/** A BatchSampler's position: the Rng before the current permutation was drawn, whether it was, and the cursor. */
export const samplerStateSchema = z.object({ rng: rngStateSchema, drawn: z.boolean(), cursor: z.number().int().nonnegative() });
export type SamplerState = z.infer<typeof samplerStateSchema>;

/** Global batches as index lists over a seeded permutation that is redrawn whenever it runs out. */
export class BatchSampler {
  private order = new Int32Array(0);
  private cursor = 0;
  private readonly rng: Rng;
  /** The Rng's state before `order` was drawn: a permutation is saved as the state that draws it. */
  private drawnFrom?: number[];
  constructor(
    readonly size: number,
    readonly batchSize: number,
    from: number | SamplerState,
  ) {
    if (size < 1 || batchSize < 1) throw new GdpError('BAD_CONFIG', `cannot sample batches of ${batchSize} from ${size} samples`);
    if (typeof from === 'number') this.rng = new Rng(from);
    else {
      this.rng = new Rng(from.rng);
      if (from.drawn) {
        this.draw();
        if (from.cursor > this.order.length) throw new GdpError('BAD_STATE', `sampler cursor ${from.cursor} is past its ${this.order.length} samples`);
        this.cursor = from.cursor;
      }
    }
  }
  private draw(): void {
    this.drawnFrom = this.rng.state();
    this.order = Int32Array.from({ length: this.size }, (_, i) => i);
    this.rng.shuffle(this.order);
    this.cursor = 0;
  }
  next(): Int32Array {
    if (this.cursor >= this.order.length) this.draw();
    const b = this.order.slice(this.cursor, this.cursor + this.batchSize);
    this.cursor += b.length;
    return b;
  }
  /** Starts a fresh permutation: the next `stepsPerEpoch` batches are one epoch. */
  restart(): void {
    this.cursor = this.order.length;
  }
  get stepsPerEpoch(): number {
    return Math.ceil(this.size / this.batchSize);
  }
  state(): SamplerState {
    return this.drawnFrom ? { rng: this.drawnFrom, drawn: true, cursor: this.cursor } : { rng: this.rng.state(), drawn: false, cursor: 0 };
  }
}

const mean = (s: StepStats) => (s.count ? s.lossSum / s.count : 0);

/** Top-1 accuracy (fraction) and mean loss on the test samples, with BN statistics averaged first. */
async function evaluate(cluster: PruneCluster, o: PruneRunOptions): Promise<{ acc1: number; acc5: number; loss: number }> {
  await cluster.syncBatchNormStats();
  const s = await cluster.evaluate(Int32Array.from({ length: o.testSize }, (_, i) => i));
  return { acc1: s.count ? s.correct1 / s.count : 0, acc5: s.count ? s.correct5 / s.count : 0, loss: mean(s) };
}

/** Where a Tock or the finetune stands: the epoch (0-based) and the steps done in it with their stats. */
export const cyclePositionSchema = z.object({ epoch: z.number().int().nonnegative(), step: z.number().int().nonnegative(), stats: stepStatsSchema });
export type CyclePosition = z.infer<typeof cyclePositionSchema>;
const cycleStart = (): CyclePosition => ({ epoch: 0, step: 0, stats: emptyStats() });

/** Reports a loop's position after a step or at a boundary (see StageContext.resumePoint). */
type Progress<P> = (when: ResumeWhen, at: () => P) => Promise<void>;

/**
 * `epochs` epochs over the training data with the triangular schedule (a Tock, or the finetune), from `at`. The
 * boundaries between its epochs are reported; the end is the caller's.
 */
async function cycle(
  cluster: PruneCluster,
  o: PruneRunOptions,
  sampler: BatchSampler,
  epochs: number,
  sgd: Omit<SgdOptions, 'lr'> & { gateL1?: number },
  type: 'tock' | 'finetune',
  at: CyclePosition,
  progress: Progress<CyclePosition>,
): Promise<void> {
  const perEpoch = Math.min(sampler.stepsPerEpoch, o.maxStepsPerEpoch ?? Infinity);
  const total = perEpoch * epochs;
  while (at.epoch < epochs) {
    const e = at.epoch;
    if (at.step === 0) sampler.restart();
    // Images per second count only the steps run by this process (a resumed epoch's first part ran elsewhere).
    let timed = 0;
    const started = Date.now();
    const work = new Map<string, { n: number; ms: number }>();
    const bar = o.progressLog && new StepProgress(`${type === 'tock' ? 'Tock' : 'Finetune'} epoch ${e + 1}/${epochs}`, perEpoch, o.progressLog);
    for (let i = at.step; i < perEpoch; i++) {
      const lr = triangularLr(e * perEpoch + i + 1, total, o.gbn.lr_min, o.gbn.lr_max);
      const r = await cluster.step(sampler.next(), 'all', { ...sgd, lr });
      at = { epoch: e, step: i + 1, stats: addStats(at.stats, r.stats) };
      timed += r.stats.count;
      bar?.update(i + 1, timed / (Math.max(Date.now() - started, 1) / 1000), r.stats.count ? r.stats.lossSum / r.stats.count : 0);
      for (const w of r.perWorker) {
        const t = work.get(w.id) ?? { n: 0, ms: 0 };
        work.set(w.id, { n: t.n + w.count, ms: t.ms + w.ms });
      }
      await progress('step', () => at);
    }
    bar?.stop();
    const seconds = Math.max(Date.now() - started, 1) / 1000;
    const stats = at.stats;
    const ev = await evaluate(cluster, o);
    const workerImgS = Object.fromEntries([...work].map(([id, t]) => [id, t.n / (Math.max(t.ms, 1) / 1000)]));
    o.log?.({
      type,
      // 1-based within its Tock or finetune, as the training stage counts epochs.
      epoch: e + 1,
      epochs,
      trainLoss: mean(stats),
      trainAcc: stats.count ? stats.correct1 / stats.count : 0,
      acc1: ev.acc1,
      acc5: ev.acc5,
      loss: ev.loss,
      // The rate of the epoch's last step.
      lr: triangularLr((e + 1) * perEpoch, total, o.gbn.lr_min, o.gbn.lr_max),
      imgS: timed / seconds,
      workerImgS,
    });
    at = { epoch: e + 1, step: 0, stats: emptyStats() };
    if (at.epoch < epochs) await progress('boundary', () => at);
  }
}

function minArea(s: ChannelStructure): number {
  const areas = s.groups.flatMap((g) => g.areas);
  return areas.length ? Math.min(...areas) : 1;
}

/** One Tick's importance per group, for the configured criterion. */
function scoresFor(criterion: Criterion, s: ChannelStructure, cluster: PruneCluster, acc: GateScoreAccumulator, rng: Rng): GroupScores[] {
  const model = cluster.replica.model;
  return prunableGroups(s).map((group) => {
    const scores =
      criterion === 'gate' ? gateImportance(group, acc.perBn()) : criterion === 'l1' ? l1Importance(group, model) : randomImportance(group, rng);
    return { group, scores, mask: groupMask(model, group) };
  });
}

/** Where a Tick's training stands: batches done, the gate scores and loss summed over them. */
const tickPositionSchema = z.object({
  batch: z.number().int().nonnegative(),
  scores: z.object({ steps: z.number().int().nonnegative(), scores: z.record(z.string(), z.array(z.number())) }),
  lossSum: z.number(),
  count: z.number().int().nonnegative(),
});
type TickPosition = z.infer<typeof tickPositionSchema>;

/** A Tick's training: `tick_batches` global batches on the gates alone at lr_min, accumulating gate scores. */
async function tickSteps(
  cluster: PruneCluster,
  o: PruneRunOptions,
  sampler: BatchSampler,
  at: TickPosition | undefined,
  progress: Progress<TickPosition>,
): Promise<{ acc: GateScoreAccumulator; trainLoss: number }> {
  const layout = cluster.replica.layout('gates');
  const acc = new GateScoreAccumulator(layout);
  let { batch, lossSum, count } = at ?? { batch: 0, lossSum: 0, count: 0 };
  if (at) acc.restore(at.scores);
  for (let b = batch; b < o.gbn.tick_batches; b++) {
    // The score uses the gate values the gradient was computed at, i.e. before this step's update.
    const gates = cluster.replica.readParams(layout);
    const r = await cluster.step(sampler.next(), 'gates', { ...o.sgd, lr: o.gbn.lr_min });
    if (r.layout.size !== layout.size) throw new GdpError('BAD_LAYOUT', `Tick step returned ${r.layout.size} gradients, the gates are ${layout.size}`);
    acc.add(gates, r.avgGrad);
    lossSum += r.stats.lossSum;
    count += r.stats.count;
    await progress('step', () => ({ batch: b + 1, scores: acc.state(), lossSum, count }));
  }
  return { acc, trainLoss: count ? lossSum / count : 0 };
}

export function savePointName(point: number): string {
  return `gbn_${Math.round(point * 100)}.safetensors`;
}

const stoppedBySchema = z.enum(['target_flops', 'max_ticks', 'save_points', 'nothing_to_prune']);

/** Where Tick-Tock stands (after gating): everything its loop needs to continue exactly. */
export const prunePositionSchema = z.object({
  /** The network's cost before gating, which every ratio divides by. */
  baseline: z.object({ macs: z.number(), params: z.number(), layers: z.array(z.object({ path: z.string(), kind: z.enum(['conv', 'linear']), macs: z.number() })) }),
  /** Ticks done (each ended by its pruning decision). */
  ticks: z.number().int().nonnegative(),
  /** What runs now: a Tock (from this epoch and step), a Tick (from this batch), or the melt that ends pruning. */
  phase: z.discriminatedUnion('kind', [
    z.object({ kind: z.literal('tock'), at: cyclePositionSchema }),
    z.object({ kind: z.literal('tick'), at: tickPositionSchema.optional() }),
    z.object({ kind: z.literal('melt'), stoppedBy: stoppedBySchema }),
  ]),
  sampler: samplerStateSchema,
  /** The `random` criterion's Rng. */
  rng: rngStateSchema,
  /** Save points not reached yet, largest first, and the checkpoints written. */
  pending: z.array(z.number()),
  checkpoints: z.array(z.string()),
});
export type PrunePosition = z.infer<typeof prunePositionSchema>;

/**
 * The Gate Decorator's Tick-Tock pruning, driven over the cluster: gate every BN, one Tock, then Ticks (convs
 * frozen: only gates train at lr_min for `tick_batches` global batches while scores accumulate, then a global
 * prune of p * the remaining filters) with a Tock every T Ticks, until `target_flops` (or `max_ticks`), saving a
 * checkpoint the first time the FLOPs ratio falls under each save point; finally the melt is broadcast. With
 * `resume`, continues from a position this run reported through `o.resumePoint`.
 */
export async function runPrune(cluster: PruneCluster, o: PruneRunOptions, resume?: PrunePosition): Promise<PruneResult> {
  const gbn = o.gbn;
  const model = cluster.replica.model;
  let p: PrunePosition;
  if (resume) p = structuredClone(resume);
  else {
    const baseline = modelCost(model, o.inputShape);
    const ungated = [...batchNorms(model)].filter(([, bn]) => !bn.gated).map(([path]) => path);
    if (ungated.length) {
      await cluster.broadcastModelUpdate(pruningUpdate({ kind: 'gate', layers: ungated }));
      // The paper builds a fresh optimizer once the BNs are gated.
      await cluster.broadcastModelUpdate({ kind: 'reset_momentum' });
    }
    p = {
      baseline,
      ticks: 0,
      phase: { kind: 'tock', at: cycleStart() },
      sampler: new BatchSampler(o.trainSize, o.batchSize, o.seed).state(),
      rng: new Rng(o.seed ^ 0x5eed).state(),
      pending: [...new Set(gbn.save_points)].sort((a, b) => b - a),
      checkpoints: [],
    };
  }
  const baseline = p.baseline;
  const s = channelStructure(model, o.inputShape);
  const groups = prunableGroups(s);
  if (!groups.length) throw new GdpError('NOTHING_TO_PRUNE', 'the model has no prunable channel group');
  const totalFilters = groups.reduce((a, g) => a + g.width * g.bns.length, 0);
  const area = minArea(s);
  const sampler = new BatchSampler(o.trainSize, o.batchSize, p.sampler);
  const rng = new Rng(p.rng);
  const tockSgd = { ...o.sgd, gateL1: gbn.sparse_lambda };
  const report = (when: ResumeWhen) => o.resumePoint?.(when, () => ({ ...structuredClone(p), sampler: sampler.state(), rng: rng.state() })) ?? Promise.resolve();

  while (p.phase.kind !== 'melt') {
    if (p.phase.kind === 'tock') {
      await cycle(cluster, o, sampler, gbn.tock_epoch, tockSgd, 'tock', p.phase.at, (when, at) => {
        p.phase = { kind: 'tock', at: at() };
        return report(when);
      });
      p.phase = { kind: 'tick' };
      await report('boundary');
      continue;
    }
    const { acc, trainLoss } = await tickSteps(cluster, o, sampler, p.phase.at, (when, at) => {
      p.phase = { kind: 'tick', at: at() };
      return report(when);
    });
    const tick = ++p.ticks;
    const entries = scoresFor(gbn.criterion, s, cluster, acc, rng);
    const { decision, info } = globalPrune(entries, {
      p: gbn.p,
      minimalRatio: gbn.minimal_ratio,
      flopsEta: gbn.flops_eta,
      minArea: area,
    });
    if (!Object.keys(decision.groups).length) {
      p.phase = { kind: 'melt', stoppedBy: 'nothing_to_prune' };
      break;
    }
    await cluster.broadcastModelUpdate(pruningUpdate(decision));
    const cost = effectiveCost(model, s);
    const flopsRatio = cost.macs / baseline.macs;
    const ev = await evaluate(cluster, o);
    o.log?.({
      type: 'tick',
      tick,
      flopsRatio,
      paramsRatio: cost.params / baseline.params,
      filtersLeft: info.left - info.toPrune,
      pruned: totalFilters - (info.left - info.toPrune),
      trainLoss,
      acc1: ev.acc1,
      loss: ev.loss,
      info,
    });
    while (p.pending.length && flopsRatio <= p.pending[0]) {
      const point = p.pending.shift()!;
      const extra = { stage: 'prune', tick: String(tick), save_point: String(point), flops_ratio: String(flopsRatio), macs: String(cost.macs), params: String(cost.params) };
      const path = await writeCheckpoint(cluster, model, join(o.checkpointDir, savePointName(point)), o.model, extra);
      p.checkpoints.push(path);
      o.log?.({ type: 'checkpoint', tick, savePoint: point, path, flopsRatio });
    }
    if (gbn.target_flops !== undefined && flopsRatio <= gbn.target_flops) p.phase = { kind: 'melt', stoppedBy: 'target_flops' };
    else if (gbn.target_flops === undefined && gbn.save_points.length && !p.pending.length) p.phase = { kind: 'melt', stoppedBy: 'save_points' };
    else if (tick >= gbn.max_ticks) p.phase = { kind: 'melt', stoppedBy: 'max_ticks' };
    else if (tick % gbn.T === 0) p.phase = { kind: 'tock', at: cycleStart() };
    else p.phase = { kind: 'tick' };
    await report('boundary');
  }

  const melt = planMelt(model, s);
  await cluster.broadcastModelUpdate(pruningUpdate(melt));
  await cluster.broadcastModelUpdate({ kind: 'reset_momentum' });
  const final = modelCost(model, o.inputShape);
  o.log?.({ type: 'melt', macs: final.macs, params: final.params, flopsRatio: final.macs / baseline.macs, paramsRatio: final.params / baseline.params });
  return { ticks: p.ticks, baseline, final: { macs: final.macs, params: final.params }, melt, checkpoints: p.checkpoints, stoppedBy: p.phase.stoppedBy };
}

/** Where the finetune stands. */
export const finetunePositionSchema = z.object({ sampler: samplerStateSchema, at: cyclePositionSchema });
export type FinetunePosition = z.infer<typeof finetunePositionSchema>;

/** Finetuning the melted network: `finetune_epoch` triangular epochs with `finetune_momentum` (a fresh optimizer). */
export async function runFinetune(cluster: PruneCluster, o: PruneRunOptions, resume?: FinetunePosition): Promise<void> {
  if (!resume) await cluster.broadcastModelUpdate({ kind: 'reset_momentum' });
  const sampler = new BatchSampler(o.trainSize, o.batchSize, resume?.sampler ?? o.seed + 1);
  const sgd = { ...o.sgd, momentum: o.gbn.finetune_momentum };
  await cycle(cluster, o, sampler, o.gbn.finetune_epoch, sgd, 'finetune', resume?.at ?? cycleStart(), (when, at) =>
    o.resumePoint?.(when, () => ({ sampler: sampler.state(), at: at() })) ?? Promise.resolve(),
  );
}

/** The coordinator's StageContext, needing only the pruner's part of the cluster. */
export type PruneStageContext = Omit<StageContext, 'cluster'> & { cluster: PruneCluster };

/** Runner options from the config: the gbn section, the train section's SGD settings, logs/<task_name>/. */
export function pruneRunOptions(
  ctx: Pick<PruneStageContext, 'cluster' | 'config' | 'trainSize' | 'testSize'> & Partial<Pick<PruneStageContext, 'files' | 'resumePoint' | 'log'>>,
  onEvent?: (e: PruneEvent) => void,
): PruneRunOptions {
  const { config } = ctx;
  if (!config.gbn) throw new GdpError('BAD_CONFIG', `config.stages runs pruning but the config has no 'gbn' section`);
  const t = config.train;
  return {
    gbn: config.gbn,
    sgd: { momentum: t.momentum, weightDecay: t.weight_decay, nesterov: t.nesterov },
    batchSize: config.data.batch_size,
    trainSize: ctx.trainSize,
    testSize: Math.min(config.data.test_subset ?? ctx.testSize, ctx.testSize),
    inputShape: ctx.cluster.replica.inputShape,
    seed: config.base.seed,
    checkpointDir: ctx.files?.dir ?? join(config.base.log_dir, config.base.task_name),
    maxStepsPerEpoch: t.max_steps_per_epoch,
    model: modelDescription(config),
    log: onEvent,
    resumePoint: ctx.resumePoint,
    progressLog: ctx.log,
  };
}

/**
 * Logs each event as a line and keeps them all in logs/<task_name>/<stage>_log.json (rewritten atomically); Tock
 * and finetune epochs also go to the run's log.json beside the training epochs.
 */
function eventSink(ctx: PruneStageContext, file: string): (e: PruneEvent) => void {
  return (e) => {
    ctx.log(formatPruneEvent(e));
    if (e.type === 'tock' || e.type === 'finetune') {
      ctx.files.appendEpoch({
        stage: e.type,
        epoch: e.epoch,
        lr: e.lr,
        train_loss: e.trainLoss,
        train_acc: e.trainAcc,
        test_loss: e.loss,
        'acc@1': e.acc1,
        'acc@5': e.acc5,
        img_s: e.imgS,
        worker_img_s: e.workerImgS,
      });
    }
    ctx.files.appendLog(file, e);
  };
}

function saveModel(ctx: PruneStageContext, o: PruneRunOptions, name: string, stage: string): Promise<string> {
  return writeCheckpoint(ctx.cluster, ctx.cluster.replica.model, join(o.checkpointDir, name), o.model, { stage });
}

/** The 'prune' stage: Tick-Tock until the target, then the melt; saves the melted network as pruned.safetensors. */
export async function pruneStage(ctx: PruneStageContext): Promise<PruneResult> {
  const o = pruneRunOptions(ctx);
  o.log = eventSink(ctx, 'prune_log.json');
  const r = await runPrune(ctx.cluster, o, ctx.resume as PrunePosition | undefined);
  ctx.log(`prune: stopped by ${r.stoppedBy} after ${r.ticks} Ticks; saved ${await saveModel(ctx, o, 'pruned.safetensors', 'prune')}`);
  return r;
}

/** The 'finetune' stage; saves finetuned.safetensors. */
export async function finetuneStage(ctx: PruneStageContext): Promise<void> {
  const o = pruneRunOptions(ctx);
  o.log = eventSink(ctx, 'finetune_log.json');
  await runFinetune(ctx.cluster, o, ctx.resume as FinetunePosition | undefined);
  ctx.log(`finetune: saved ${await saveModel(ctx, o, 'finetuned.safetensors', 'finetune')}`);
}

/** One human-readable line per event, in the paper's log style. */
export function formatPruneEvent(e: PruneEvent): string {
  const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
  switch (e.type) {
    case 'tick':
      return `Tick ${e.tick}: FLOPs ${pct(e.flopsRatio)}, params ${pct(e.paramsRatio)}, filters left ${e.filtersLeft}, train loss ${e.trainLoss.toFixed(4)}, acc after prune ${pct(e.acc1)}`;
    case 'tock':
    case 'finetune':
      return `${e.type === 'tock' ? 'Tock' : 'Finetune'} epoch ${e.epoch}/${e.epochs}: train loss ${e.trainLoss.toFixed(4)}, test loss ${e.loss.toFixed(4)}, acc ${pct(e.acc1)}, lr ${e.lr.toFixed(5)}`;
    case 'checkpoint':
      return `Saved ${e.path} (FLOPs ${pct(e.flopsRatio)} <= ${pct(e.savePoint)})`;
    case 'melt':
      return `Melted: ${e.macs} MACs (${pct(e.flopsRatio)}), ${e.params} params (${pct(e.paramsRatio)})`;
  }
}

registerStage(
  'prune',
  async (ctx) => {
    await pruneStage(ctx);
  },
  prunePositionSchema,
);
registerStage('finetune', finetuneStage, finetunePositionSchema);
