/**
 * MaxPoolGrad for the wasm backend.
 *
 * The stock kernel is 30-70x slower than MaxPool, and the native
 * MaxPoolWithArgmax cannot replace it: it starts its running max at FLT_MIN,
 * so windows whose values are all <= 0 (common after ReLU) get a wrong index.
 *
 * Composition, exact and with the cpu backend's tie rule (first maximum in
 * row-major window order):
 *  - pad x with -inf onto a grid whose sides are multiples of the stride and
 *    split it into stride phases; window tap (p, q) of output (i, j) is then
 *    phase (p mod sh, q mod sw) at (i + p div sh, j + q div sw), i.e. a plain
 *    crop of the phase image;
 *  - for each tap in window order, the tap takes the still-unrouted
 *    gradient where it equals the pooled output (mask from Step(max - tap),
 *    exact for floats), which is then cleared so later ties get nothing;
 *  - each tap's contribution is zero-padded back to its phase position and
 *    summed per phase (PadV2, Add); the phases are interleaved into dx.
 */
import {
  Add,
  backend_util,
  KernelConfig,
  KernelFunc,
  MaxPoolGrad,
  MaxPoolGradAttrs,
  MaxPoolGradInputs,
  Multiply,
  Step,
  Sub,
  TensorInfo,
} from '@tensorflow/tfjs-core';

import { interleavePhasesNHWC, phaseNHWC, windowNHWC } from './heap_layout.js';
import { phaseGridSize, required, shortGeometry, runStockKernel, stockKernelSetup, WasmKernelArgs } from './kernel_utils.js';
import { withScratch } from './scratch.js';

export function maxPoolGrad(args: WasmKernelArgs<MaxPoolGradInputs, MaxPoolGradAttrs>): TensorInfo {
  const { inputs, backend, attrs } = args;
  const dy = required(inputs.dy, 'dy');
  const input = required(inputs.input, 'input');
  const output = required(inputs.output, 'output');
  const { filterSize, strides, pad, dimRoundingMode } = attrs;
  if (input.dtype !== 'float32' || dy.dtype !== 'float32') {
    return runStockKernel(MaxPoolGrad, backend, inputs, attrs);
  }
  const info = backend_util.computePool2DInfo(input.shape as [number, number, number, number], filterSize, strides, 1, pad, dimRoundingMode);
  const g = shortGeometry(info);
  const { n, h, w, c, kh, kw, oh, ow, sh, sw, pt, pl } = g;
  const [hq, wq] = phaseGridSize(g);

  return withScratch(backend, (s) => {
    const xq = windowNHWC(s, input, -pt, sh * hq, -pl, sw * wq, -Infinity);
    const phaseX: Array<Array<TensorInfo | null>> = Array.from({ length: sh }, () => new Array<TensorInfo | null>(sw).fill(null));
    const phaseDx: Array<Array<TensorInfo | null>> = Array.from({ length: sh }, () => new Array<TensorInfo | null>(sw).fill(null));
    let remaining = dy;
    for (let p = 0; p < kh; p++) {
      for (let q = 0; q < kw; q++) {
        const bh = p % sh,
          bw = q % sw;
        const ah = (p - bh) / sh,
          aw = (q - bw) / sw;
        const px = phaseX[bh][bw] ?? phaseNHWC(s, xq, sh, sw, bh, bw);
        phaseX[bh][bw] = px;
        const taps = windowNHWC(s, px, ah, oh, aw, ow);
        // gap = max - tap >= 0 is exactly 0 where the tap is a maximum, so
        // Step(gap) is 0 there and 1 elsewhere (also for -inf padding).
        const gap = s.run(Sub, { a: output, b: taps });
        if (taps !== px) {
          s.free(taps);
        }
        const notMax = s.run(Step, { x: gap }, { alpha: 0 });
        s.free(gap);
        const kept = s.run(Multiply, { a: remaining, b: notMax });
        s.free(notMax);
        const routed = s.run(Sub, { a: remaining, b: kept });
        if (remaining !== dy) {
          s.free(remaining);
        }
        remaining = kept;
        const placed = windowNHWC(s, routed, -ah, hq, -aw, wq);
        const prev = phaseDx[bh][bw];
        phaseDx[bh][bw] = prev == null ? placed : s.run(Add, { a: prev, b: placed });
        if (prev != null) {
          s.free(prev);
          s.free(placed);
        }
        if (placed !== routed) {
          s.free(routed);
        }
      }
    }
    return s.release(interleavePhasesNHWC(s, phaseDx, [n, h, w, c], pt, pl));
  });
}

export const maxPoolGradConfig: KernelConfig = {
  kernelName: MaxPoolGrad,
  backendName: 'wasm',
  // We delegate to the stock kernel, which needs its setup to have run.
  setupFunc: stockKernelSetup(MaxPoolGrad),
  // The registry's KernelFunc takes an untyped backend; ours needs wasm's.
  kernelFunc: maxPoolGrad as unknown as KernelFunc,
};
