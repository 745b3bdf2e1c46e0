import { foldInto, foldRole } from '../../src/coordinator/reduce.js';
import { mod, segmentRange } from '../../src/shared/collective/ring_schedule.js';

/**
 * The two gradient averages computed whole on one process, the references the real paths are tested against bit for
 * bit: the star's fixed worker order (reduceRange; GradientReducer streams it bucket by bucket) and the ring's
 * per-segment order (ringAverage; RingAllReduce spreads it over ranks). The ring's schedule facts that define its
 * order (ringSegments, ownedSegment, summationOrder) live here too: ring_schedule.ts implements them implicitly.
 */

/**
 * out[i] = (g_0[i] + g_1[i] + ... ) / count for i in [start, end), summed in float32 in the order of `grads`:
 * the same arithmetic, bit for bit, however the range is split (the reference the streaming reduction is tested
 * against).
 */
export function reduceRange(grads: readonly Float32Array[], out: Float32Array, start: number, end: number, count: number): void {
  if (!grads.length) {
    out.fill(0, start, end);
    return;
  }
  grads.forEach((g, w) => foldInto(out, start, g.subarray(start, end), foldRole(w, grads.length), count));
}

/** Every segment's [start, end), in segment order; they tile [0, size). */
export function ringSegments(size: number, ranks: number): [number, number][] {
  return Array.from({ length: ranks }, (_, s) => segmentRange(size, ranks, s));
}

/** The segment whose complete sum `rank` holds after the reduce-scatter, and whose average it computes. */
export function ownedSegment(rank: number, ranks: number): number {
  return mod(rank + 1, ranks);
}

/**
 * The ranks whose values are added for segment `s`, in the order of the additions: s, s + 1, ..., s + ranks - 1
 * (mod ranks). The sum is ((g_s + g_{s+1}) + g_{s+2}) + ... in float32, whatever the timing of the frames.
 */
export function summationOrder(s: number, ranks: number): number[] {
  return Array.from({ length: ranks }, (_, k) => mod(s + k, ranks));
}

/**
 * The ring all-reduce's result computed on one process: out = (sum over ranks of grads[k]) / count with, for each
 * segment s, the additions in the ring's order g_s, g_{s+1}, ..., g_{s+N-1} (summationOrder), each rounded to
 * float32, and the division rounded to float32 once: the same bits as RingAllReduce on every rank.
 *
 * `grads`: N >= 1 arrays of the same length M (rank order); `count` > 0. `out` (length M; may be grads[k] for no k)
 * receives the result and is returned.
 */
export function ringAverage(grads: readonly Float32Array[], count: number, out = new Float32Array(grads[0]?.length ?? 0)): Float32Array {
  const n = grads.length;
  const size = out.length;
  if (n === 0) throw new RangeError('ringAverage: no gradients');
  if (grads.some((g) => g.length !== size)) throw new RangeError(`ringAverage: gradients of lengths ${grads.map((g) => g.length).join(', ')}, out ${size}`);
  const f = Math.fround;
  ringSegments(size, n).forEach(([start, end], s) => {
    const order = summationOrder(s, n);
    const first = grads[order[0]];
    if (n === 1) {
      for (let i = start; i < end; i++) out[i] = first[i] / count;
      return;
    }
    // The partial sums live in `out` (a store rounds to float32, as the ring's receivers do in their buffers).
    out.set(first.subarray(start, end), start);
    for (let k = 1; k < n - 1; k++) {
      const g = grads[order[k]];
      for (let i = start; i < end; i++) out[i] = out[i] + g[i];
    }
    const last = grads[order[n - 1]];
    for (let i = start; i < end; i++) out[i] = f(out[i] + last[i]) / count;
  });
  return out;
}
