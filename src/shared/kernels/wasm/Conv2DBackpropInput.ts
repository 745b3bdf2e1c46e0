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
 * largest phase's width. The row phases are interleaved into dx by row
 * copies, which also crop to the input size.
 */
import {
  backend_util,
  Concat,
  Conv2D,
  Conv2DBackpropInput,
  Conv2DBackpropInputAttrs,
  Conv2DBackpropInputInputs,
  Fill,
  KernelConfig,
  KernelFunc,
  NamedTensorInfoMap,
  PadV2,
  Reverse,
  StridedSlice,
  TensorInfo,
  Transpose,
} from '@tensorflow/tfjs-core';

import {
  copyRuns,
  fillRuns,
  getStockKernel,
  runKernel,
  runStockKernel,
  required,
  Scratch,
  WasmKernelArgs,
  windowNHWC,
} from './kernel_utils.js';
import {PhasePlan, planPhases} from './transposed_conv_plan.js';

/**
 * Flipped, in/out-swapped taps of row phase bh, with the column phases
 * concatenated along the output channels: [tapsH, maxTapsW, co, sw*ci].
 */
function phaseFilter(
    s: Scratch, flipped: TensorInfo, bh: number, ph: PhasePlan,
    pw: PhasePlan): TensorInfo {
  const [kh, kw, co, ci] = flipped.shape;
  const th = ph.taps[bh];
  const parts: TensorInfo[] = [];
  for (let bw = 0; bw < pw.stride; bw++) {
    const tw = pw.taps[bw];
    if (tw === 0) {
      parts.push(s.run(
          Fill, {}, {shape: [th, pw.maxTaps, co, ci], value: 0,
                     dtype: 'float32'}));
      continue;
    }
    // Taps k = s*a + b, flipped: flipped[start + s*t] with
    // start = k - 1 - b - s*(taps - 1).
    let part = flipped;
    if (ph.stride > 1 || pw.stride > 1) {
      part = s.run(StridedSlice, {x: flipped}, {
        begin: [kh - 1 - bh - ph.stride * (th - 1),
                kw - 1 - bw - pw.stride * (tw - 1), 0, 0],
        end: [kh, kw, co, ci],
        strides: [ph.stride, pw.stride, 1, 1],
        beginMask: 0,
        endMask: 0,
        ellipsisMask: 0,
        newAxisMask: 0,
        shrinkAxisMask: 0,
      });
    }
    if (tw < pw.maxTaps) {
      part = s.run(PadV2, {x: part}, {
        paddings: [[0, 0], [pw.maxTaps - tw, 0], [0, 0], [0, 0]],
        constantValue: 0,
      });
    }
    parts.push(part);
  }
  return parts.length === 1 ?
      parts[0] :
      s.run(Concat, parts as unknown as NamedTensorInfoMap, {axis: 3});
}

/**
 * Stride-1 correlation of dy with `filter` giving the phase outputs
 * [N, ph.count, pw.count, filter.shape[3]]; negative paddings crop dy.
 */
function phaseConv(
    s: Scratch, dy: TensorInfo, filter: TensorInfo, padTop: number,
    padBottom: number, padLeft: number, padRight: number): TensorInfo|null {
  const [, oh, ow] = dy.shape;
  const cropT = Math.max(0, -padTop), cropB = Math.max(0, -padBottom);
  const cropL = Math.max(0, -padLeft), cropR = Math.max(0, -padRight);
  const hIn = oh - cropT - cropB, wIn = ow - cropL - cropR;
  if (hIn <= 0 || wIn <= 0) {
    return null;  // dy does not reach this phase: its outputs are zero.
  }
  const dyc = windowNHWC(s, dy, cropT, hIn, cropL, wIn);
  return s.run(Conv2D, {x: dyc, filter}, {
    strides: [1, 1],
    pad: [
      [0, 0], [Math.max(0, padTop), Math.max(0, padBottom)],
      [Math.max(0, padLeft), Math.max(0, padRight)], [0, 0]
    ],
    dataFormat: 'NHWC',
    dilations: [1, 1],
  });
}

export function conv2DBackpropInput(args: WasmKernelArgs<
                                    Conv2DBackpropInputInputs,
                                    Conv2DBackpropInputAttrs>): TensorInfo {
  const {inputs, backend, attrs} = args;
  const dy = required(inputs.dy, 'dy');
  const filter = required(inputs.filter, 'filter');
  const {strides, pad, dataFormat, dimRoundingMode, inputShape} = attrs;
  if (dataFormat === 'NCHW') {
    // Rare layout: the stock kernel supports it (slowly).
    return runStockKernel(Conv2DBackpropInput, backend, inputs, attrs);
  }
  const info = backend_util.computeConv2DInfo(
      inputShape, filter.shape as [number, number, number, number], strides,
      1, pad, dimRoundingMode, false, 'channelsLast');
  const {
    batchSize: n,
    inHeight: h,
    inWidth: w,
    inChannels: ci,
    outHeight: oh,
    outWidth: ow,
    filterHeight: kh,
    filterWidth: kw,
    strideHeight: sh,
    strideWidth: sw,
  } = info;
  if (dy.shape[1] !== oh || dy.shape[2] !== ow) {
    throw new Error(
        `${Conv2DBackpropInput}: dy shape ${dy.shape} does not match the ` +
        `forward output [${n}, ${oh}, ${ow}, ${info.outChannels}]`);
  }
  const ph = planPhases(h, oh, kh, sh, info.padInfo.top);
  const pw = planPhases(w, ow, kw, sw, info.padInfo.left);

  const s = new Scratch(backend);
  try {
    const flipped = s.run(
        Reverse,
        {x: s.run(Transpose, {x: filter}, {perm: [0, 1, 3, 2]})},
        {dims: [0, 1]});
    const padL = pw.padBefore(pw.maxTaps);
    if (sh === 1 && sw === 1) {
      const out = phaseConv(
          s, dy, flipped, ph.padBefore(kh), ph.padAfter, padL, pw.padAfter);
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
      const out = th === 0 ? null :
                             phaseConv(
                                 s, dy, phaseFilter(s, flipped, bh, ph, pw),
                                 ph.padBefore(th), ph.padAfter, padL,
                                 pw.padAfter);
      for (let b = 0; b < n; b++) {
        const dst = (b * h + h0) * rowLen;
        if (out == null) {
          fillRuns(backend, dx, dst, sh * rowLen, rowLen, rows);
          continue;
        }
        // Phase row m holds dx rows interleaved along the width already.
        const m0 = (h0 + ph.start - bh) / sh;
        const srcRow = pw.count * sw * ci;
        copyRuns(
            backend, out, (b * ph.count + m0) * srcRow + pw.start * ci, srcRow,
            dx, dst, sh * rowLen, rowLen, rows);
      }
      if (out != null) {
        s.free(out);
      }
    }
    return dx;
  } finally {
    s.dispose();
  }
}

function zeros(s: Scratch, shape: number[]): TensorInfo {
  return s.run(Fill, {}, {shape, value: 0, dtype: 'float32'});
}

export const conv2DBackpropInputConfig: KernelConfig = {
  kernelName: Conv2DBackpropInput,
  backendName: 'wasm',
  // Run the stock kernel's setup so that delegating to it works.
  setupFunc: (backend: {}) => {
    getStockKernel(Conv2DBackpropInput)?.setupFunc?.(backend);
  },
  // The registry's KernelFunc takes an untyped backend; ours needs wasm's.
  kernelFunc: conv2DBackpropInput as unknown as KernelFunc,
};

