import { z } from 'zod';
import type { Config } from '../shared/config/schema.js';
import { rngStateSchema } from '../shared/rng.js';
import { samplerStateSchema } from '../shared/train/batch_sampler.js';
import { epochPositionSchema, epochStart } from './epoch_loop.js';

export type GbnConfig = NonNullable<Config['gbn']>;

/** Where a Tick's training stands: batches done, the gate scores and loss summed over them. */
export const tickPositionSchema = z.object({
  batch: z.number().int().nonnegative(),
  scores: z.object({ steps: z.number().int().nonnegative(), scores: z.record(z.string(), z.array(z.number())) }),
  lossSum: z.number(),
  count: z.number().int().nonnegative(),
});
export type TickPosition = z.infer<typeof tickPositionSchema>;

const stoppedBySchema = z.enum(['target_flops', 'max_ticks', 'save_points', 'nothing_to_prune']);
export type StoppedBy = z.infer<typeof stoppedBySchema>;

/** What runs now: a Tock (from this epoch and step), a Tick (from this batch), or the melt that ends pruning. */
export const phaseSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('tock'), at: epochPositionSchema }),
  z.object({ kind: z.literal('tick'), at: tickPositionSchema.optional() }),
  z.object({ kind: z.literal('melt'), stoppedBy: stoppedBySchema }),
]);
export type Phase = z.infer<typeof phaseSchema>;

/** Where Tick-Tock stands (after gating): everything its loop needs to continue exactly. */
export const prunePositionSchema = z.object({
  /** The network's cost before gating, which every ratio divides by. */
  baseline: z.object({
    macs: z.number(),
    params: z.number(),
    layers: z.array(z.object({ path: z.string(), kind: z.enum(['conv', 'linear']), macs: z.number() })),
  }),
  /** Ticks done (each ended by its pruning decision). */
  ticks: z.number().int().nonnegative(),
  /** Filters alive before the last Tick's prune (its decision's `left`): what `gbn.prune_count: lagged` counts from. */
  previousLeft: z.number().int().nonnegative().optional(),
  phase: phaseSchema,
  sampler: samplerStateSchema,
  /** The `random` criterion's Rng. */
  rng: rngStateSchema,
  /** Save points not reached yet, largest first, and the checkpoints written. */
  pending: z.array(z.number()),
  checkpoints: z.array(z.string()),
});
export type PrunePosition = z.infer<typeof prunePositionSchema>;

/**
 * How a phase ended: a Tock; or Tick number `tick` (1-based), which pruned something or nothing, leaving the
 * network at `flopsRatio` of the baseline MACs with the save points `pending` not reached yet (those it reached
 * already written).
 */
export type PhaseEnd =
  | { kind: 'tock' }
  | { kind: 'tick'; tick: number; pruned: false }
  | { kind: 'tick'; tick: number; pruned: true; flopsRatio: number; pending: readonly number[] };

/** The schedule settings of the gbn section that decide the next phase. */
export type TickTockSchedule = Pick<GbnConfig, 'target_flops' | 'save_points' | 'max_ticks' | 'T'>;

/**
 * The Tick-Tock schedule as a pure function: the phase after `end`. A Tock is followed by a Tick. After a Tick, in
 * this order: the melt when it pruned nothing, when the MACs ratio is at or under `target_flops`, when (without a
 * target) every save point is reached, or at `max_ticks`; else a Tock (from its start) after every T-th Tick, a
 * Tick otherwise.
 */
export function nextPhase(end: PhaseEnd, gbn: TickTockSchedule): Phase {
  if (end.kind === 'tock') return { kind: 'tick' };
  if (!end.pruned) return { kind: 'melt', stoppedBy: 'nothing_to_prune' };
  if (gbn.target_flops !== undefined && end.flopsRatio <= gbn.target_flops) return { kind: 'melt', stoppedBy: 'target_flops' };
  if (gbn.target_flops === undefined && gbn.save_points.length && !end.pending.length) return { kind: 'melt', stoppedBy: 'save_points' };
  if (end.tick >= gbn.max_ticks) return { kind: 'melt', stoppedBy: 'max_ticks' };
  if (end.tick % gbn.T === 0) return { kind: 'tock', at: epochStart() };
  return { kind: 'tick' };
}

/** The save points a network at `flopsRatio` has reached: the leading ones of `pending` (largest first) at or above it. */
export function reachedSavePoints(pending: readonly number[], flopsRatio: number): number[] {
  let n = 0;
  while (n < pending.length && flopsRatio <= pending[n]) n++;
  return pending.slice(0, n);
}

/** The file of a save point: gbn_<percent>.safetensors. */
export function savePointName(point: number): string {
  return `gbn_${Math.round(point * 100)}.safetensors`;
}
