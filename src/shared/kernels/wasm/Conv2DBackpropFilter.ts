/**
 * Conv2DBackpropFilter for the wasm backend (which has none).
 *
 * dW[kh, kw, ci, co] = sum over (n, oh, ow) of
 *   xpad[n, s*oh + kh, s*ow + kw, ci] * dy[n, oh, ow, co]
 *
 * computed as one matmul colsT[K, L] @ dy[L, co] with K = kh*kw*ci, whose
 * [K, co] result is already HWIO. colsT is the transposed im2col matrix, built
 * without per-element work:
 *  - pad x spatially (PadV2) so that its height/width are multiples of the
 *    stride s, and split it into stride phases (row phase by row copies; the
 *    column phase stays folded into the channels: [.., Wq, s*ci]);
 *  - transpose each row phase to channel-major [s*ci, N*Hq*Wq] (Transpose);
 *  - in a phase image every tap is a stride-1 shift, i.e. a flat offset
 *    o = ah*Wq + aw, so the tap's rows of colsT are contiguous copies of the
 *    phase rows starting at o (one memmove per channel per tap);
 *  - dy is zero-padded to the phase grid [N, Hq, Wq, co] (PadV2) so that the
 *    flat index of dy matches the flat index of the shifted phase image; the
 *    padded entries are zero and cancel the wrapped-around columns.
 * For 1x1 stride-1 unpadded convs this is transpose(x) @ dy (no im2col).
 */
import {
  backend_util,
  BatchMatMul,
  Conv2DBackpropFilter,
  Conv2DBackpropFilterAttrs,
  Conv2DBackpropFilterInputs,
  KernelConfig,
  KernelFunc,
  Reshape,
  TensorInfo,
  Transpose,
} from '@tensorflow/tfjs-core';

import {
  assertNHWC,
  copyRuns,
  fillRuns,
  runKernel,
  required,
  Scratch,
  WasmKernelArgs,
  windowNHWC,
} from './kernel_utils.js';

type Shape4 = [number, number, number, number];

export function conv2DBackpropFilter(
    args: WasmKernelArgs<Conv2DBackpropFilterInputs, Conv2DBackpropFilterAttrs>):
    TensorInfo {
  const {inputs, backend, attrs} = args;
  const x = required(inputs.x, 'x');
  const dy = required(inputs.dy, 'dy');
  const {strides, pad, dataFormat, dimRoundingMode, filterShape} = attrs;
  assertNHWC(dataFormat, Conv2DBackpropFilter);
  const info = backend_util.computeConv2DInfo(
      x.shape as Shape4, filterShape, strides, 1, pad, dimRoundingMode,
      false, 'channelsLast');
  const {
    batchSize: n,
    inHeight: h,
    inWidth: w,
    inChannels: ci,
    outHeight: oh,
    outWidth: ow,
    outChannels: co,
    filterHeight: kh,
    filterWidth: kw,
    strideHeight: sh,
    strideWidth: sw,
  } = info;
  if (dy.shape[1] !== oh || dy.shape[2] !== ow || dy.shape[3] !== co) {
    throw new Error(
        `${Conv2DBackpropFilter}: dy shape ${dy.shape} does not match ` +
        `[${n}, ${oh}, ${ow}, ${co}]`);
  }
  const pt = info.padInfo.top;
  const pl = info.padInfo.left;

  // Phase grid: xpad[s*q + b] = phase_b[q]; a tap k = s*a + b reads
  // phase_b[o + a] for output o, so the grid needs o + a < Hq.
  const ah = Math.ceil(kh / sh);
  const aw = Math.ceil(kw / sw);
  const hq = Math.max(Math.ceil((pt + h) / sh), oh + ah - 1);
  const wq = Math.max(Math.ceil((pl + w) / sw), ow + aw - 1);
  const len = n * hq * wq;
  const taps = kh * kw;

  const s = new Scratch(backend);
  try {
    const xq = windowNHWC(s, x, -pt, sh * hq, -pl, sw * wq);
    // colsT[t*ci + c, l]: tap t, channel c, flat phase position l.
    let colsT: TensorInfo|null = null;
    const phaseWidth = sw * ci;
    const rowLen = wq * phaseWidth;
    for (let bh = 0; bh < Math.min(sh, kh); bh++) {
      let rows = xq;
      if (sh > 1) {
        rows = s.alloc([n * hq, rowLen]);
        copyRuns(
            backend, xq, bh * rowLen, sh * rowLen, rows, 0, rowLen, rowLen,
            n * hq);
      }
      const xT = s.run(
          Transpose, {x: s.view(rows, [len, phaseWidth])}, {perm: [1, 0]});
      if (rows !== xq) {
        s.free(rows);
      }
      if (taps === 1 && sw === 1) {
        colsT = xT;  // 1x1 (any stride): the phase image is the im2col.
        break;
      }
      colsT = colsT ?? s.alloc([taps * ci, len]);
      for (let kRow = bh; kRow < kh; kRow += sh) {
        for (let kCol = 0; kCol < kw; kCol++) {
          const bw = kCol % sw;
          const o = Math.floor(kRow / sh) * wq + Math.floor(kCol / sw);
          const row0 = (kRow * kw + kCol) * ci;
          copyRuns(
              backend, xT, bw * ci * len + o, len, colsT, row0 * len, len,
              len - o, ci);
          fillRuns(backend, colsT, row0 * len + len - o, len, o, ci);
        }
      }
      s.free(xT);
    }
    if (colsT == null) {
      throw new Error(`${Conv2DBackpropFilter}: empty filter`);
    }
    const dyq = windowNHWC(s, dy, 0, hq, 0, wq);
    const grad = s.run(
        BatchMatMul, {a: colsT, b: s.view(dyq, [len, co])},
        {transposeA: false, transposeB: false});
    return runKernel(Reshape, backend, {x: grad}, {shape: filterShape});
  } finally {
    s.dispose();
  }
}

export const conv2DBackpropFilterConfig: KernelConfig = {
  kernelName: Conv2DBackpropFilter,
  backendName: 'wasm',
  // The registry's KernelFunc takes an untyped backend; ours needs wasm's.
  kernelFunc: conv2DBackpropFilter as unknown as KernelFunc,
};
