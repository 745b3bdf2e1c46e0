/**
 * Conv2DBackpropInput for the wasm backend, replacing the stock kernel
 * (a naive loop, ~1 GFLOP/s) with stride-1 Conv2D calls (XNNPACK).
 *
 * Stride 1: dx = conv2d(dy, flip(W) with in/out swapped), with paddings
 * derived from the forward conv's pad info (negative ones become crops).
 *
 * Stride s > 1: instead of convolving a zero-inserted dy (s*s times the
 * work), split dx into stride phases (see transposed_conv_plan.ts). Each row
 * phase bh is one Conv2D whose output channels hold the s column phases
 * side by side ([.., Mw, s*ci] == [.., Mw*s, ci], i.e. already interleaved
 * along the width); the filter of column phase bw is zero-padded to the
 * largest phase's width (filters are assembled by block copies). The row phases are interleaved into dx by row
 * copies, which also crop to the input size.
 */
import {
  backend_util,
  Conv2D,
  Conv2DBackpropInput,
  Conv2DBackpropInputAttrs,
  Conv2DBackpropInputInputs,
  Fill,
  KernelConfig,
  KernelFunc,
  TensorInfo,
  Transpose,
} from '@tensorflow/tfjs-core';

import { copyRuns, fillRuns, windowNHWC } from './heap_layout.js';
import { runStockKernel, required, shortGeometry, stockKernelSetup, WasmKernelArgs } from './kernel_utils.js';
import { Scratch, withScratch } from './scratch.js';
import { PhasePlan, planPhases } from './transposed_conv_plan.js';
import { GdpError } from '../../errors.js';

/**
 * Flipped, in/out-swapped taps of row phase bh, with the column phases
 * side by side along the output channels: [tapsH, maxTapsW, co, sw*ci].
 * Column phase bw's taps are right-aligned (zero taps in front). Built by
 * block copies from `swapped` = filter as [kh, kw, co, ci]; the stock
 * StridedSlice/Reverse kernels cost milliseconds even on filters.
 */
function phaseFilter(s: Scratch, swapped: TensorInfo, bh: number, ph: PhasePlan, pw: PhasePlan): TensorInfo {
  const [, kw, co, ci] = swapped.shape;
  const th = ph.taps[bh];
  const width = pw.maxTaps;
  const sw = pw.stride;
  const out = s.alloc([th, width, co, sw * ci]);
  if (pw.taps.some((t) => t < width)) {
    fillRuns(s.backend, out, 0, 0, th * width * co * sw * ci, 1);
  }
  // Flipped tap t of phase b is kernel tap b + s*(taps - 1 - t).
  for (let t = 0; t < th; t++) {
    const p = bh + ph.stride * (th - 1 - t);
    for (let bw = 0; bw < sw; bw++) {
      const tw = pw.taps[bw];
      for (let u = 0; u < tw; u++) {
        const q = bw + sw * (tw - 1 - u);
        const slot = width - tw + u;
        copyRuns(s.backend, swapped, (p * kw + q) * co * ci, ci, out, (t * width + slot) * co * sw * ci + bw * ci, sw * ci, ci, co);
      }
    }
  }
  return out;
}

/**
 * Stride-1 correlation of dy with `filter` giving the phase outputs
 * [N, ph.count, pw.count, filter.shape[3]]; negative paddings crop dy.
 */
function phaseConv(s: Scratch, dy: TensorInfo, filter: TensorInfo, padTop: number, padBottom: number, padLeft: number, padRight: number): TensorInfo | null {
  const [, oh, ow] = dy.shape;
  const cropT = Math.max(0, -padTop),
    cropB = Math.max(0, -padBottom);
  const cropL = Math.max(0, -padLeft),
    cropR = Math.max(0, -padRight);
  const hIn = oh - cropT - cropB,
    wIn = ow - cropL - cropR;
  if (hIn <= 0 || wIn <= 0) {
    return null; // dy does not reach this phase: its outputs are zero.
  }
  const dyc = windowNHWC(s, dy, cropT, hIn, cropL, wIn);
  return s.run(
    Conv2D,
    { x: dyc, filter },
    {
      strides: [1, 1],
      pad: [
        [0, 0],
        [Math.max(0, padTop), Math.max(0, padBottom)],
        [Math.max(0, padLeft), Math.max(0, padRight)],
        [0, 0],
      ],
      dataFormat: 'NHWC',
      dilations: [1, 1],
    },
  );
}

