/**
 * Sum for the wasm backend: reductions over leading axes (bias and
 * batch-norm gradients) by native average pooling, see leading_reduce.ts;
 * everything else goes to the stock kernel.
 */
import { KernelConfig, KernelFunc, Sum } from '@tensorflow/tfjs-core';

import { stockKernelSetup } from './kernel_utils.js';
import { leadingReduceKernel } from './leading_reduce.js';

export const sum = leadingReduceKernel(Sum);

export const sumConfig: KernelConfig = {
  kernelName: Sum,
  backendName: 'wasm',
  // We delegate to the stock kernel, which needs its setup to have run.
  setupFunc: stockKernelSetup(Sum),
  // The registry's KernelFunc takes an untyped backend; ours needs wasm's.
  kernelFunc: sum as unknown as KernelFunc,
};
