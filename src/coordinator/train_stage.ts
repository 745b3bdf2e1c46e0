import { z } from 'zod';
import { stepStatsSchema } from '../shared/protocol/messages.js';
import { Rng } from '../shared/rng.js';
import { epochLr } from '../shared/train/schedule.js';
import { addStats, emptyStats } from '../shared/train/replica.js';
import type { Cluster } from './cluster.js';
import { StepProgress } from './progress.js';
import { registerStage, type StageContext } from './stages.js';
import { rngStateSchema } from './resume_point.js';
import type { EpochRecord } from './run_files.js';

/** Test-set indices the config evaluates on (the first `data.test_subset` samples, or all). */
export function testIndices(ctx: Pick<StageContext, 'config' | 'testSize'>): Int32Array {
  const n = Math.min(ctx.config.data.test_subset ?? ctx.testSize, ctx.testSize);
  return Int32Array.from({ length: n }, (_, i) => i);
}

/** The sample order of one epoch: a permutation drawn from the run's seeded Rng, or the identity. */
export function epochOrder(size: number, rng: Rng, shuffle: boolean): Int32Array {
  const order = Int32Array.from({ length: size }, (_, i) => i);
  if (shuffle) rng.shuffle(order);
  return order;
}

/** Evaluates on the test set after averaging BN statistics over the workers. */
export async function evaluateTest(cluster: Cluster, ctx: Pick<StageContext, 'config' | 'testSize'>) {
  await cluster.syncBatchNormStats();
  const s = await cluster.evaluate(testIndices(ctx));
  return { loss: s.lossSum / s.count, acc1: s.correct1 / s.count, acc5: s.correct5 / s.count };
}

/** Where the training stage stands: the epoch (1-based), steps done in it with their stats, the Rng at its start. */
export const trainPositionSchema = z.object({
  epoch: z.number().int().positive(),
  step: z.number().int().nonnegative(),
  /** The run's Rng before this epoch's permutation was drawn: drawing again gives the same order. */
  rng: rngStateSchema,
  stats: stepStatsSchema,
});
export type TrainPosition = z.infer<typeof trainPositionSchema>;

/** The baseline training stage: `train.max_epoch` epochs of SGD with the config's schedule. */
export async function trainStage(ctx: StageContext): Promise<void> {
  const { cluster, config, log } = ctx;
  const t = config.train;
  const batch = config.data.batch_size;
  let at: TrainPosition = (ctx.resume as TrainPosition | undefined) ?? { epoch: 1, step: 0, rng: new Rng(config.base.seed).state(), stats: emptyStats() };
  while (at.epoch <= t.max_epoch) {
    const epoch = at.epoch;
    const lr = epochLr(t, epoch);
    const rng = new Rng(at.rng);
    const order = epochOrder(ctx.trainSize, rng, config.data.shuffle);
    const steps = Math.min(Math.ceil(order.length / batch), t.max_steps_per_epoch ?? Infinity);
    const progress = new StepProgress(`train epoch ${epoch}/${t.max_epoch}`, steps, log);
    // Images per second count only the steps run by this process (a resumed epoch's first part ran elsewhere).
    let timed = 0;
    const workerCount = new Map<string, number>();
    const workerMs = new Map<string, number>();
    const started = Date.now();
    for (let s = at.step; s < steps; s++) {
      const indices = order.subarray(s * batch, Math.min(order.length, (s + 1) * batch));
      const r = await cluster.step(indices, 'all', { lr, momentum: t.momentum, weightDecay: t.weight_decay, nesterov: t.nesterov });
      at = { ...at, step: s + 1, stats: addStats(at.stats, r.stats) };
      timed += r.stats.count;
      for (const w of r.perWorker) {
        workerCount.set(w.id, (workerCount.get(w.id) ?? 0) + w.count);
        workerMs.set(w.id, (workerMs.get(w.id) ?? 0) + w.ms);
      }
      progress.update(s + 1, timed / ((Date.now() - started) / 1000), r.stats.lossSum / r.stats.count);
      await ctx.resumePoint?.('step', () => at);
    }
    progress.stop();
    const stats = at.stats;
    const imgS = timed / (Math.max(Date.now() - started, 1) / 1000);
    const test = await evaluateTest(cluster, ctx);
    const perWorker: Record<string, number> = {};
    for (const [id, n] of workerCount) perWorker[id] = n / ((workerMs.get(id) ?? 1) / 1000);
    const record: EpochRecord = {
      stage: 'train',
      epoch,
      lr,
      train_loss: stats.lossSum / stats.count,
      train_acc: stats.correct1 / stats.count,
      test_loss: test.loss,
      'acc@1': test.acc1,
      'acc@5': test.acc5,
      img_s: imgS,
      worker_img_s: perWorker,
    };
    ctx.files.appendEpoch(record);
    log(
      `train epoch ${epoch}/${t.max_epoch}  lr ${lr}  loss ${record.train_loss.toFixed(4)}  train top-1 ${pct(record.train_acc)} top-5 ${pct(stats.correct5 / stats.count)}  ` +
        `test loss ${test.loss.toFixed(4)}  top-1 ${pct(test.acc1)}  top-5 ${pct(test.acc5)}  ${rate(imgS)} img/s ` +
        `(${Object.entries(perWorker).map(([id, v]) => `${id} ${rate(v)}`).join(', ')})`,
    );
    if (epoch % config.base.model_saving_interval === 0 || epoch === t.max_epoch) {
      const path = await ctx.files.saveCheckpoint(cluster, `train-epoch${epoch}`, { stage: 'train', epoch, rng: rng.state() });
      log(`checkpoint ${path}`);
    }
    at = { epoch: epoch + 1, step: 0, rng: rng.state(), stats: emptyStats() };
    // After the last epoch the stage boundary follows, which the run writes itself.
    if (at.epoch <= t.max_epoch) await ctx.resumePoint?.('boundary', () => at);
  }
}

/** Rates keep 3 significant digits: a cpu smoke run does well under 1 img/s. */
export function rate(x: number): string {
  return x >= 100 ? x.toFixed(0) : x.toPrecision(3);
}

function pct(x: number): string {
  return `${(100 * x).toFixed(2)}%`;
}

registerStage('train', trainStage, trainPositionSchema);