export function conv2DBackpropInput(args: WasmKernelArgs<Conv2DBackpropInputInputs, Conv2DBackpropInputAttrs>): TensorInfo {
  const { inputs, backend, attrs } = args;
  const dy = required(inputs.dy, 'dy');
  const filter = required(inputs.filter, 'filter');
  const { strides, pad, dataFormat, dimRoundingMode, inputShape } = attrs;
  if (dataFormat === 'NCHW') {
    // Rare layout: the stock kernel supports it (slowly).
    return runStockKernel(Conv2DBackpropInput, backend, inputs, attrs);
  }
  const info = backend_util.computeConv2DInfo(
    inputShape,
    filter.shape as [number, number, number, number],
    strides,
    1,
    pad,
    dimRoundingMode,
    false,
    'channelsLast',
  );
  const { n, h, w, c: ci, oh, ow, co, kh, kw, sh, sw, pt, pl } = shortGeometry(info);
  if (dy.shape[1] !== oh || dy.shape[2] !== ow) {
    throw new GdpError('SHAPE_MISMATCH', `${Conv2DBackpropInput}: dy shape ${dy.shape} does not match the ` + `forward output [${n}, ${oh}, ${ow}, ${co}]`);
  }
  const ph = planPhases(h, oh, kh, sh, pt);
  const pw = planPhases(w, ow, kw, sw, pl);

  return withScratch(backend, (s) => {
    const swapped = s.run(Transpose, { x: filter }, { perm: [0, 1, 3, 2] });
    const padL = pw.padBefore(pw.maxTaps);
    if (sh === 1 && sw === 1) {
      const out = phaseConv(s, dy, phaseFilter(s, swapped, 0, ph, pw), ph.padBefore(kh), ph.padAfter, padL, pw.padAfter);
      if (out == null) {
        return s.release(zeros(s, [n, h, w, ci]));
      }
      // Stride 1: the single phase covers dx exactly (start 0, count = H).
      return s.release(out);
    }
    const dx = backend.makeOutput([n, h, w, ci], 'float32');
    const rowLen = w * ci;
    for (let bh = 0; bh < sh; bh++) {
      const h0 = (((bh - ph.start) % sh) + sh) % sh;
      if (h0 >= h) {
        continue;
      }
      const rows = Math.ceil((h - h0) / sh);
      const th = ph.taps[bh];
      const out = th === 0 ? null : phaseConv(s, dy, phaseFilter(s, swapped, bh, ph, pw), ph.padBefore(th), ph.padAfter, padL, pw.padAfter);
      for (let b = 0; b < n; b++) {
        const dst = (b * h + h0) * rowLen;
        if (out == null) {
          fillRuns(backend, dx, dst, sh * rowLen, rowLen, rows);
          continue;
        }
        // Phase row m holds dx rows interleaved along the width already.
        const m0 = (h0 + ph.start - bh) / sh;
        const srcRow = pw.count * sw * ci;
        copyRuns(backend, out, (b * ph.count + m0) * srcRow + pw.start * ci, srcRow, dx, dst, sh * rowLen, rowLen, rows);
      }
      if (out != null) {
        s.free(out);
      }
    }
    return dx;
  });
}

function zeros(s: Scratch, shape: number[]): TensorInfo {
  return s.run(Fill, {}, { shape, value: 0, dtype: 'float32' });
}

export const conv2DBackpropInputConfig: KernelConfig = {
  kernelName: Conv2DBackpropInput,
  backendName: 'wasm',
  // We delegate to the stock kernel, which needs its setup to have run.
  setupFunc: stockKernelSetup(Conv2DBackpropInput),
  // The registry's KernelFunc takes an untyped backend; ours needs wasm's.
  kernelFunc: conv2DBackpropInput as unknown as KernelFunc,
};
