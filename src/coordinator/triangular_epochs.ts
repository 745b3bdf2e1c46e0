import type { BatchSampler } from '../shared/train/batch_sampler.js';
import { triangularLr } from '../shared/train/schedule.js';
import type { StepSgd } from './cluster.js';
import { meanLoss, runEpochs, type EpochCluster, type EpochEnd, type EpochLoop, type EpochPosition } from './epoch_loop.js';
import type { PruneRunOptions } from './prune_options.js';
import type { ResumeWhen } from './stages.js';

/**
 * `epochs` epochs of a Tock or of the finetune from `at`: the epoch loop over `sampler` (a fresh permutation per
 * epoch) with the paper's triangular rate, lr_min -> lr_max -> lr_min over all their steps, and one `type` event per
 * epoch. The boundaries between its epochs are reported; the end is the caller's.
 */
export async function triangularEpochs(
  cluster: EpochCluster,
  o: PruneRunOptions,
  sampler: BatchSampler,
  epochs: number,
  sgd: Omit<StepSgd, 'lr'>,
  type: 'tock' | 'finetune',
  at: EpochPosition,
  report: (when: ResumeWhen, at: () => EpochPosition) => Promise<void>,
): Promise<void> {
  const perEpoch = Math.min(sampler.stepsPerEpoch, o.maxStepsPerEpoch ?? Infinity);
  const total = perEpoch * epochs;
  const loop: EpochLoop = {
    epochs,
    stepsPerEpoch: perEpoch,
    testSize: o.testSize,
    sgd,
    lr: (e: number, i: number) => triangularLr(e * perEpoch + i + 1, total, o.gbn.lr_min, o.gbn.lr_max),
    begin: (_e: number, step: number) => {
      if (step === 0) sampler.restart();
    },
    batch: () => sampler.next(),
    end: ({ epoch, stats, test, lr, imgS, workerImgS }: EpochEnd) =>
      o.log?.({
        type,
        // 1-based within its Tock or finetune, as the training stage counts epochs.
        epoch: epoch + 1,
        epochs,
        trainLoss: meanLoss(stats),
        trainAcc: stats.count ? stats.correct1 / stats.count : 0,
        acc1: test.acc1,
        acc5: test.acc5,
        loss: test.loss,
        lr,
        imgS,
        workerImgS,
      }),
    label: (e: number) => `${type === 'tock' ? 'Tock' : 'Finetune'} epoch ${e + 1}/${epochs}`,
    progressLog: o.progressLog,
    stage: type,
    observer: o.observer,
  };
  await runEpochs(cluster, loop, at, report);
}
