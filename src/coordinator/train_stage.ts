import { z } from 'zod';
import { stepStatsSchema } from '../shared/protocol/messages.js';
import { Rng, rngStateSchema } from '../shared/rng.js';
import { epochLr } from '../shared/train/schedule.js';
import { emptyStats } from '../shared/train/replica.js';
import { evaluatedTestSize, runEpochs, type EpochEnd, type EpochLoop } from './epoch_loop.js';
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

/** The baseline training stage: `train.max_epoch` epochs of SGD with the config's schedule. */
export async function trainStage(ctx: StageContext): Promise<void> {
  const { cluster, config, log } = ctx;
  const t = config.train;
  const batch = config.data.batch_size;
  const resume = ctx.resume as TrainPosition | undefined;
  // The Rng before the permutation of the epoch running (or next to run) is drawn, as positions record it.
  let rngBefore = resume?.rng ?? new Rng(config.base.seed).state();
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
        `(${Object.entries(e.workerImgS).map(([id, v]) => `${id} ${rate(v)}`).join(', ')})`,
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
  const at = resume ? { epoch: resume.epoch - 1, step: resume.step, stats: resume.stats } : { epoch: 0, step: 0, stats: emptyStats() };
  // Positions keep the training stage's own form: the epoch 1-based, the Rng beside it.
  await runEpochs(cluster, loop, at, (when, pos) => ctx.resumePoint?.(when, () => {
    const p = pos();
    return { epoch: p.epoch + 1, step: p.step, rng: rngBefore, stats: p.stats };
  }) ?? Promise.resolve());
}

/** Rates keep 3 significant digits: a cpu smoke run does well under 1 img/s. */
export function rate(x: number): string {
  return x >= 100 ? x.toFixed(0) : x.toPrecision(3);
}

function pct(x: number): string {
  return `${(100 * x).toFixed(2)}%`;
}

registerStage('train', trainStage, trainPositionSchema);
