/**
 * Conv2DBackpropFilter for the wasm backend (which has none).
 *
 * dW[kh, kw, ci, co] = sum over (n, oh, ow) of
 *   xpad[n, s*oh + kh, s*ow + kw, ci] * dy[n, oh, ow, co]
 *
 * im2col path: colsT[K, L] @ dy[L, co] with K = kh*kw*ci, whose [K, co]
 * result is already HWIO. colsT is the transposed im2col matrix, built
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
 *    padded entries are zero and cancel the wrapped-around columns;
 *  - the reduction over L runs in cache-sized chunks (one BatchMatMul each,
 *    summed with Add), the chunk of colsT being built just before its use.
 * 1x1 kernels skip im2col (see pointwiseProduct).
 *
 * swapped path (deep stages: small OH*OW, large batch): a forward Conv2D
 * with batch and channels exchanged, see swappedConv.
 */
import {
  Add,
  backend_util,
  BatchMatMul,
  Conv2D,
  Conv2DBackpropFilter,
  Conv2DBackpropFilterAttrs,
  Conv2DBackpropFilterInputs,
  KernelConfig,
  KernelFunc,
  Reshape,
  TensorInfo,
  Transpose,
} from '@tensorflow/tfjs-core';

import { conv2DOptions } from './Conv2D.js';
import { conv2DBackpropFilterWinograd, winogradFilterGradApplies } from './Conv2DBackpropFilterWinograd.js';
import { copyRuns, fillRuns, padChannels, windowNHWC } from './heap_layout.js';
import { assertNHWC, phaseGridSize, runKernel, required, shortGeometry, WasmKernelArgs } from './kernel_utils.js';
import { Scratch, withScratch } from './scratch.js';
import { SimdKernels, simdKernels } from './simd/module.js';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { GdpError } from '../../errors.js';

type Shape4 = [number, number, number, number];

