import { join } from 'node:path';
import { GdpError } from '../shared/errors.js';
import { modelCost, type ModelCost } from '../shared/graph/flops.js';
import { effectiveCost } from '../shared/pruning/cost.js';
import { batchNorms } from '../shared/pruning/gates.js';
import { channelStructure, prunableGroups, whyNothingToPrune } from '../shared/pruning/groups.js';
import { planMelt, type MeltRecord } from '../shared/pruning/melt.js';
import { pruningUpdate } from '../shared/pruning/updates.js';
import { Rng } from '../shared/rng.js';
import { BatchSampler } from '../shared/train/batch_sampler.js';
import { writeCheckpoint } from './checkpoint.js';
import { epochStart, evaluateTest } from './epoch_loop.js';
import { eventSink } from './prune_events.js';
import { pruneRunOptions, type PruneCluster, type PruneRunOptions, type PruneStageContext } from './prune_options.js';
import { registerStage, type ResumeWhen } from './stages.js';
import { tickBatches, tickDecision, tickSteps } from './tick.js';
import { nextPhase, prunePositionSchema, reachedSavePoints, savePointName, type PrunePosition, type StoppedBy } from './tick_tock.js';
import { triangularEpochs } from './triangular_epochs.js';

export interface PruneResult {
  ticks: number;
  baseline: ModelCost;
  /** Cost of the melted network. */
  final: { macs: number; params: number };
  melt: MeltRecord;
  checkpoints: string[];
  stoppedBy: StoppedBy;
}

/** Gates every BN not gated yet (a replayable update) and starts Tick-Tock with a Tock; the paper's fresh optimizer follows the gating. */
async function startPrune(cluster: PruneCluster, o: PruneRunOptions): Promise<PrunePosition> {
  const model = cluster.replica.model;
  const baseline = modelCost(model, o.inputShape);
  const ungated = [...batchNorms(model)].filter(([, bn]) => !bn.gated).map(([path]) => path);
  if (ungated.length) {
    await cluster.broadcastModelUpdate(pruningUpdate({ kind: 'gate', layers: ungated }));
    await cluster.broadcastModelUpdate({ kind: 'reset_momentum' });
  }
  return {
    baseline,
    ticks: 0,
    phase: { kind: 'tock', at: epochStart() },
    sampler: new BatchSampler(o.trainSize, o.batchSize, o.seed, o.shuffle).state(),
    rng: new Rng(o.seed ^ 0x5eed).state(),
    pending: [...new Set(o.gbn.save_points)].sort((a, b) => b - a),
    checkpoints: [],
  };
}

/**
 * The Gate Decorator's Tick-Tock pruning, driven over the cluster: gate every BN, one Tock, then Ticks (convs
 * frozen: the gates, or all but the convs (`tick_trains`), train at lr_min for `tick_batches` global batches while
 * scores accumulate, then a global prune of p * the remaining filters, see tickDecision) with a Tock every T Ticks,
 * until `target_flops` (or `max_ticks`), saving a checkpoint the first time the FLOPs ratio falls under each save point; finally the melt is broadcast. With
 * `resume`, continues from a position this run reported through `o.resumePoint`. Throws NOTHING_TO_PRUNE for a
 * model without a prunable channel group.
 */
