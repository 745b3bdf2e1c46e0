import { z } from 'zod';
import { GdpError } from '../errors.js';
import type { Module } from '../nn/module.js';
import { bnAt, maskChannels } from './gates.js';
import type { ChannelGroup } from './groups.js';

/**
 * A pruning decision as replayable data: per group, the channel indices to mask, and the BNs (module paths) that
 * carry the group's mask. JSON-serialisable; `applyDecision` replays it on any replica of the same model.
 * Records are type aliases, not interfaces, so that they are assignable to the protocol's JSON value type.
 */
export type MaskDecision = {
  kind: 'mask';
  groups: Record<string, number[]>;
  layers: Record<string, string[]>;
};

const maskDecisionSchema = z
  .object({
    kind: z.literal('mask'),
    groups: z.record(z.string(), z.array(z.number().int().nonnegative())),
    layers: z.record(z.string(), z.array(z.string()).min(1)),
  })
  .strict();

/** One group's input to the global ranking. */
export interface GroupScores {
  group: ChannelGroup;
  /** Importance per channel (higher = keep), e.g. `gateImportance`. */
  scores: ArrayLike<number>;
  /** Current mask per channel (0 = already pruned). */
  mask: ArrayLike<number>;
}

export interface GlobalPruneOptions {
  /**
   * The fraction of the alive filters to prune (the paper's `p`, in [0, 1]): the paper's `num` is
   * floor(p * alive filters) (or p * countFrom), a group channel counting once per member BN.
   */
  p: number;
  /** Every group keeps at least max(minFilters, ceil(minimalRatio * width)) channels (all it has, when fewer). */
  minimalRatio: number;
  /** `gbn.minimal_rounding` (default `ceil`): `floor` takes floor(minimalRatio * width) instead, as the paper's code. */
  minimalRounding?: MinimalRounding;
  /** `gbn.min_filters` (default 1): the least number of alive channels a group keeps, whatever minimalRatio says. */
  minFilters?: number;
  /**
   * The filter count the paper's num = floor(p * count) comes from (default: the filters alive now). `gbn.prune_count:
   * lagged` passes the count from before the previous decision, as the paper's run loop does. A num beyond the
   * candidates prunes every candidate.
   */
  countFrom?: number;
  /** The paper's flops_eta (0 = plain score ranking). */
  flopsEta: number;
  /** The smallest BN feature-map area (H*W) of the network: flops_eta is divided by it, as the paper does. */
  minArea: number;
  /**
   * `gbn.round_to` (default 1): after a decision every group keeps a multiple of this many channels, or all it has.
   * Channels then leave in chunks (see `globalPrune`), so a small `p` still prunes a whole chunk.
   */
  roundTo?: number;
}

export interface GlobalPruneInfo {
  /** Filters alive before this prune (group channels times member BNs). */
  left: number;
  /** The count num came from: `countFrom`, or `left`. */
  counted: number;
  /** floor(p * counted): the 0-based position of the threshold in the ranking (num + 1 filters go, with ties). */
  num: number;
  toPrune: number;
  total: number;
  totalPrunedRatio: number;
  threshold: number;
}

/** How minimal_ratio * width becomes a channel count: gdp rounds up, the paper's code down. */
export type MinimalRounding = 'ceil' | 'floor';

/**
 * The channels a group of `width` keeps at least: max(minFilters, ceil(minimalRatio * width)) (the 1e-9 absorbs
 * float error in the product); with `floor`, the paper's `GatedBatchNorm2d.minimal_filter`, max(1, int(width *
 * minimal_ratio)) (prune/universal.py), float64 product included, raised to minFilters.
 */
export function minimalChannels(width: number, minimalRatio: number, minFilters = 1, rounding: MinimalRounding = 'ceil'): number {
  return Math.max(minFilters, rounding === 'floor' ? Math.floor(width * minimalRatio) : Math.ceil(minimalRatio * width - 1e-9));
}

/**
 * The score the global ranking uses: importance minus the FLOPs term. As in the paper's `get_score`, each member
 * BN subtracts eta/minArea * its area * the alive channel count, so the group's term is that times the sum of
 * its members' areas; pruned channels are out of the ranking.
 */
export function flopsAwareScores(e: GroupScores, flopsEta: number, minArea: number): Float64Array {
  const alive = countAlive(e.mask);
  const areaSum = e.group.areas.reduce((a, b) => a + b, 0);
  const reg = flopsEta === 0 ? 0 : (flopsEta / minArea) * areaSum * alive;
  const out = new Float64Array(e.group.width);
  for (let c = 0; c < out.length; c++) out[c] = e.scores[c] - reg;
  return out;
}

function countAlive(mask: ArrayLike<number>): number {
  let n = 0;
  for (let i = 0; i < mask.length; i++) if (mask[i] !== 0) n++;
  return n;
}

/**
 * Global pruning over all groups with one threshold, following the paper's `get_threshold`/`set_mask`: each
 * group's alive channels except its `minimal` best are candidates; every candidate enters the ranking once per
 * member BN; the threshold is the entry at position num = floor(p * alive filters) (0-based; `countFrom` replaces
 * the alive filters) of the sorted ranking, and every candidate scoring <= threshold is pruned: num + 1 filters when
 * scores are distinct and groups have one BN. Ties inside a group are broken by channel index (lower index ranks
 * lower).
 *
 * With `roundTo` = k > 1 the ranked unit is a chunk: a group's candidates, in score order, are cut into chunks of k
 * (the first one smaller when the alive count is no multiple of k, so that what stays becomes one), a trailing
 * partial chunk is no candidate, and a chunk scores as its best channel and weighs k times the member BNs. The
 * threshold is the score of the chunk at which the sorted chunks' weights first exceed `num`, and every chunk at or
 * under it goes. With k = 1 this is exactly the per-channel ranking above.
 *
 * Throws BAD_DECISION (p outside [0, 1], minArea, roundTo, minFilters, countFrom), SHAPE_MISMATCH (scores or mask
 * not of the group's width), BAD_SCORE (NaN).
 */