export function conv2DBackpropFilter(args: WasmKernelArgs<Conv2DBackpropFilterInputs, Conv2DBackpropFilterAttrs>): TensorInfo {
  const { inputs, backend, attrs } = args;
  const x = required(inputs.x, 'x');
  const dy = required(inputs.dy, 'dy');
  const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs;
  assertNHWC(dataFormat, Conv2DBackpropFilter);
  const info = backend_util.computeConv2DInfo(x.shape as Shape4, filterShape, strides, 1, pad, dimRoundingMode, false, 'channelsLast');
  const g = shortGeometry(info);
  const { n, h, w, c: ci, oh, ow, co, kh, kw, sh, sw, pt, pl } = g;
  if (dy.shape[1] !== oh || dy.shape[2] !== ow || dy.shape[3] !== co) {
    throw new GdpError('SHAPE_MISMATCH', `${Conv2DBackpropFilter}: dy shape ${dy.shape} does not match ` + `[${n}, ${oh}, ${ow}, ${co}]`);
  }
  const [hq, wq] = phaseGridSize(g);
  const len = n * hq * wq;
  const taps = kh * kw;

  const simd = simdKernels(backend);
  let strategy = conv2DBackpropFilterOptions.strategy;
  if (strategy === 'auto') strategy = simd != null ? 'simd' : 'xnnpack';
  if (strategy === 'xnnpack') {
    strategy = taps > 1 && n >= SWAPPED_MIN_BATCH && oh * ow <= SWAPPED_MAX_OUT_PIXELS ? 'swapped' : 'im2col';
  }
  if (strategy === 'simd' && simd != null) {
    if (conv2DOptions.winograd && winogradFilterGradApplies(g)) {
      const dw = conv2DBackpropFilterWinograd(backend, simd, x, dy, g, filterShape);
      if (dw != null) return dw;
    }
    return outerProductSum(backend, simd, x, dy, info, filterShape);
  }
  if (strategy === 'swapped') {
    return swappedConv(backend, x, dy, info, filterShape);
  }

  return withScratch(backend, (s) => {
    const xq = windowNHWC(s, x, -pt, sh * hq, -pl, sw * wq);
    const dyq = windowNHWC(s, dy, 0, hq, 0, wq);
    const phaseWidth = sw * ci;
    const rowLen = wq * phaseWidth;
    if (taps === 1) {
      // 1x1: the row phase, with the column phases folded into its channels
      // ([len, sw*ci]), is the im2col matrix; the extra column phases cost a
      // wider (small) product instead of a pixel-by-pixel extraction.
      let rows = xq;
      if (sh > 1) {
        rows = s.alloc([n * hq, rowLen]);
        copyRuns(backend, xq, 0, sh * rowLen, rows, 0, rowLen, rowLen, n * hq);
      }
      const grad = pointwiseProduct(s, s.view(rows, [len, phaseWidth]), s.view(dyq, [len, co]));
      if (sw === 1) {
        return runKernel(Reshape, backend, { x: grad }, { shape: filterShape });
      }
      const out = backend.makeOutput(filterShape, 'float32');
      copyRuns(backend, grad, 0, ci * co, out, 0, ci * co, ci * co, 1);
      return out;
    }
    // Channel-major row phases: phases[bh] is [sw*ci, len], row bw*ci + c
    // holding channel c of column phase bw.
    const phases: TensorInfo[] = [];
    for (let bh = 0; bh < Math.min(sh, kh); bh++) {
      let rows = xq;
      if (sh > 1) {
        rows = s.alloc([n * hq, rowLen]);
        copyRuns(backend, xq, bh * rowLen, sh * rowLen, rows, 0, rowLen, rowLen, n * hq);
      }
      phases.push(s.run(Transpose, { x: s.view(rows, [len, phaseWidth]) }, { perm: [1, 0] }));
      if (rows !== xq) {
        s.free(rows);
      }
    }
    // The reduction over len is split into chunks whose im2col block and dy
    // rows ([k + co] floats per position) stay in cache; a single [K, len] @ [len, co] product is bound by
    // memory traffic (it streams the whole im2col matrix once per 8 output
    // columns).
    const k = taps * ci;
    const chunk = chunkRows(len, k + co);
    const block = s.alloc([k * chunk]);
    const acc = sumOverChunks(s, len, chunk, (l0, lc) => {
      for (let kRow = 0; kRow < kh; kRow++) {
        const phase = phases[kRow % sh];
        for (let kCol = 0; kCol < kw; kCol++) {
          const bw = kCol % sw;
          const o = Math.floor(kRow / sh) * wq + Math.floor(kCol / sw);
          const dst = (kRow * kw + kCol) * ci * lc;
          // Columns at or past len - o read past the phase row; they meet
          // zero rows of dyq, so they are zero-filled instead.
          const valid = Math.max(0, Math.min(lc, len - o - l0));
          copyRuns(backend, phase, bw * ci * len + o + l0, len, block, dst, lc, valid, ci);
          fillRuns(backend, block, dst + valid, lc, lc - valid, ci);
        }
      }
      const a = s.subView(block, 0, [k, lc]);
      const b = s.subView(dyq, l0 * co, [lc, co]);
      const part = s.run(BatchMatMul, { a, b }, { transposeA: false, transposeB: false });
      s.dropView(a);
      s.dropView(b);
      return part;
    });
    return runKernel(Reshape, backend, { x: acc }, { shape: filterShape });
  });
}

/**
 * xm^T @ dym for xm [M, cx] and dym [M, co] (1x1 filter gradients), in
 * cache-sized chunks of rows: each chunk (a zero-copy sub-view) is
 * transposed while in cache, so nothing is transposed or copied as a whole.
 * The wider operand is transposed and streamed (A); the narrower one is
 * XNNPACK's packed B, which then stays small in cache. Returns [cx, co].
 */
function pointwiseProduct(s: Scratch, xm: TensorInfo, dym: TensorInfo): TensorInfo {
  const [m, cx] = xm.shape;
  const co = dym.shape[1];
  const swap = co > cx;
  const [left, right] = swap ? [dym, xm] : [xm, dym];
  const cl = swap ? co : cx,
    cr = swap ? cx : co;
  const acc = sumOverChunks(s, m, chunkRows(m, cx + co), (l0, lc) => {
    const rows = s.subView(left, l0 * cl, [lc, cl]);
    const a = s.run(Transpose, { x: rows }, { perm: [1, 0] });
    s.dropView(rows);
    const b = s.subView(right, l0 * cr, [lc, cr]);
    const part = s.run(BatchMatMul, { a, b }, { transposeA: false, transposeB: false });
    s.dropView(b);
    s.free(a);
    return part;
  });
  return swap ? s.run(Transpose, { x: acc }, { perm: [1, 0] }) : acc;
}

