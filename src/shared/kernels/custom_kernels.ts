/**
 * Kernels of our own, without a tfjs-core counterpart: fused training passes that a backend may implement (wasm
 * does, see kernels/wasm/). Callers check `hasKernel` and otherwise compose the same maths from tfjs ops.
 */
import { getBackend, getKernel } from '@tensorflow/tfjs-core';

/**
 * Training-mode batch norm over every axis but the last: inputs x [..., C], a [C], c [C]; attr epsilon.
 * Outputs y = (x - mean) * rs * a + c, mean, biased variance, rs = 1/sqrt(variance + epsilon).
 */
export const BatchNormTrainForward = 'GdpBatchNormTrainForward';
export interface BatchNormTrainForwardAttrs {
  epsilon: number;
}

/**
 * Its gradient: inputs dy, x, mean, rs, a (as saved by the forward pass). Outputs dx, da = sum(dy * (x - mean)) * rs
 * and dc = sum(dy), sums over every axis but the last.
 */
export const BatchNormTrainBackward = 'GdpBatchNormTrainBackward';

/** dy where y > 0, else 0: the ReLU gradient from the ReLU's output, in one pass. Inputs dy, y. */
export const ReluGrad = 'GdpReluGrad';

/**
 * The gradient of a clip to [lo, hi] from its input, in one pass: dy where x > lo (x >= lo with loInclusive) and
 * x <= hi, else 0. Inputs dy, x; attrs lo, hi, loInclusive. tfjs' gradients: Relu6 (lo 0 exclusive, hi 6) and
 * ClipByValue (both inclusive). A NaN x gets 0 (tfjs' Relu6 gradient gives NaN there).
 */
export const ClipGrad = 'GdpClipGrad';
export interface ClipGradAttrs {
  lo: number;
  hi: number;
  loInclusive: boolean;
}

/** Benchmarks switch the custom kernels off to time the tfjs-op compositions on the same backend. */
export const customKernelOptions = { enabled: true };

/** Whether the active backend has `kernelName` (and custom kernels are enabled). */
export function hasKernel(kernelName: string): boolean {
  return customKernelOptions.enabled && getKernel(kernelName, getBackend()) !== undefined;
}
