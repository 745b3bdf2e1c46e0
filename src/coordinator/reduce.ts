/**
 * out[i] = (g_0[i] + g_1[i] + ... ) / count for i in [start, end), summed in float32 in the order of `grads`:
 * the same arithmetic, bit for bit, however the range is split between threads.
 *
 * Written as whole passes over typed arrays (storing into a Float32Array rounds like Math.fround): acc_0 = g_0,
 * acc_w = fround(acc_{w-1} + g_w), out = fround(acc / count), which is the per-element loop's arithmetic at a
 * fraction of its cost (one tight loop per worker instead of a nested loop with an fround per operation).
 */
export function reduceRange(grads: readonly Float32Array[], out: Float32Array, start: number, end: number, count: number): void {
  const last = grads.length - 1;
  if (last < 0) {
    out.fill(0, start, end);
    return;
  }
  if (last > 0) out.set(grads[0].subarray(start, end), start);
  for (let w = 1; w < last; w++) {
    const g = grads[w];
    for (let i = start; i < end; i++) out[i] = out[i] + g[i];
  }
  // The last worker's sum and the division in one pass: the sum is rounded to float32 before dividing.
  const g = grads[last];
  const f = Math.fround;
  if (last === 0) {
    for (let i = start; i < end; i++) out[i] = g[i] / count;
  } else {
    for (let i = start; i < end; i++) out[i] = f(out[i] + g[i]) / count;
  }
}
