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

/**
 * The dashboard events of a run's logs, in the order the run produced them, stamped `t`: the epochs of log.json
 * and the Ticks and save points of prune_log.json (a Tock's Ticks are those logged before it). Entries that do not
 * parse (a file from another version) are left out.
 */
export function logEvents(records: readonly unknown[], prune: readonly unknown[], t: number): DashboardEvent[] {
  const epochs = records.flatMap((r) => {
    const p = epochRecordSchema.safeParse(r);
    return p.success ? [p.data] : [];
  });
  const log = prune.flatMap((e) => {
    const p = pruneEventSchema.safeParse(e);
    return p.success ? [p.data] : [];
  });
  const events: DashboardEvent[] = [];
  let next = 0;
  // Prune-log events up to the next Tock (excluded), or all when `all`.
  const drain = (all: boolean) => {
    for (; next < log.length; next++) {
      const e = log[next];
      if (e.type === 'tock' && !all) return;
      const ev = pruneRecordEvent(e, t);
      if (ev) events.push(ev);
    }
  };
  for (const r of epochs) {
    if (r.stage === 'tock') {
      drain(false);
      next++;
    }
    if (r.stage === 'finetune') drain(true);
    events.push(epochEvent(r, t));
  }
  drain(true);
  return events;
}
