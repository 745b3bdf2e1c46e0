/**
 * DepthwiseConv2dNativeBackpropInput for the wasm backend (which has none). With the notation of
 * depthwise_common.ts and M = 1, the transposed depthwise convolution:
 *   dx[n, sh*i + dh*a - pt, sw*j + dw*b - pl, c] += dy[n, i, j, c] * w[a, b, c]   over (a, b, i, j) inside dx.
 * Paths:
 *  - xnnpack (stride 1): dx is the stride-1 depthwise correlation of dy, padded by dh*(kh-1) - pt above and
 *    H - OH + pt below (likewise for columns), with the spatially flipped filter: one call of the stock
 *    (XNNPACK) forward kernel.
 *  - simd (any stride; 'auto' at strides > 1): per stride phase of dx, a SIMD gather kernel sums the phase's taps
 *    (a table of dy offsets and filter vectors) for every pixel and writes it once, in float32x4 channel vectors
 *    (channels zero-padded to a multiple of 4), images in cache-sized groups; see simdGather.
 *  - scalar: the sums in plain loops (tap by tap into dx), for runtimes without wasm SIMD.
 * A multiplier M > 1 runs over the C*M channels and sums each group of M (Sum).
 */
import {
  DepthwiseConv2dNative,
  DepthwiseConv2dNativeBackpropInput,
  DepthwiseConv2dNativeBackpropInputAttrs,
  DepthwiseConv2dNativeBackpropInputInputs,
  KernelConfig,
  KernelFunc,
  Reverse,
  Sum,
  TensorInfo,
} from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

import { DepthwiseGeometry, depthwiseGeometry, depthwiseGradOptions, forEachTap, imageGroup } from './depthwise_common.js';
import { copyRuns, heapF32, padChannels, windowNHWC } from './heap_layout.js';
import { required, runKernel, WasmKernelArgs } from './kernel_utils.js';
import { Scratch, withScratch } from './scratch.js';
import { depthwiseGatherKernels, depthwiseTapKernels, DepthwiseTapKernels, forChannelBlocks } from './simd/depthwise.js';
import { GdpError } from '../../errors.js';

const F = Float32Array.BYTES_PER_ELEMENT;

export function depthwiseConv2dNativeBackpropInput(
  args: WasmKernelArgs<DepthwiseConv2dNativeBackpropInputInputs, DepthwiseConv2dNativeBackpropInputAttrs>,
): TensorInfo {
  const { inputs, backend, attrs } = args;
  const dy = required(inputs.dy, 'dy');
  const filter = required(inputs.filter, 'filter');
  const g = depthwiseGeometry(DepthwiseConv2dNativeBackpropInput, attrs.inputShape, filter.shape, dy.shape, attrs);
  const path = choosePath(backend, g);
  return withScratch(backend, (s) => {
    const w = s.view(filter, [g.kh, g.kw, g.c, 1]);
    const dxm =
      path === 'xnnpack'
        ? flippedCorrelation(s, dy, w, g)
        : path === 'simd'
          ? simdGather(s, depthwiseTapKernels(backend)!, dy, w, g)
          : scalarScatter(s, dy, w, g);
    if (g.m === 1) return s.release(dxm);
    const { n, h, w: wd, c, m } = g;
    return runKernel(Sum, backend, { x: s.view(dxm, [n, h, wd, c / m, m]) }, { axis: [4], keepDims: false });
  });
}

function choosePath(backend: BackendWasm, g: DepthwiseGeometry): 'xnnpack' | 'simd' | 'scalar' {
  const option = depthwiseGradOptions.input;
  const strideOne = g.sh === 1 && g.sw === 1 && g.pt <= g.dh * (g.kh - 1) && g.pl <= g.dw * (g.kw - 1) && g.h - g.oh + g.pt >= 0 && g.w - g.ow + g.pl >= 0;
  if (option === 'xnnpack' && !strideOne) {
    throw new GdpError('INTERNAL', `${DepthwiseConv2dNativeBackpropInput}: the xnnpack path needs stride 1 and pads within the filter`);
  }
  if (option === 'xnnpack' || option === 'scalar') return option;
  const simd = depthwiseTapKernels(backend) != null;
  if (option === 'simd' && !simd) {
    throw new GdpError('INTERNAL', `${DepthwiseConv2dNativeBackpropInput}: the simd path was asked for but wasm SIMD is unavailable`);
  }
  if (option === 'auto' && strideOne) return 'xnnpack';
  return simd ? 'simd' : 'scalar';
}

/** dx [N, H, W, C*M] by the stock forward kernel on the flipped filter w [kh, kw, C*M, 1] (stride 1 only). */
function flippedCorrelation(s: Scratch, dy: TensorInfo, w: TensorInfo, g: DepthwiseGeometry): TensorInfo {
  const { h, w: wd, oh, ow, kh, kw, dh, dw, pt, pl } = g;
  const flipped = s.run(Reverse, { x: w }, { dims: [0, 1] });
  const top = dh * (kh - 1) - pt,
    left = dw * (kw - 1) - pl;
  return s.run(
    DepthwiseConv2dNative,
    { x: dy, filter: flipped },
    {
      strides: [1, 1],
      pad: [
        [0, 0],
        [top, h - oh + pt],
        [left, wd - ow + pl],
        [0, 0],
      ],
      dilations: [dh, dw],
      dataFormat: 'NHWC',
    },
  );
}