/**
 * Rows per chunk of a reduction over `len` rows of `floatsPerRow` floats,
 * sized so that a chunk's operands stay in cache (at least 64 rows).
 */
function chunkRows(len: number, floatsPerRow: number): number {
  return Math.max(64, Math.min(len, Math.floor(conv2DBackpropFilterOptions.chunkFloats / floatsPerRow)));
}

/**
 * Sum of `part(l0, lc)` over the chunks [l0, l0 + lc) of [0, len), each
 * partial result freed once added.
 */
function sumOverChunks(s: Scratch, len: number, chunk: number, part: (l0: number, lc: number) => TensorInfo): TensorInfo {
  let acc: TensorInfo | null = null;
  for (let l0 = 0; l0 < len; l0 += chunk) {
    const p = part(l0, Math.min(chunk, len - l0));
    if (acc == null) {
      acc = p;
    } else {
      const sum = s.run(Add, { a: acc, b: p });
      s.free(acc);
      s.free(p);
      acc = sum;
    }
  }
  if (acc == null) {
    throw new GdpError('INTERNAL', `${Conv2DBackpropFilter}: empty reduction`);
  }
  return acc;
}

/**
 * The filter gradient as a forward Conv2D with batch and channels swapped:
 * x as [ci, H, W, N] (ci images of N channels), dy as an [OH, OW, N, co]
 * filter applied with dilation = stride, giving [ci, kh, kw, co]. XNNPACK
 * runs this well when N is large and OH*OW small (deep ResNet stages),
 * where the im2col path wastes work on its padded phase grid.
 */
function swappedConv(backend: BackendWasm, x: TensorInfo, dy: TensorInfo, info: backend_util.Conv2DInfo, filterShape: number[]): TensorInfo {
  const { h, w, oh, ow, kh, kw, sh, sw, pt, pl } = shortGeometry(info);
  // Rows read: pt + H + pb = kh + sh*(oh - 1); a negative pb crops x.
  const pb = kh + sh * (oh - 1) - h - pt;
  const pr = kw + sw * (ow - 1) - w - pl;
  return withScratch(backend, (s) => {
    const xs = s.run(Transpose, { x }, { perm: [3, 1, 2, 0] });
    const xc = windowNHWC(s, xs, 0, h + Math.min(0, pb), 0, w + Math.min(0, pr));
    const f = s.run(Transpose, { x: dy }, { perm: [1, 2, 0, 3] });
    const g = s.run(
      Conv2D,
      { x: xc, filter: f },
      {
        strides: [1, 1],
        pad: [
          [0, 0],
          [pt, Math.max(0, pb)],
          [pl, Math.max(0, pr)],
          [0, 0],
        ],
        dataFormat: 'NHWC',
        dilations: [sh, sw],
      },
    );
    const out = s.run(Transpose, { x: g }, { perm: [1, 2, 0, 3] });
    return runKernel(Reshape, backend, { x: out }, { shape: filterShape });
  });
}

/**
 * The filter gradient straight from x and dy in NHWC, without im2col,
 * padding or packing: for every tap, a SIMD kernel accumulates 4x8 blocks
 * of dW over the output pixels whose tap reads inside x (padding
 * contributes nothing, so those pixels are skipped, not zero-filled).
 * Channel counts are padded to multiples of 4 (x) and 8 (dy) when needed;
 * images are processed in groups whose x and dy stay in cache while every tap
 * and block of dW passes over them.
 */
