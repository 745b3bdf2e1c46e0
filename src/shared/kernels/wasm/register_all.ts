/**
 * Registers the wasm training kernels. Kernels the wasm backend already has
 * (but too slow for training) are replaced; the stock configs are kept so
 * replacements can delegate to them. Safe to call more than once.
 */
import '@tensorflow/tfjs-backend-wasm';
import { getKernel, KernelConfig, Mean, registerKernel, Sum, unregisterKernel } from '@tensorflow/tfjs-core';

import { avgPoolGradConfig } from './AvgPoolGrad.js';
import { batchMatMulConfig } from './BatchMatMul.js';
import { batchNormTrainBackwardConfig } from './BatchNormTrainBackward.js';
import { batchNormTrainForwardConfig } from './BatchNormTrainForward.js';
import { clipGradConfig } from './ClipGrad.js';
import { registerClipGradients } from '../clip_gradients.js';
import { conv2DConfig } from './Conv2D.js';
import { conv2DBackpropFilterConfig } from './Conv2DBackpropFilter.js';
import { conv2DBackpropInputConfig } from './Conv2DBackpropInput.js';
import { depthwiseConv2dNativeBackpropFilterConfig } from './DepthwiseConv2dNativeBackpropFilter.js';
import { depthwiseConv2dNativeBackpropInputConfig } from './DepthwiseConv2dNativeBackpropInput.js';
import { rememberStockKernel, WASM } from './kernel_utils.js';
import { identityConfig } from './Identity.js';
import { leadingReduceConfig } from './leading_reduce.js';
import { maxPoolGradConfig } from './MaxPoolGrad.js';
import { reluGradConfig } from './ReluGrad.js';

export const wasmTrainingKernels: readonly KernelConfig[] = [
  conv2DConfig,
  conv2DBackpropFilterConfig,
  conv2DBackpropInputConfig,
  depthwiseConv2dNativeBackpropFilterConfig,
  depthwiseConv2dNativeBackpropInputConfig,
  batchMatMulConfig,
  maxPoolGradConfig,
  avgPoolGradConfig,
  leadingReduceConfig(Sum),
  leadingReduceConfig(Mean),
  identityConfig,
  batchNormTrainForwardConfig,
  batchNormTrainBackwardConfig,
  reluGradConfig,
  clipGradConfig,
];

/**
 * Registers the kernels, and the Relu6 and ClipByValue gradients that use ClipGrad (over tfjs' own, so call this
 * after importing `@tensorflow/tfjs`).
 */
export function registerWasmTrainingKernels(): void {
  registerClipGradients();
  for (const config of wasmTrainingKernels) {
    const existing = getKernel(config.kernelName, WASM);
    if (existing === config) {
      continue;
    }
    if (existing != null) {
      rememberStockKernel(existing);
      unregisterKernel(config.kernelName, WASM);
    }
    registerKernel(config);
  }
}
