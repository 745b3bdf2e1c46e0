import { z } from 'zod';
import type { Config } from '../shared/config/schema.js';
import { stepStatsSchema } from '../shared/protocol/messages.js';
import { addStats, emptyStats, type StepStats } from '../shared/train/replica.js';
import type { Cluster, StepSgd } from './cluster.js';
import { placeDivergence } from './divergence.js';
import { StepProgress } from './progress.js';
import type { RunObserver } from './run_observer.js';
import type { ResumeWhen } from './stages.js';

/** What an epoch loop drives: the coordinator's cluster, or a test double with these operations. */
export type EpochCluster = Pick<Cluster, 'step' | 'evaluate' | 'syncBatchNormStats'>;

/** Where an epoch loop stands: the epoch (0-based), the steps done in it and their summed stats. */
export const epochPositionSchema = z.object({ epoch: z.number().int().nonnegative(), step: z.number().int().nonnegative(), stats: stepStatsSchema });
export type EpochPosition = z.infer<typeof epochPositionSchema>;

/** The position of a loop that has not started. */
export const epochStart = (): EpochPosition => ({ epoch: 0, step: 0, stats: emptyStats() });

/** Test-set top-1 and top-5 (fractions) and mean loss. */
export interface TestResult {
  acc1: number;
  acc5: number;
  loss: number;
}

/** How many test samples (0..n-1 of the `total`) the config evaluates on: the `data.test_subset` samples loadDataset chose (every class in proportion), or all. */
export function evaluatedTestSize(config: Config, total: number): number {
  return Math.min(config.data.test_subset ?? total, total);
}

/** Evaluates test samples 0..testSize-1 (sharded over the workers) after averaging BN statistics over them. */
export async function evaluateTest(cluster: Pick<Cluster, 'evaluate' | 'syncBatchNormStats'>, testSize: number): Promise<TestResult> {
  await cluster.syncBatchNormStats();
  const s = await cluster.evaluate(Int32Array.from({ length: testSize }, (_, i) => i));
  return { acc1: s.count ? s.correct1 / s.count : 0, acc5: s.count ? s.correct5 / s.count : 0, loss: meanLoss(s) };
}

/** Mean loss of summed stats (0 for no samples). */
export function meanLoss(s: StepStats): number {
  return s.count ? s.lossSum / s.count : 0;
}

/** What one epoch did, for the stage's records. */
export interface EpochEnd {
  /** 0-based. */
  epoch: number;
  /** The epoch's training sums (a resumed epoch's include the steps run before the interruption). */
  stats: StepStats;
  test: TestResult;
  /** The rate of the epoch's last step (the paper's "Final LR"). */
  lr: number;
  /** Images per second of the steps this process ran (a resumed epoch's first part ran elsewhere). */
  imgS: number;
  /** Images per second of each worker's own compute (from its answer times). */
  workerImgS: Record<string, number>;
}

/** One stage's epochs: how many, their steps, the sample order, the rate and what happens at the end of each. */
export interface EpochLoop {
  epochs: number;
  stepsPerEpoch: number;
  /** Test samples 0..testSize-1 are evaluated after every epoch. */
  testSize: number;
  /** SGD settings of every step but the rate. */
  sgd: Omit<StepSgd, 'lr'>;
  /** The rate of step `step` (0-based) of epoch `epoch` (0-based). */
  lr(epoch: number, step: number): number;
  /** Called when an epoch starts, or resumes at `step` > 0: prepares its sample order. */
  begin(epoch: number, step: number): void;
  /** The global batch (training sample indices) of step `step` of the current epoch. */
  batch(step: number): Int32Array;
  /** After the epoch's evaluation: the stage's records, log lines, checkpoints. */
  end(e: EpochEnd): Promise<void> | void;
  /** Per-step progress (a bar on a terminal, periodic lines otherwise) under this label; none without `progressLog`. */
  label(epoch: number): string;
  progressLog?: (line: string) => void;
  /** The stage these epochs belong to, as the observer names it. */
  stage: 'train' | 'tock' | 'finetune';
  /** Told of every step and the progress (the live dashboard). */
  observer?: Pick<RunObserver, 'step' | 'progress'>;
}

/**
 * Runs `loop` from `at` (the start, or a position it reported) to its last epoch: one epoch loop for the training
 * stage, Tocks and the finetune. `report` gets the position after every step and at the boundaries between epochs
 * (StageContext.resumePoint); the end of the last epoch is the caller's.
 */
export async function runEpochs(
  cluster: EpochCluster,
  loop: EpochLoop,
  at: EpochPosition,
  report: (when: ResumeWhen, at: () => EpochPosition) => Promise<void>,
): Promise<void> {
  const perEpoch = loop.stepsPerEpoch;
  while (at.epoch < loop.epochs) {
    const e = at.epoch;
    loop.begin(e, at.step);
    let timed = 0;
    const started = Date.now();
    const work = new Map<string, { n: number; ms: number }>();
    const bar = loop.progressLog && new StepProgress(loop.label(e), perEpoch, loop.progressLog);
    for (let i = at.step; i < perEpoch; i++) {
      const lr = loop.lr(e, i);
      const stepStarted = Date.now();
      const r = await cluster.step(loop.batch(i), 'all', { ...loop.sgd, lr }).catch((err: unknown) => {
        throw placeDivergence(err, loop.label(e), lr);
      });
      at = { epoch: e, step: i + 1, stats: addStats(at.stats, r.stats) };
      timed += r.stats.count;
      bar?.update(i + 1, timed / (Math.max(Date.now() - started, 1) / 1000), meanLoss(r.stats));
      loop.observer?.step(loop.stage, r, lr, Date.now() - stepStarted);
      loop.observer?.progress(loop.stage, loop.label(e), i + 1, perEpoch);
      for (const w of r.perWorker) {
        const t = work.get(w.id) ?? { n: 0, ms: 0 };
        work.set(w.id, { n: t.n + w.count, ms: t.ms + w.ms });
      }
      await report('step', () => at);
    }
    bar?.stop();
    const imgS = timed / (Math.max(Date.now() - started, 1) / 1000);
    const test = await evaluateTest(cluster, loop.testSize).catch((err: unknown) => {
      throw placeDivergence(err, loop.label(e));
    });
    const workerImgS = Object.fromEntries([...work].map(([id, t]) => [id, t.n / (Math.max(t.ms, 1) / 1000)]));
    await loop.end({ epoch: e, stats: at.stats, test, lr: loop.lr(e, perEpoch - 1), imgS, workerImgS });
    at = { epoch: e + 1, step: 0, stats: emptyStats() };
    if (at.epoch < loop.epochs) await report('boundary', () => at);
  }
}
