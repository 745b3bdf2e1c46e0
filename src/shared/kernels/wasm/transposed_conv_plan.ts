/**
 * 1-D geometry of the transpose of a strided convolution, split into stride
 * phases. Shared by the backprop-input style kernels.
 *
 * Forward (one axis): y[o] = sum_k x[s*o + k - p] * w[k], o in [0, outSize).
 * With j = i + p, a tap k = s*a + b contributes to j = s*(o + a) + b, so the
 * inputs of phase b (j = s*m + b) are
 *   dx[s*m + b - p] = sum_a dy[m - a] * w[s*a + b],
 * a stride-1 correlation of dy with the flipped phase taps. Every phase is
 * evaluated on the same range m in [mLo, mHi] so that the phase outputs can
 * be interleaved: dx[i] = phase[(i + p) mod s][(i + p - s*mLo) div s].
 */
export interface PhasePlan {
  stride: number;
  /** Number of taps of each phase b (0 when b >= kernel size). */
  taps: number[];
  /** Largest tap count (phase 0). */
  maxTaps: number;
  mLo: number;
  /** Number of phase outputs per phase. */
  count: number;
  /** Offset of dx[0] in the interleaved phase outputs: p - s*mLo. */
  start: number;
  /**
   * dy padding before/after (may be negative = crop) for a stride-1
   * correlation with `tapsUsed` taps producing outputs mLo..mHi.
   */
  padBefore(tapsUsed: number): number;
  padAfter: number;
}

export function planPhases(inSize: number, outSize: number, kernel: number, stride: number, padBefore: number): PhasePlan {
  const taps: number[] = [];
  let mLo = Infinity;
  let mHi = -Infinity;
  for (let b = 0; b < stride; b++) {
    taps.push(b < kernel ? Math.ceil((kernel - b) / stride) : 0);
    mLo = Math.min(mLo, Math.ceil((padBefore - b) / stride));
    mHi = Math.max(mHi, Math.floor((padBefore + inSize - 1 - b) / stride));
  }
  return {
    stride,
    taps,
    maxTaps: taps[0],
    mLo,
    count: mHi - mLo + 1,
    start: padBefore - stride * mLo,
    // Output m needs dy[m - tapsUsed + 1 .. m].
    padBefore: (tapsUsed: number) => tapsUsed - 1 - mLo,
    padAfter: mHi + 1 - outSize,
  };
}
