/**
 * The ring's reduce-scatter arithmetic on one received piece: v[at + i] = fround(fround(got[i] + v[at + i]) / count)
 * for i < got.length, in place. The received partial sum is the left operand of the summation order, this rank's
 * value the next term; the owner of a segment passes the sample count for its one division, every other rank 1 (x / 1
 * is x exactly, so that is a plain float32 addition).
 *
 * Returns the finiteness probe of the stored values in the same pass: the sum of each stored value times 0, which is
 * 0, or NaN exactly when a stored value is a NaN or an infinity (a non-finite term, or a float32 overflow of the sum:
 * the probe reads the rounded value, not the float64 one). Four independent probe sums keep the pass at memory speed
 * (one would be a chain of dependent additions). It replaced an addition loop followed by a separate checking pass.
 * `v` must hold at + got.length values; `count` is positive.
 */
export function foldInPlace(v: Float32Array, at: number, got: Float32Array, count: number): number {
  const f = Math.fround;
  const n = got.length;
  const n4 = n - (n % 4);
  let p0 = 0;
  let p1 = 0;
  let p2 = 0;
  let p3 = 0;
  let i = 0;
  for (; i < n4; i += 4) {
    const j = at + i;
    const a = f(f(got[i] + v[j]) / count);
    const b = f(f(got[i + 1] + v[j + 1]) / count);
    const c = f(f(got[i + 2] + v[j + 2]) / count);
    const d = f(f(got[i + 3] + v[j + 3]) / count);
    v[j] = a;
    v[j + 1] = b;
    v[j + 2] = c;
    v[j + 3] = d;
    p0 += a * 0;
    p1 += b * 0;
    p2 += c * 0;
    p3 += d * 0;
  }
  for (; i < n; i++) {
    const a = f(f(got[i] + v[at + i]) / count);
    v[at + i] = a;
    p0 += a * 0;
  }
  return p0 + p1 + p2 + p3;
}
