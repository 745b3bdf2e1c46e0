/**
 * Sum/mean over leading axes via the native average pooling: x viewed as
 * [1, A, B, R] (A*B = the reduced leading elements, R the rest, contiguous
 * per row) pooled with one [A, B] window gives the mean of every column.
 * The stock Sum/Mean first transpose the reduced axes innermost and run
 * 3-10x slower; these reductions (over [0, 1, 2] of NHWC activations) are
 * what batch-norm statistics and bias/scale gradients need. A matmul with a
 * ones row is no faster: XNNPACK packs the data operand on every call.
 */
import { AvgPool, Fill, KernelConfig, KernelFunc, Mean, Multiply, Reshape, Sum, SumAttrs, SumInputs, TensorInfo, util } from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

import { required, runKernel, runStockKernel, stockKernelSetup, WasmKernelArgs } from './kernel_utils.js';
import { withScratch } from './scratch.js';

/**
 * The wasm kernel config of Sum or Mean: reductions over leading axes (bias
 * and batch-norm gradients and statistics) here, everything else by the
 * stock kernel, whose setup therefore runs too.
 */
export function leadingReduceConfig(kernelName: typeof Sum | typeof Mean): KernelConfig {
  return {
    kernelName,
    backendName: 'wasm',
    setupFunc: stockKernelSetup(kernelName),
    // The registry's KernelFunc takes an untyped backend; ours needs wasm's.
    kernelFunc: leadingReduceKernel(kernelName) as unknown as KernelFunc,
  };
}

/** kernelFunc of Sum or Mean (same inputs and attributes). */
function leadingReduceKernel(kernelName: typeof Sum | typeof Mean): (args: WasmKernelArgs<SumInputs, SumAttrs>) => TensorInfo {
  const sum = kernelName === Sum;
  return ({ inputs, backend, attrs }) => {
    const x = required(inputs.x, 'x');
    const k = leadingAxes(x, attrs.axis);
    if (k == null) {
      return runStockKernel(kernelName, backend, inputs, attrs);
    }
    return reduceLeading(backend, x, k, attrs.keepDims, sum);
  };
}

/**
 * Number of leading axes reduced if `axis` selects exactly axes 0..k-1 of a
 * float32 tensor (k >= 1), else null.
 */
export function leadingAxes(x: TensorInfo, axis: number | number[]): number | null {
  if (x.dtype !== 'float32' || x.shape.length === 0 || util.sizeFromShape(x.shape) === 0) {
    return null;
  }
  const axes = util
    .parseAxisParam(axis, x.shape)
    .slice()
    .sort((a, b) => a - b);
  if (axes.length === 0 || axes.some((a, i) => a !== i)) {
    return null;
  }
  return axes.length;
}

/** Mean (or sum, `sum` = true) over the first k axes of x. */
export function reduceLeading(backend: BackendWasm, x: TensorInfo, k: number, keepDims: boolean, sum: boolean): TensorInfo {
  const lead = x.shape.slice(0, k);
  const rest = x.shape.slice(k);
  const count = util.sizeFromShape(lead);
  const cols = lead[k - 1];
  const rows = count / cols;
  const outShape = keepDims ? [...lead.map(() => 1), ...rest] : rest;
  return withScratch(backend, (s) => {
    let out = s.run(AvgPool, { x: s.view(x, [1, rows, cols, util.sizeFromShape(rest)]) }, { filterSize: [rows, cols], strides: [1, 1], pad: 'valid' });
    if (sum) {
      const scale = s.run(Fill, {}, { shape: [], value: count, dtype: 'float32' });
      out = s.run(Multiply, { a: out, b: scale });
    }
    return runKernel(Reshape, backend, { x: out }, { shape: outShape });
  });
}
