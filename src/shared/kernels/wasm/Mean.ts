/**
 * Mean for the wasm backend: reductions over leading axes (batch-norm
 * statistics) by native average pooling, see leading_reduce.ts;
 * everything else goes to the stock kernel.
 */
import { KernelConfig, KernelFunc, Mean } from '@tensorflow/tfjs-core';

import { stockKernelSetup } from './kernel_utils.js';
import { leadingReduceKernel } from './leading_reduce.js';

export const mean = leadingReduceKernel(Mean);

export const meanConfig: KernelConfig = {
  kernelName: Mean,
  backendName: 'wasm',
  // We delegate to the stock kernel, which needs its setup to have run.
  setupFunc: stockKernelSetup(Mean),
  // The registry's KernelFunc takes an untyped backend; ours needs wasm's.
  kernelFunc: mean as unknown as KernelFunc,
};
