import { ringSegments, summationOrder } from './ring_schedule.js';

/**
 * The ring all-reduce's result computed on one process: out = (sum over ranks of grads[k]) / count with, for each
 * segment s, the additions in the ring's order g_s, g_{s+1}, ..., g_{s+N-1} (summationOrder), each rounded to
 * float32, and the division rounded to float32 once: the same bits as RingAllReduce on every rank, for a
 * coordinator that reduces centrally (star) but must give what the ring would, and for equivalence tests.
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
