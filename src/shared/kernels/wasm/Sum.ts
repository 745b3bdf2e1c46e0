/**
 * Sum for the wasm backend: reductions over leading axes (bias and
 * batch-norm gradients) by native average pooling, see leading_reduce.ts;
 * everything else goes to the stock kernel.
 */
import {
  KernelConfig,
  KernelFunc,
  Sum,
  SumAttrs,
  SumInputs,
  TensorInfo,
} from '@tensorflow/tfjs-core';

import {
  required,
  runStockKernel,
  stockKernelSetup,
  WasmKernelArgs,
} from './kernel_utils.js';
import {leadingAxes, reduceLeading} from './leading_reduce.js';

export function sum(args: WasmKernelArgs<SumInputs, SumAttrs>): TensorInfo {
  const {inputs, backend, attrs} = args;
  const x = required(inputs.x, 'x');
  const k = leadingAxes(x, attrs.axis);
  if (k == null) {
    return runStockKernel(Sum, backend, inputs, attrs);
  }
  return reduceLeading(backend, x, k, attrs.keepDims, true);
}

export const sumConfig: KernelConfig = {
  kernelName: Sum,
  backendName: 'wasm',
  // We delegate to the stock kernel, which needs its setup to have run.
  setupFunc: stockKernelSetup(Sum),
  // The registry's KernelFunc takes an untyped backend; ours needs wasm's.
  kernelFunc: sum as unknown as KernelFunc,
};