export async function runPrune(cluster: PruneCluster, o: PruneRunOptions, resume?: PrunePosition): Promise<PruneResult> {
  const gbn = o.gbn;
  const model = cluster.replica.model;
  const p = resume ? structuredClone(resume) : await startPrune(cluster, o);
  const baseline = p.baseline;
  const s = channelStructure(model, o.inputShape);
  const groups = prunableGroups(s);
  if (!groups.length) throw new GdpError('NOTHING_TO_PRUNE', whyNothingToPrune(s));
  const totalFilters = groups.reduce((a, g) => a + g.width * g.bns.length, 0);
  const sampler = new BatchSampler(o.trainSize, o.batchSize, p.sampler, o.shuffle);
  const rng = new Rng(p.rng);
  const report = (when: ResumeWhen) =>
    o.resumePoint?.(when, () => ({ ...structuredClone(p), sampler: sampler.state(), rng: rng.state() })) ?? Promise.resolve();

  while (p.phase.kind !== 'melt') {
    if (p.phase.kind === 'tock') {
      await triangularEpochs(cluster, o, sampler, gbn.tock_epoch, { ...o.sgd, gateL1: gbn.sparse_lambda }, 'tock', p.phase.at, (when, at) => {
        p.phase = { kind: 'tock', at: at() };
        return report(when);
      });
      p.phase = nextPhase({ kind: 'tock' }, gbn);
      await report('boundary');
      continue;
    }
    // A whole-pass Tick (tick_batches unset) starts a fresh permutation, so that it sees every sample once.
    if (gbn.tick_batches === undefined && !p.phase.at) sampler.restart();
    const watch = o.observer && { observer: o.observer, label: `Tick ${p.ticks + 1}` };
    const { acc, trainLoss } = await tickSteps(
      cluster,
      gbn,
      o.sgd,
      sampler,
      tickBatches(gbn, sampler, o.maxStepsPerEpoch),
      p.phase.at,
      (when, at) => {
        p.phase = { kind: 'tick', at: at() };
        return report(when);
      },
      watch,
    );
    const tick = ++p.ticks;
    const { decision, info } = tickDecision(cluster, gbn, s, acc, rng, p.previousLeft);
    p.previousLeft = info.left;
    if (!Object.keys(decision.groups).length) {
      // The melt follows at once, without a boundary.
      p.phase = nextPhase({ kind: 'tick', tick, pruned: false }, gbn);
      continue;
    }
    await cluster.broadcastModelUpdate(pruningUpdate(decision));
    const cost = effectiveCost(model, s);
    const flopsRatio = cost.macs / baseline.macs;
    const ev = await evaluateTest(cluster, o.testSize);
    const left = info.left - info.toPrune;
    o.log?.({
      type: 'tick',
      tick,
      flopsRatio,
      paramsRatio: cost.params / baseline.params,
      filtersLeft: left,
      pruned: totalFilters - left,
      trainLoss,
      acc1: ev.acc1,
      loss: ev.loss,
      info,
    });
    for (const point of reachedSavePoints(p.pending, flopsRatio)) {
      p.pending.shift();
      const extra = {
        stage: 'prune',
        tick: String(tick),
        save_point: String(point),
        flops_ratio: String(flopsRatio),
        macs: String(cost.macs),
        params: String(cost.params),
      };
      const path = await writeCheckpoint(cluster, model, join(o.checkpointDir, savePointName(point)), o.model, extra);
      p.checkpoints.push(path);
      o.log?.({ type: 'checkpoint', tick, savePoint: point, path, flopsRatio });
    }
    p.phase = nextPhase({ kind: 'tick', tick, pruned: true, flopsRatio, pending: p.pending }, gbn);
    await report('boundary');
  }

  const melt = planMelt(model, s);
  await cluster.broadcastModelUpdate(pruningUpdate(melt));
  await cluster.broadcastModelUpdate({ kind: 'reset_momentum' });
  const final = modelCost(model, o.inputShape);
  o.log?.({ type: 'melt', macs: final.macs, params: final.params, flopsRatio: final.macs / baseline.macs, paramsRatio: final.params / baseline.params });
  return { ticks: p.ticks, baseline, final: { macs: final.macs, params: final.params }, melt, checkpoints: p.checkpoints, stoppedBy: p.phase.stoppedBy };
}

/** The 'prune' stage: Tick-Tock until the target, then the melt; saves the melted network as pruned.safetensors. */
export async function pruneStage(ctx: PruneStageContext): Promise<PruneResult> {
  const o = pruneRunOptions(ctx, eventSink(ctx, 'prune_log.json'));
  const r = await runPrune(ctx.cluster, o, ctx.resume as PrunePosition | undefined);
  const path = await writeCheckpoint(ctx.cluster, ctx.cluster.replica.model, join(o.checkpointDir, 'pruned.safetensors'), o.model, { stage: 'prune' });
  ctx.log(`prune: stopped by ${r.stoppedBy} after ${r.ticks} Ticks; saved ${path}`);
  return r;
}

registerStage(
  'prune',
  async (ctx) => {
    await pruneStage(ctx);
  },
  prunePositionSchema,
);