/**
 * dx [N, H, W, C*M] by the SIMD gather kernel, one stride phase (bh, bw) of dx at a time: a dx pixel of the
 * phase is the sum over the taps (a, b) with sh | bh + pt - dh*a and sw | bw + pl - dw*b of w[a, b] times dy at a
 * fixed offset from the pixel's dy position, so each phase is a stride-1 correlation with a tap table. dy is
 * zero-padded (P0 rows above, P1 below, likewise for columns) so that every tap of the table reads inside it.
 */
function simdGather(s: Scratch, simd: DepthwiseTapKernels, dy: TensorInfo, w: TensorInfo, g: DepthwiseGeometry): TensorInfo {
  const { n, h, w: wd, c, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl } = g;
  const c4 = Math.ceil(c / 4) * 4,
    pixel = c4 * F;
  const p0 = Math.max(0, Math.ceil((dh * (kh - 1) - pt) / sh)),
    p1 = Math.max(0, Math.floor((h - 1 + pt) / sh) - oh + 1);
  const q0 = Math.max(0, Math.ceil((dw * (kw - 1) - pl) / sw)),
    q1 = Math.max(0, Math.floor((wd - 1 + pl) / sw) - ow + 1);
  const hp = oh + p0 + p1,
    wp = ow + q0 + q1;
  const dyp = windowNHWC(s, s.view(padChannels(s, dy, c4), [n, oh, ow, c4]), -p0, hp, -q0, wp);
  const ws = padChannels(s, s.view(w, [kh * kw, c]), c4);
  const dx = s.alloc([n, h, wd, c4]);
  const table = s.alloc([2 * sh * sw * kh * kw]);
  const dypBase = s.backend.getMemoryOffset(dyp.dataId),
    dxBase = s.backend.getMemoryOffset(dx.dataId);
  const wBase = s.backend.getMemoryOffset(ws.dataId),
    tableBase = s.backend.getMemoryOffset(table.dataId);
  const divides = (d: number, v: number) => ((v % d) + d) % d === 0;
  // Per stride phase: the tap table's byte offset in `table` and its entries.
  const phases: Array<{ bh: number; bw: number; at: number; taps: number }> = [];
  const entries: number[] = [];
  for (let bh = 0; bh < Math.min(sh, h); bh++) {
    for (let bw = 0; bw < Math.min(sw, wd); bw++) {
      const at = tableBase + 4 * entries.length;
      for (let a = 0; a < kh; a++) {
        if (!divides(sh, bh + pt - dh * a)) continue;
        for (let b = 0; b < kw; b++) {
          if (!divides(sw, bw + pl - dw * b)) continue;
          const i = p0 + (bh + pt - dh * a) / sh,
            j = q0 + (bw + pl - dw * b) / sw;
          entries.push((i * wp + j) * pixel, wBase + (a * kw + b) * pixel);
        }
      }
      phases.push({ bh, bw, at, taps: (tableBase + 4 * entries.length - at) / 8 });
    }
  }
  new Int32Array(heapF32(s.backend, table).heap.buffer, tableBase, entries.length).set(entries);
  // Images in groups whose dx and dy stay in cache while every phase and channel block passes over them.
  const dxImage = h * wd * pixel,
    dyImage = hp * wp * pixel;
  const group = imageGroup(n, dxImage + dyImage);
  for (let n0 = 0; n0 < n; n0 += group) {
    for (const { bh, bw, at, taps } of phases) {
      forChannelBlocks(depthwiseGatherKernels(s.backend, taps) ?? simd.inputGather, c4 / 4, (kernel, v0, blocks) => {
        kernel(
          dypBase + n0 * dyImage + 16 * v0,
          dxBase + n0 * dxImage + (bh * wd + bw) * pixel + 16 * v0,
          16 * v0,
          Math.ceil((h - bh) / sh),
          Math.ceil((wd - bw) / sw),
          Math.min(group, n - n0),
          wp * pixel,
          pixel,
          dyImage,
          sh * wd * pixel,
          sw * pixel,
          dxImage,
          blocks,
          at,
          taps,
        );
      });
    }
  }
  if (c4 === c) return dx;
  const out = s.alloc([n, h, wd, c]);
  copyRuns(s.backend, dx, 0, c4, out, 0, c, c, n * h * wd);
  return out;
}

/** dx by plain loops over the heap, tap by tap (dx[tap's pixels] += dy * w[a, b]), for runtimes without wasm SIMD. */
function scalarScatter(s: Scratch, dy: TensorInfo, w: TensorInfo, g: DepthwiseGeometry): TensorInfo {
  const { n, h, w: wd, c, oh, ow, kw, sh, sw, dh, dw, pt, pl } = g;
  const dx = s.alloc([n, h, wd, c]);
  const { heap, offset: xo } = heapF32(s.backend, dx);
  const dyo = heapF32(s.backend, dy).offset,
    wo = heapF32(s.backend, w).offset;
  heap.fill(0, xo, xo + n * h * wd * c);
  forEachTap(g, (a, b, i0, i1, j0, j1) => {
    const wp = wo + (a * kw + b) * c;
    for (let b0 = 0; b0 < n; b0++) {
      for (let i = i0; i < i1; i++) {
        for (let j = j0; j < j1; j++) {
          const xp = xo + ((b0 * h + sh * i + dh * a - pt) * wd + sw * j + dw * b - pl) * c;
          const dp = dyo + ((b0 * oh + i) * ow + j) * c;
          for (let k = 0; k < c; k++) heap[xp + k] += heap[dp + k] * heap[wp + k];
        }
      }
    }
  });
  return dx;
}

export const depthwiseConv2dNativeBackpropInputConfig: KernelConfig = {
  kernelName: DepthwiseConv2dNativeBackpropInput,
  backendName: 'wasm',
  kernelFunc: depthwiseConv2dNativeBackpropInput as unknown as KernelFunc,
};
