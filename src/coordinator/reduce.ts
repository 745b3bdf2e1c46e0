/**
 * out[i] = (g_0[i] + g_1[i] + ... ) / count for i in [start, end), summed in float32 in the order of `grads`:
 * the same arithmetic, bit for bit, however the range is split between threads.
 */
export function reduceRange(grads: readonly Float32Array[], out: Float32Array, start: number, end: number, count: number): void {
  const f = Math.fround;
  for (let i = start; i < end; i++) {
    let acc = 0;
    for (let w = 0; w < grads.length; w++) acc = f(acc + grads[w][i]);
    out[i] = f(acc / count);
  }
}
