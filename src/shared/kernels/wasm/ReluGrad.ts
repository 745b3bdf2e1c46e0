/**
 * ReLU gradient for wasm in one pass (dy where y > 0); tfjs' own gradient
 * runs Step, Cast and Multiply, three full passes.
 */
import { KernelConfig, KernelFunc, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs-core';

import { ReluGrad } from '../custom_kernels.js';
import { ChannelPasses } from './channel_ops.js';
import { required, WasmKernelArgs } from './kernel_utils.js';
import { withScratch } from './scratch.js';

export function reluGrad(args: WasmKernelArgs<NamedTensorInfoMap, {}>): TensorInfo {
  const { inputs, backend } = args;
  const dy = required(inputs.dy, 'dy');
  const y = required(inputs.y, 'y');
  return withScratch(backend, (s) => {
    const cp = new ChannelPasses(s, y);
    const out = backend.makeOutput(y.shape, 'float32');
    const dyi = cp.at(dy),
      yi = cp.at(y),
      oi = cp.at(out);
    return cp.map(
      out,
      (n) => cp.simd!.reluGrad(cp.ptr(dy), cp.ptr(y), n, cp.ptr(out)),
      (h, i) => {
        h[oi + i] = h[yi + i] > 0 ? h[dyi + i] : 0;
      },
    );
  });
}

export const reluGradConfig: KernelConfig = {
  kernelName: ReluGrad,
  backendName: 'wasm',
  kernelFunc: reluGrad as unknown as KernelFunc,
};
