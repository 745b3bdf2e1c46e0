/**
 * The clip gradient (custom_kernels.ts ClipGrad) for wasm in one SIMD pass: dy where x lies in the clip range.
 * tfjs composes it from LessEqual, Step, Cast and Multiply (ReLU6) or GreaterEqual, LessEqual, LogicalAnd,
 * ZerosLike and Select (clipByValue): on wasm the comparisons against a broadcast scalar alone cost more than
 * the convolutions of a MobileNetV2 block.
 */
import { KernelConfig, KernelFunc, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs-core';

import { ClipGrad, ClipGradAttrs } from '../custom_kernels.js';
import { ChannelPasses } from './channel_ops.js';
import { required, WasmKernelArgs } from './kernel_utils.js';
import { withScratch } from './scratch.js';

export function clipGrad(args: WasmKernelArgs<NamedTensorInfoMap, ClipGradAttrs>): TensorInfo {
  const { inputs, backend, attrs } = args;
  const dy = required(inputs.dy, 'dy');
  const x = required(inputs.x, 'x');
  // Bounds as float32, as the SIMD pass and tfjs' comparisons against a scalar tensor see them.
  const lo = Math.fround(attrs.lo),
    hi = Math.fround(attrs.hi),
    loInclusive = attrs.loInclusive;
  return withScratch(backend, (s) => {
    const cp = new ChannelPasses(s, x);
    const out = backend.makeOutput(x.shape, 'float32');
    const dyi = cp.at(dy),
      xi = cp.at(x),
      oi = cp.at(out);
    return cp.map(
      out,
      (n) => cp.simd!.clipGrad(cp.ptr(dy), cp.ptr(x), n, lo, hi, loInclusive ? 1 : 0, cp.ptr(out)),
      (h, i) => {
        const v = h[xi + i];
        h[oi + i] = (loInclusive ? v >= lo : v > lo) && v <= hi ? h[dyi + i] : 0;
      },
    );
  });
}

export const clipGradConfig: KernelConfig = {
  kernelName: ClipGrad,
  backendName: 'wasm',
  kernelFunc: clipGrad as unknown as KernelFunc,
};
