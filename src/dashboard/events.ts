import { z } from 'zod';

/**
 * What the coordinator tells the dashboard, one discriminated union on `type`. Times are milliseconds since the Unix
 * epoch (`Date.now()`); accuracies are fractions in [0, 1] (as log.json holds them) except in the `final` table,
 * which keeps summary.json's percentages; ratios are fractions of the baseline. Every event is validated by
 * `dashboardEventSchema` before it reaches the history, so a wrong field fails loudly at the call site.
 */
const num = z.number().finite();
const count = z.number().int().nonnegative();
const fraction = num.min(0).max(1);

/** A worker joined the group (cluster.ts: "worker X joined (host pid, backend, GPU k)"). */
export const workerJoinedSchema = z.object({
  type: z.literal('worker_joined'),
  t: num,
  id: z.string().min(1),
  host: z.string(),
  backend: z.string(),
  gpu: z.number().int().nonnegative().nullable(),
  /** The global step it takes shards from. */
  step: count,
});

/** A worker was dropped (cluster.ts: "worker X lost at step K (reason)"). */
export const workerLostSchema = z.object({ type: z.literal('worker_lost'), t: num, id: z.string().min(1), step: count, reason: z.string() });

/**
 * A worker's throughput over recent steps: its own compute rate (images per second of its answer times), the share
 * of the step's wall time it spent computing (the rest is the exchange and waiting), and when it was last heard.
 */
export const workerStatsSchema = z.object({
  type: z.literal('worker_stats'),
  t: num,
  id: z.string().min(1),
  imgS: num.nonnegative(),
  computeShare: fraction,
  lastHeard: num,
});

/** Stage names as the progress line shows them; `tick` counts Ticks within the prune stage. */
export const stageNames = ['train', 'tock', 'tick', 'melt', 'finetune', 'evaluate'] as const;

/** Progress inside a stage (progress.ts StepProgress.update, and the Tick loop): `done` of `total` steps. */
export const stageProgressSchema = z.object({
  type: z.literal('stage'),
  t: num,
  stage: z.enum(stageNames),
  /** e.g. "train epoch 2/4", "Tock epoch 1/1", "Tick 3". */
  label: z.string(),
  done: count,
  total: count,
});

/** One optimiser step (cluster.step's answer): the group's mean loss and top-1 on that batch, and the rate used. */
export const stepMetricsSchema = z.object({
  type: z.literal('step'),
  t: num,
  /** Global step count (cluster.steps after the step). */
  step: count,
  stage: z.enum(stageNames),
  loss: num,
  acc1: fraction,
  lr: num.nonnegative(),
  /** Images per second of the group over this step. */
  imgS: num.nonnegative(),
});

/** One epoch's record, the fields of a log.json line (run_files.ts EpochRecord). */
export const epochMetricsSchema = z.object({
  type: z.literal('epoch'),
  t: num,
  stage: z.enum(['train', 'tock', 'finetune']),
  epoch: z.number().int().positive(),
  lr: num.nonnegative(),
  trainLoss: num,
  trainAcc: fraction,
  testLoss: num,
  acc1: fraction,
  acc5: fraction,
  imgS: num.nonnegative(),
});

/** A Tick (pruner.ts PruneEvent 'tick'): the network's cost after it, and test top-1 right after pruning. */
export const tickPointSchema = z.object({
  type: z.literal('tick'),
  t: num,
  tick: z.number().int().positive(),
  macsRatio: num.nonnegative(),
  paramsRatio: num.nonnegative(),
  acc1: fraction,
  loss: num,
  filtersLeft: count,
});

/** A save point written (pruner.ts PruneEvent 'checkpoint'). */
export const savePointSchema = z.object({
  type: z.literal('save_point'),
  t: num,
  tick: z.number().int().positive(),
  savePoint: fraction,
  macsRatio: num,
  path: z.string(),
});

/**
 * Output channels per conv/linear layer, in the model's module order: the baseline's beside the current ones
 * (alive channels when `form` is 'masked', the layer's width once melted).
 */
export const widthsSchema = z.object({
  type: z.literal('widths'),
  t: num,
  form: z.enum(['baseline', 'masked', 'melted']),
  layers: z.array(z.object({ path: z.string(), baseline: count, current: count })).max(10000),
});

/** The run's final table (run_summary.ts ModelSnapshot rows, summary.json): accuracies in percent. */
export const finalRowSchema = z.object({
  label: z.string(),
  macs: num.nonnegative(),
  params: num.nonnegative(),
  acc1: num.min(0).max(100),
  acc5: num.min(0).max(100),
  msPerImageB1: num.nonnegative(),
  msPerImageB64: num.nonnegative(),
});
export const finalTableSchema = z.object({ type: z.literal('final'), t: num, rows: z.array(finalRowSchema).min(1).max(16) });

/**
 * The run's name and its stages, once at the start; `resumedStep`: the global step a resumed run continues from
 * (its per-step history starts there).
 */
export const runStartedSchema = z.object({
  type: z.literal('run'),
  t: num,
  task: z.string(),
  stages: z.array(z.string()),
  workers: count,
  resumedStep: count.optional(),
});

export const dashboardEventSchema = z.discriminatedUnion('type', [
  runStartedSchema,
  workerJoinedSchema,
  workerLostSchema,
  workerStatsSchema,
  stageProgressSchema,
  stepMetricsSchema,
  epochMetricsSchema,
  tickPointSchema,
  savePointSchema,
  widthsSchema,
  finalTableSchema,
]);
export type DashboardEvent = z.infer<typeof dashboardEventSchema>;
export type FinalRow = z.infer<typeof finalRowSchema>;
export type StageName = (typeof stageNames)[number];
