import { z } from 'zod';
import { stepStatsSchema } from '../shared/protocol/messages.js';
import { Rng, rngStateSchema } from '../shared/rng.js';
import { epochLr } from '../shared/train/schedule.js';
import { emptyStats } from '../shared/train/replica.js';
import { evaluatedTestSize, runEpochs, type EpochEnd, type EpochLoop, type EpochPosition } from './epoch_loop.js';
import { initialWeightsPath } from './initial_weights.js';
import { registerStage, type StageContext } from './stages.js';
import type { EpochRecord } from './run_files.js';

/** The sample order of one epoch: a permutation drawn from the run's seeded Rng, or the identity. */
function epochOrder(size: number, rng: Rng, shuffle: boolean): Int32Array {
  const order = Int32Array.from({ length: size }, (_, i) => i);
  if (shuffle) rng.shuffle(order);
  return order;
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

/**
 * The Rng state from which epoch `epoch` + 1 (1-based) draws its permutation: the seed's, after the permutations of
 * epochs 1..epoch. A run continued from base.epoch E so draws the order the uninterrupted run drew for epoch E+1.
 */
function rngBeforeEpoch(seed: number, epoch: number, size: number, shuffle: boolean): number[] {
  const rng = new Rng(seed);
  for (let e = 0; e < epoch; e++) epochOrder(size, rng, shuffle);
  return rng.state();
}

/**
 * Where a fresh train stage starts: at epoch base.epoch + 1 (0 by default), as the paper's main.py runs epochs
 * base.epoch+1..max_epoch from base.checkpoint_path (the schema refuses base.epoch > 0 without starting weights).
 * Logs where it continues from, or that there is nothing to do.
 */
function freshStart(ctx: StageContext): { at: EpochPosition; rng: number[] } {
  const { config, log } = ctx;
  const first = config.base.epoch;
  const max = config.train.max_epoch;
  if (first > 0) {
    const from = `base.epoch ${first}, weights ${initialWeightsPath(config)}`;
    log(
      first >= max ? `train: nothing to do: epoch ${first} of ${max} already done (${from})` : `train: continuing from epoch ${first + 1} of ${max} (${from})`,
    );
  }
  return {
    at: { epoch: first, step: 0, stats: emptyStats() },
    rng: rngBeforeEpoch(config.base.seed, Math.min(first, max), ctx.trainSize, config.data.shuffle),
  };
}

/**
 * The baseline training stage: epochs base.epoch+1..`train.max_epoch` of SGD with the config's schedule (the rate of
 * each epoch by its number); a resumed stage continues from its position instead.
 */
export async function trainStage(ctx: StageContext): Promise<void> {
  const { cluster, config, log } = ctx;
  const t = config.train;
  const batch = config.data.batch_size;
  const resume = ctx.resume as TrainPosition | undefined;
  // A resumed run's position wins over base.epoch: its config still holds base.epoch, and the epochs done since.
  const start = resume ? { at: { epoch: resume.epoch - 1, step: resume.step, stats: resume.stats }, rng: resume.rng } : freshStart(ctx);
  // The Rng before the permutation of the epoch running (or next to run) is drawn, as positions record it.
  let rngBefore = start.rng;
  let rng = new Rng(rngBefore);
  let order: Int32Array = new Int32Array(0);

  const end = async (e: EpochEnd) => {
    const epoch = e.epoch + 1;
    const record: EpochRecord = {
      stage: 'train',
      epoch,
      lr: e.lr,
      train_loss: e.stats.lossSum / e.stats.count,
      train_acc: e.stats.correct1 / e.stats.count,
      test_loss: e.test.loss,
      'acc@1': e.test.acc1,
      'acc@5': e.test.acc5,
      img_s: e.imgS,
      worker_img_s: e.workerImgS,
    };
    ctx.files.appendEpoch(record);
    log(
      `train epoch ${epoch}/${t.max_epoch}  lr ${e.lr}  loss ${record.train_loss.toFixed(4)}  train top-1 ${pct(record.train_acc)} top-5 ${pct(e.stats.correct5 / e.stats.count)}  ` +
        `test loss ${e.test.loss.toFixed(4)}  top-1 ${pct(e.test.acc1)}  top-5 ${pct(e.test.acc5)}  ${rate(e.imgS)} img/s ` +
        `(${Object.entries(e.workerImgS)
          .map(([id, v]) => `${id} ${rate(v)}`)
          .join(', ')})`,
    );
    if (epoch % config.base.model_saving_interval === 0 || epoch === t.max_epoch) {
      const path = await ctx.files.saveCheckpoint(cluster, `train-epoch${epoch}`, { stage: 'train', epoch, rng: rng.state() });
      log(`checkpoint ${path}`);
    }
    // The next epoch's permutation is drawn from here.
    rngBefore = rng.state();
  };

  const loop: EpochLoop = {
    epochs: t.max_epoch,
    stepsPerEpoch: Math.min(Math.ceil(ctx.trainSize / batch), t.max_steps_per_epoch ?? Infinity),
    testSize: evaluatedTestSize(config, ctx.testSize),
    sgd: { momentum: t.momentum, weightDecay: t.weight_decay, nesterov: t.nesterov },
    lr: (epoch: number) => epochLr(t, epoch + 1),
    begin: () => {
      rng = new Rng(rngBefore);
      order = epochOrder(ctx.trainSize, rng, config.data.shuffle);
    },
    batch: (s: number) => order.subarray(s * batch, Math.min(order.length, (s + 1) * batch)),
    end,
    label: (epoch: number) => `train epoch ${epoch + 1}/${t.max_epoch}`,
    progressLog: log,
    stage: 'train',
    observer: ctx.observer,
  };
  // Positions keep the training stage's own form: the epoch 1-based, the Rng beside it.
  await runEpochs(
    cluster,
    loop,
    start.at,
    (when, pos) =>
      ctx.resumePoint?.(when, () => {
        const p = pos();
        return { epoch: p.epoch + 1, step: p.step, rng: rngBefore, stats: p.stats };
      }) ?? Promise.resolve(),
  );
}

/** Rates keep 3 significant digits: a cpu smoke run does well under 1 img/s. */
export function rate(x: number): string {
  return x >= 100 ? x.toFixed(0) : x.toPrecision(3);
}

function pct(x: number): string {
  return `${(100 * x).toFixed(2)}%`;
}

registerStage('train', trainStage, trainPositionSchema);
