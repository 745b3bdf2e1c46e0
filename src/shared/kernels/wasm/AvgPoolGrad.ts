/**
 * AvgPoolGrad for the wasm backend.
 *
 * The stock kernel is ~10x slower than AvgPool. For non-overlapping windows
 * (stride == window, or a single window along an axis, e.g. global average
 * pooling) every input gets dy/(kh*kw) of its window: a broadcast Multiply of
 * dy viewed as [N, OH, 1, OW, 1, C] by a [1, 1, kh, 1, kw, 1] constant, then a
 * crop/zero-pad to the input. Like the cpu and stock wasm kernels the
 * multiplier is 1/(kh*kw) even for windows clipped by 'same' padding.
 * Overlapping windows fall back to the stock kernel.
 */
import {
  AvgPoolGrad,
  AvgPoolGradAttrs,
  AvgPoolGradInputs,
  backend_util,
  Fill,
  KernelConfig,
  KernelFunc,
  Multiply,
  Reshape,
  TensorInfo,
} from '@tensorflow/tfjs-core';

import { windowNHWC } from './heap_layout.js';
import { runKernel, runStockKernel, required, shortGeometry, stockKernelSetup, WasmKernelArgs } from './kernel_utils.js';
import { withScratch } from './scratch.js';

export function avgPoolGrad(args: WasmKernelArgs<AvgPoolGradInputs, AvgPoolGradAttrs>): TensorInfo {
  const { inputs, backend, attrs } = args;
  const dy = required(inputs.dy, 'dy');
  const input = required(inputs.input, 'input');
  const { filterSize, strides, pad } = attrs;
  const info = backend_util.computePool2DInfo(input.shape as [number, number, number, number], filterSize, strides, 1, pad);
  const { n, h, w, c, oh, ow, kh, kw, sh, sw, pt, pl } = shortGeometry(info);
  const disjoint = (oh === 1 || sh === kh) && (ow === 1 || sw === kw);
  if (!disjoint || input.dtype !== 'float32') {
    return runStockKernel(AvgPoolGrad, backend, inputs, attrs);
  }
  return withScratch(backend, (s) => {
    const scale = s.run(Fill, {}, { shape: [1, 1, kh, 1, kw, 1], value: 1 / (kh * kw), dtype: 'float32' });
    const spread = s.run(Multiply, { a: s.view(dy, [n, oh, 1, ow, 1, c]), b: scale });
    // spread covers padded rows [0, oh*kh), i.e. input rows from -padTop.
    const dx = windowNHWC(s, s.view(spread, [n, oh * kh, ow * kw, c]), pt, h, pl, w);
    // Reshape shares dx's data with a refCount the scratch cleanup respects.
    return runKernel(Reshape, backend, { x: dx }, { shape: [n, h, w, c] });
  });
}

export const avgPoolGradConfig: KernelConfig = {
  kernelName: AvgPoolGrad,
  backendName: 'wasm',
  // We delegate to the stock kernel, which needs its setup to have run.
  setupFunc: stockKernelSetup(AvgPoolGrad),
  // The registry's KernelFunc takes an untyped backend; ours needs wasm's.
  kernelFunc: avgPoolGrad as unknown as KernelFunc,
};
