/**
 * The float32 arithmetic of the gradient average as the streaming reduction computes it (GradientReducer folds each
 * worker's bucket as it arrives): acc_0 = g_0, acc_w = fround(acc_{w-1} + g_w) in
 * worker order, out = fround(acc / count). Storing into a Float32Array rounds like Math.fround, so each fold is one
 * tight loop over typed arrays, bit for bit the per-element definition.
 */

/** Where a worker's values go in the running sum: the first initialises it, the last also divides. */
export type FoldRole = 'first' | 'add' | 'last' | 'only';

/**
 * Folds `g` (one bucket of one worker) into `acc[at, at + g.length)` according to `role`; `count` divides for 'last'
 * and 'only'. Returns the sum of g[i] * 0 over the bucket, which is NaN exactly when `g` holds a NaN or an infinity:
 * the finiteness check rides along in the same pass (the caller locates the bad element only when it fails).
 */
export function foldInto(acc: Float32Array, at: number, g: Float32Array, role: FoldRole, count: number): number {
  const n = g.length;
  let probe = 0;
  if (role === 'first') {
    for (let i = 0; i < n; i++) {
      const v = g[i];
      acc[at + i] = v;
      probe += v * 0;
    }
  } else if (role === 'add') {
    for (let i = 0; i < n; i++) {
      const v = g[i];
      acc[at + i] = acc[at + i] + v;
      probe += v * 0;
    }
  } else if (role === 'last') {
    const f = Math.fround;
    for (let i = 0; i < n; i++) {
      const v = g[i];
      acc[at + i] = f(acc[at + i] + v) / count;
      probe += v * 0;
    }
  } else {
    for (let i = 0; i < n; i++) {
      const v = g[i];
      acc[at + i] = v / count;
      probe += v * 0;
    }
  }
  return probe;
}

/** The role of worker `w` of `workers` in the fixed-order sum. */
export function foldRole(w: number, workers: number): FoldRole {
  if (workers === 1) return 'only';
  return w === 0 ? 'first' : w === workers - 1 ? 'last' : 'add';
}
