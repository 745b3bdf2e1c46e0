import { z } from 'zod';

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