export function globalPrune(entries: readonly GroupScores[], opts: GlobalPruneOptions): { decision: MaskDecision; info: GlobalPruneInfo } {
  if (!(opts.minArea > 0)) throw new GdpError('BAD_DECISION', `minArea must be positive, got ${opts.minArea}`);
  if (!(opts.p >= 0 && opts.p <= 1)) throw new GdpError('BAD_DECISION', `p must be a fraction in [0, 1], got ${opts.p}`);
  const roundTo = opts.roundTo ?? 1;
  if (!Number.isInteger(roundTo) || roundTo < 1) throw new GdpError('BAD_DECISION', `roundTo must be a positive integer, got ${roundTo}`);
  const minFilters = opts.minFilters ?? 1;
  if (!Number.isInteger(minFilters) || minFilters < 1) throw new GdpError('BAD_DECISION', `minFilters must be a positive integer, got ${minFilters}`);
  if (opts.countFrom !== undefined && !(Number.isInteger(opts.countFrom) && opts.countFrom >= 0)) {
    throw new GdpError('BAD_DECISION', `countFrom must be a non-negative integer, got ${opts.countFrom}`);
  }
  const chunks: { e: GroupScores; channels: number[]; score: number; weight: number }[] = [];
  let total = 0;
  let left = 0;
  for (const e of entries) {
    const g = e.group;
    if (e.scores.length !== g.width || e.mask.length !== g.width) {
      throw new GdpError('SHAPE_MISMATCH', `group '${g.id}': ${e.scores.length} scores and ${e.mask.length} mask values for width ${g.width}`);
    }
    const count = g.bns.length;
    const adjusted = flopsAwareScores(e, opts.flopsEta, opts.minArea);
    const alive: number[] = [];
    for (let c = 0; c < g.width; c++) {
      if (Number.isNaN(adjusted[c])) throw new GdpError('BAD_SCORE', `group '${g.id}': channel ${c} has a NaN score`);
      if (e.mask[c] !== 0) alive.push(c);
    }
    total += g.width * count;
    left += alive.length * count;
    const byScore = alive.slice().sort((a, b) => adjusted[a] - adjusted[b] || a - b);
    const channels = byScore.slice(0, Math.max(0, byScore.length - minimalChannels(g.width, opts.minimalRatio, minFilters, opts.minimalRounding)));
    let size = alive.length % roundTo || roundTo;
    for (let i = 0; i + size <= channels.length; i += size, size = roundTo) {
      const part = channels.slice(i, i + size);
      chunks.push({ e, channels: part, score: adjusted[part[part.length - 1]], weight: size * count });
    }
  }
  // A stable sort keeps graph order among equal scores; the threshold is a score, so ties are pruned together.
  const ranked = chunks.slice().sort((a, b) => a.score - b.score);
  const counted = opts.countFrom ?? left;
  const num = Math.floor(counted * opts.p);
  let threshold = ranked.length === 0 ? -Infinity : Infinity;
  let seen = 0;
  for (const c of ranked) {
    seen += c.weight;
    if (seen > num) {
      threshold = c.score;
      break;
    }
  }
  const pruned = new Map<GroupScores, number[]>();
  for (const c of chunks) if (c.score <= threshold) pruned.set(c.e, [...(pruned.get(c.e) ?? []), ...c.channels]);
  const decision: MaskDecision = { kind: 'mask', groups: {}, layers: {} };
  let toPrune = 0;
  for (const [e, channels] of pruned) {
    decision.groups[e.group.id] = channels.sort((a, b) => a - b);
    decision.layers[e.group.id] = [...e.group.bns];
    toPrune += channels.length * e.group.bns.length;
  }
  const info: GlobalPruneInfo = { left, counted, num, toPrune, total, totalPrunedRatio: total ? (total - left + toPrune) / total : 0, threshold };
  return { decision, info };
}

/** Checks a decision that arrived as untyped data (a message, a file). */
export function parseMaskDecision(data: unknown, source = 'mask decision'): MaskDecision {
  const r = maskDecisionSchema.safeParse(data);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new GdpError('BAD_DECISION', `${source}: ${i.path.join('.') || '(root)'}: ${i.message}`);
  }
  for (const id of Object.keys(r.data.groups)) {
    if (!r.data.layers[id]) throw new GdpError('BAD_DECISION', `${source}: group '${id}' has channels but no layers`);
  }
  return r.data;
}

/** Replays a decision: sets bn_mask to 0 at the given channels of every listed BN. Validates before changing anything. */
export function applyDecision(model: Module, record: MaskDecision): void {
  const d = parseMaskDecision(record);
  const plan: [string, string, number[]][] = [];
  for (const [id, channels] of Object.entries(d.groups)) {
    for (const p of d.layers[id]) {
      const bn = bnAt(model, p, `mask decision, group '${id}'`);
      if (!bn.mask) throw new GdpError('NOT_GATED', `mask decision, group '${id}': BN '${p}' is not gated`);
      const bad = channels.find((c) => c >= bn.channels);
      if (bad !== undefined) throw new GdpError('BAD_DECISION', `mask decision, group '${id}': channel ${bad} but '${p}' has ${bn.channels}`);
      plan.push([id, p, channels]);
    }
  }
  for (const [id, p, channels] of plan) maskChannels(bnAt(model, p), channels, `mask decision, group '${id}', '${p}'`);
}
