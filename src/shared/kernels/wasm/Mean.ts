/**
 * Mean for the wasm backend: reductions over leading axes (batch-norm
 * statistics) by native average pooling, see leading_reduce.ts;
 * everything else goes to the stock kernel.
 */
import {
  KernelConfig,
  KernelFunc,
  Mean,
  MeanAttrs,
  MeanInputs,
  TensorInfo,
} from '@tensorflow/tfjs-core';

import {
  required,
  runStockKernel,
  stockKernelSetup,
  WasmKernelArgs,
} from './kernel_utils.js';
import {leadingAxes, reduceLeading} from './leading_reduce.js';

export function mean(args: WasmKernelArgs<MeanInputs, MeanAttrs>): TensorInfo {
  const {inputs, backend, attrs} = args;
  const x = required(inputs.x, 'x');
  const k = leadingAxes(x, attrs.axis);
  if (k == null) {
    return runStockKernel(Mean, backend, inputs, attrs);
  }
  return reduceLeading(backend, x, k, attrs.keepDims, false);
}

export const meanConfig: KernelConfig = {
  kernelName: Mean,
  backendName: 'wasm',
  // We delegate to the stock kernel, which needs its setup to have run.
  setupFunc: stockKernelSetup(Mean),
  // The registry's KernelFunc takes an untyped backend; ours needs wasm's.
  kernelFunc: mean as unknown as KernelFunc,
};
