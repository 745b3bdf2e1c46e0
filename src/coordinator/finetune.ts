import { join } from 'node:path';
import { z } from 'zod';
import { BatchSampler, samplerStateSchema } from '../shared/train/batch_sampler.js';
import { writeCheckpoint } from './checkpoint.js';
import { epochPositionSchema, epochStart } from './epoch_loop.js';
import { eventSink } from './prune_events.js';
import { pruneRunOptions, type PruneCluster, type PruneRunOptions, type PruneStageContext } from './prune_options.js';
import { registerStage } from './stages.js';
import { triangularEpochs } from './triangular_epochs.js';

/** Where the finetune stands. */
export const finetunePositionSchema = z.object({ sampler: samplerStateSchema, at: epochPositionSchema });
export type FinetunePosition = z.infer<typeof finetunePositionSchema>;

/** Finetuning the melted network: `finetune_epoch` triangular epochs with `finetune_momentum` (a fresh optimizer). */
export async function runFinetune(cluster: PruneCluster, o: PruneRunOptions, resume?: FinetunePosition): Promise<void> {
  if (!resume) await cluster.broadcastModelUpdate({ kind: 'reset_momentum' });
  const sampler = new BatchSampler(o.trainSize, o.batchSize, resume?.sampler ?? o.seed + 1, o.shuffle);
  const sgd = { ...o.sgd, momentum: o.gbn.finetune_momentum };
  await triangularEpochs(
    cluster,
    o,
    sampler,
    o.gbn.finetune_epoch,
    sgd,
    'finetune',
    resume?.at ?? epochStart(),
    (when, at) => o.resumePoint?.(when, () => ({ sampler: sampler.state(), at: at() })) ?? Promise.resolve(),
  );
}

/** The 'finetune' stage; saves finetuned.safetensors. */
export async function finetuneStage(ctx: PruneStageContext): Promise<void> {
  const o = pruneRunOptions(ctx, eventSink(ctx, 'finetune_log.json'));
  await runFinetune(ctx.cluster, o, ctx.resume as FinetunePosition | undefined);
  const path = await writeCheckpoint(ctx.cluster, ctx.cluster.replica.model, join(o.checkpointDir, 'finetuned.safetensors'), o.model, { stage: 'finetune' });
  ctx.log(`finetune: saved ${path}`);
}

registerStage('finetune', finetuneStage, finetunePositionSchema);
