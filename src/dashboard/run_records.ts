import { z } from 'zod';
import type { DashboardEvent } from './events.js';

// What the dashboard reads of a run's files (log.json, prune_log.json); other fields are allowed (the files grow over time).
export const epochRecordSchema = z.object({
  stage: z.enum(['train', 'tock', 'finetune']),
  epoch: z.number().int().positive(),
  lr: z.number(),
  train_loss: z.number(),
  train_acc: z.number(),
  test_loss: z.number(),
  'acc@1': z.number(),
  'acc@5': z.number(),
  img_s: z.number(),
});
export const pruneEventSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('tock'), epoch: z.number() }),
  z.object({ type: z.literal('finetune') }),
  z.object({
    type: z.literal('tick'),
    tick: z.number(),
    flopsRatio: z.number(),
    paramsRatio: z.number(),
    filtersLeft: z.number(),
    acc1: z.number(),
    loss: z.number(),
  }),
  z.object({ type: z.literal('checkpoint'), tick: z.number(), savePoint: z.number(), path: z.string(), flopsRatio: z.number() }),
  z.object({ type: z.literal('melt') }),
]);

/** A line of log.json (the coordinator's EpochRecord, run_files.ts), the fields the dashboard reads. */
export type EpochRecordLike = z.infer<typeof epochRecordSchema>;

/** A prune_log.json entry (the coordinator's PruneEvent, pruner.ts), the fields the dashboard reads. */
export type PruneRecordLike = z.input<typeof pruneEventSchema>;

/** The dashboard event of a log.json record, stamped `t`. */
export function epochEvent(r: EpochRecordLike, t: number): DashboardEvent {
  const { train_loss: trainLoss, train_acc: trainAcc, test_loss: testLoss, 'acc@1': acc1, 'acc@5': acc5, img_s: imgS } = r;
  return { type: 'epoch', t, stage: r.stage, epoch: r.epoch, lr: r.lr, trainLoss, trainAcc, testLoss, acc1, acc5, imgS };
}

/** The dashboard event of a Tick or a save point of prune_log.json (its `flopsRatio` is the MACs ratio); undefined for the rest. */
export function pruneRecordEvent(e: PruneRecordLike, t: number): DashboardEvent | undefined {
  if (e.type === 'tick') {
    const { tick, flopsRatio: macsRatio, paramsRatio, acc1, loss, filtersLeft } = e;
    return { type: 'tick', t, tick, macsRatio, paramsRatio, acc1, loss, filtersLeft };
  }
  if (e.type === 'checkpoint') return { type: 'save_point', t, tick: e.tick, savePoint: e.savePoint, macsRatio: e.flopsRatio, path: e.path };
  return undefined;
}
