/**
 * Reduction over leading axes as a matmul: for x viewed as [M, R] (the
 * reduced axes first), sum/mean over the M rows is ones[1, M] @ x[M, R]
 * (BatchMatMul). The stock Sum/Mean transpose the reduced axes innermost
 * first and run 5-18x slower than the matmul; these reductions (over
 * [0, 1, 2] of NHWC activations) are what batch-norm statistics and
 * bias/scale gradients need.
 */
import {
  BatchMatMul,
  Fill,
  Reshape,
  TensorInfo,
  util,
} from '@tensorflow/tfjs-core';
import type {BackendWasm} from '@tensorflow/tfjs-backend-wasm';

import {runKernel, Scratch} from './kernel_utils.js';

/**
 * Number of leading axes reduced if `axis` selects exactly axes 0..k-1 of a
 * float32 tensor (k >= 1), else null.
 */
export function leadingAxes(
    x: TensorInfo, axis: number|number[]): number|null {
  if (x.dtype !== 'float32' || x.shape.length === 0) {
    return null;
  }
  const axes = util.parseAxisParam(axis, x.shape).slice().sort((a, b) => a - b);
  if (axes.length === 0 || axes.some((a, i) => a !== i)) {
    return null;
  }
  return axes.length;
}

export function reduceLeading(
    backend: BackendWasm, x: TensorInfo, k: number, keepDims: boolean,
    scale: (count: number) => number): TensorInfo {
  const m = util.sizeFromShape(x.shape.slice(0, k));
  const rest = x.shape.slice(k);
  const r = util.sizeFromShape(rest);
  const outShape = keepDims ? [...x.shape.slice(0, k).map(() => 1), ...rest] :
                              rest;
  const s = new Scratch(backend);
  try {
    const weights = s.run(
        Fill, {}, {shape: [1, m], value: scale(m), dtype: 'float32'});
    const out = s.run(
        BatchMatMul,
        {a: weights, b: s.view(x, [m, r])},
        {transposeA: false, transposeB: false});
    return runKernel(Reshape, backend, {x: out}, {shape: outShape});
  } finally {
    s.dispose();
  }
}
