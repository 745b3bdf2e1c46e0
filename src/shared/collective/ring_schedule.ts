import { bucketRanges } from '../protocol/buckets.js';

/**
 * The arithmetic of a ring all-reduce (reduce-scatter then all-gather, as in Patarasuk and Yuan, "Bandwidth optimal
 * all-reduce algorithms for clusters of workstations", 2009; the scheme of Horovod and NCCL's ring): which segment
 * a rank sends and receives at each step. Pure functions of (vector length, ranks, rank, step): every rank derives
 * the same schedule, so a frame's place in it can be checked exactly.
 *
 * A vector of `size` float32 elements is cut into `ranks` contiguous segments; segment s is
 * [s*q + min(s, r), (s+1)*q + min(s+1, r)) with q = floor(size / ranks), r = size mod ranks, so sizes differ by at
 * most 1 and the first r segments are the longer ones (empty segments when size < ranks). Each segment travels in
 * pieces of at most `bucketElems` elements (bucketRanges), so that a rank forwards a piece as soon as it has it.
 *
 * Every rank sends to rank + 1 and receives from rank - 1 (mod ranks). Reduce-scatter step t (0 <= t < ranks - 1):
 * rank k sends segment k - t and receives segment k - t - 1, which it adds to its own values; after the last step
 * rank k holds the complete sum of segment k + 1 (its owned segment). All-gather step t: rank k sends segment
 * k + 1 - t and receives segment k - t, which it copies.
 */

export type RingPhase = 'reduce_scatter' | 'all_gather';

/** n mod m in [0, m) for any integer n. */
export function mod(n: number, m: number): number {
  return ((n % m) + m) % m;
}

/** [start, end) of segment `s` of a `size`-element vector cut for `ranks` ranks (see the file comment). */
export function segmentRange(size: number, ranks: number, s: number): [number, number] {
  const q = Math.floor(size / ranks);
  const r = size % ranks;
  return [s * q + Math.min(s, r), (s + 1) * q + Math.min(s + 1, r)];
}

/** [start, end) of each piece of a segment, in absolute element indices. */
export function segmentPieces(segment: [number, number], bucketElems: number): [number, number][] {
  return bucketRanges(segment[1] - segment[0], bucketElems).map(([a, b]) => [segment[0] + a, segment[0] + b]);
}

/** The segment `rank` sends at `step` of `phase`. */
export function sentSegment(phase: RingPhase, rank: number, step: number, ranks: number): number {
  return phase === 'reduce_scatter' ? mod(rank - step, ranks) : mod(rank + 1 - step, ranks);
}

/** The segment `rank` receives (from rank - 1) at `step` of `phase`: what rank - 1 sends then. */
export function receivedSegment(phase: RingPhase, rank: number, step: number, ranks: number): number {
  return sentSegment(phase, mod(rank - 1, ranks), step, ranks);
}

/** One frame's place in the schedule. */
export interface RingSlot {
  phase: RingPhase;
  step: number;
  /** Index of the piece within its segment. */
  piece: number;
  /** The piece's absolute [start, end) in the vector. */
  range: [number, number];
}

/**
 * The frames `rank` receives during one all-reduce, in the order its predecessor sends them: reduce-scatter steps
 * then all-gather steps, pieces in index order within a step; empty segments contribute no frame. The sender's
 * order is the same because it forwards each piece when it receives it, one step on.
 */
export function receiveSchedule(size: number, ranks: number, rank: number, bucketElems: number): RingSlot[] {
  const out: RingSlot[] = [];
  for (const phase of ['reduce_scatter', 'all_gather'] as const) {
    for (let step = 0; step < ranks - 1; step++) {
      const seg = segmentRange(size, ranks, receivedSegment(phase, rank, step, ranks));
      segmentPieces(seg, bucketElems).forEach((range, piece) => out.push({ phase, step, piece, range }));
    }
  }
  return out;
}

/**
 * Bytes each rank sends (and receives) in one all-reduce of `size` float32 values: 2 (ranks - 1) / ranks x size x 4
 * for sizes divisible by ranks (payload only). Divided by a link's rate, the time bound of the ring.
 */
export function ringBytesPerRank(size: number, ranks: number): number {
  return (2 * (ranks - 1) * size * 4) / ranks;
}