function outerProductSum(
  backend: BackendWasm,
  simd: SimdKernels,
  x: TensorInfo,
  dy: TensorInfo,
  info: backend_util.Conv2DInfo,
  filterShape: number[],
): TensorInfo {
  const { n, h, w, c: ci, oh, ow, co, kh, kw, sh, sw, pt, pl } = shortGeometry(info);
  return withScratch(backend, (s) => {
    const c4 = Math.ceil(ci / 4) * 4,
      o8 = Math.ceil(co / 8) * 8;
    const xs = padChannels(s, x, c4);
    const dys = padChannels(s, dy, o8);
    const taps = kh * kw;
    const grad = ci === c4 && co === o8 ? backend.makeOutput(filterShape, 'float32') : s.alloc([taps * c4 * o8]);
    fillRuns(backend, grad, 0, 0, taps * c4 * o8, 1);
    const F = Float32Array.BYTES_PER_ELEMENT;
    const xBase = backend.getMemoryOffset(xs.dataId);
    const dyBase = backend.getMemoryOffset(dys.dataId);
    const wBase = backend.getMemoryOffset(grad.dataId);
    const xImage = h * w * c4 * F,
      dyImage = oh * ow * o8 * F;
    const group = Math.max(1, Math.min(n, Math.floor(conv2DBackpropFilterOptions.groupBytes / (xImage + dyImage))));
    for (let n0 = 0; n0 < n; n0 += group) {
      const images = Math.min(group, n - n0);
      for (let a = 0; a < kh; a++) {
        // Output rows whose tap row sh*i + a - pt lies inside x.
        const i0 = Math.max(0, Math.ceil((pt - a) / sh));
        const i1 = Math.min(oh, Math.floor((h - 1 + pt - a) / sh) + 1);
        if (i1 <= i0) continue;
        for (let b = 0; b < kw; b++) {
          const j0 = Math.max(0, Math.ceil((pl - b) / sw));
          const j1 = Math.min(ow, Math.floor((w - 1 + pl - b) / sw) + 1);
          if (j1 <= j0) continue;
          const xp = xBase + n0 * xImage + ((sh * i0 + a - pt) * w + sw * j0 + b - pl) * c4 * F;
          const dp = dyBase + n0 * dyImage + (i0 * ow + j0) * o8 * F;
          const wp = wBase + (a * kw + b) * c4 * o8 * F;
          simd.outerTile4x8(xp, dp, wp, i1 - i0, j1 - j0, images, sh * w * c4 * F, sw * c4 * F, xImage, ow * o8 * F, o8 * F, dyImage, o8 * F, c4 / 4, o8 / 8);
        }
      }
    }
    if (ci === c4 && co === o8) {
      return grad;
    }
    const out = backend.makeOutput(filterShape, 'float32');
    for (let t = 0; t < taps; t++) {
      copyRuns(backend, grad, t * c4 * o8, o8, out, t * ci * co, co, co, ci);
    }
    return out;
  });
}

/**
 * Tuning knobs, exported so tests and benchmarks can force each path:
 * strategy ('auto': simd where available, else 'xnnpack', which picks
 * im2col or swapped by shape), the im2col chunk size in floats
 * (about 1 MiB by default, sized for L2), and the bytes of x and dy the simd
 * path keeps in cache per image group. 64 KiB groups ran 20-35% faster than
 * 512 KiB (a whole L2) on ResNet's 3x3 layers at batch 64 (the kernel alone,
 * cpu time, a busy 2-core EPYC): a block's pass uses only 16 or 32 of the 64
 * bytes of every cache line of x and dy it reads, so the group must stay well
 * inside L2 beside everything else there.
 */
export const conv2DBackpropFilterOptions: {
  strategy: 'auto' | 'simd' | 'xnnpack' | 'im2col' | 'swapped';
  chunkFloats: number;
  groupBytes: number;
} = { strategy: 'auto', chunkFloats: 1 << 18, groupBytes: 1 << 16 };

const SWAPPED_MIN_BATCH = 32;
const SWAPPED_MAX_OUT_PIXELS = 100;

export const conv2DBackpropFilterConfig: KernelConfig = {
  kernelName: Conv2DBackpropFilter,
  backendName: 'wasm',
  // The registry's KernelFunc takes an untyped backend; ours needs wasm's.
  kernelFunc: conv2DBackpropFilter as unknown as KernelFunc,
};
