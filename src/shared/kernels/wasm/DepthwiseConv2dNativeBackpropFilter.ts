/**
 * DepthwiseConv2dNativeBackpropFilter for the wasm backend (which has none; tfjs would fail or, on cpu, loop in
 * JS). With the notation of depthwise_common.ts and M = 1:
 *   dW[a, b, c] = sum over (n, i, j) of x[n, sh*i + dh*a - pt, sw*j + dw*b - pl, c] * dy[n, i, j, c]
 * over the output pixels whose tap reads inside x (padding contributes nothing, so nothing is padded). Per tap,
 * a SIMD kernel sums x * dy over those pixels in float32x4 channel vectors, several vectors per block in
 * registers; images are taken in groups that stay in cache while all taps pass over them. Channel counts that are
 * not multiples of 4 are zero-padded to one. Without wasm SIMD, plain loops on the heap do the same sums.
 */
import {
  DepthwiseConv2dNativeBackpropFilter,
  DepthwiseConv2dNativeBackpropFilterAttrs,
  DepthwiseConv2dNativeBackpropFilterInputs,
  KernelConfig,
  KernelFunc,
  TensorInfo,
} from '@tensorflow/tfjs-core';

import { DepthwiseGeometry, depthwiseGeometry, depthwiseGradOptions, forEachTap, imageGroup, repeatChannels } from './depthwise_common.js';
import { copyRuns, fillRuns, heapF32, padChannels } from './heap_layout.js';
import { required, WasmKernelArgs } from './kernel_utils.js';
import { Scratch, withScratch } from './scratch.js';
import { depthwiseTapKernels, DepthwiseTapKernels, forChannelBlocks } from './simd/depthwise.js';
import { GdpError } from '../../errors.js';

const F = Float32Array.BYTES_PER_ELEMENT;

export function depthwiseConv2dNativeBackpropFilter(
  args: WasmKernelArgs<DepthwiseConv2dNativeBackpropFilterInputs, DepthwiseConv2dNativeBackpropFilterAttrs>,
): TensorInfo {
  const { inputs, backend, attrs } = args;
  const x = required(inputs.x, 'x');
  const dy = required(inputs.dy, 'dy');
  const g = depthwiseGeometry(DepthwiseConv2dNativeBackpropFilter, x.shape, attrs.filterShape, dy.shape, attrs);
  const simd = depthwiseGradOptions.filter === 'scalar' ? null : depthwiseTapKernels(backend);
  if (depthwiseGradOptions.filter === 'simd' && simd == null) {
    throw new GdpError('INTERNAL', `${DepthwiseConv2dNativeBackpropFilter}: the simd path was asked for but wasm SIMD is unavailable`);
  }
  return withScratch(backend, (s) => {
    const out = backend.makeOutput(attrs.filterShape, 'float32');
    try {
      // [kh, kw, C, M] is [kh, kw, C*M] in memory: the M = 1 gradient over C*M channels, x's channels repeated.
      const xm = repeatChannels(s, x, g.m);
      if (simd != null) {
        simdSum(s, simd, xm, dy, g, out);
      } else {
        scalarSum(s, xm, dy, g, out);
      }
    } catch (e) {
      backend.disposeData(out.dataId);
      throw e;
    }
    return out;
  });
}

/**
 * The SIMD path: channels zero-padded to c4 (a multiple of 4), then per image group and tap one filter-tap kernel
 * call per channel block, adding into dW [taps, c4]; images go in groups that stay in cache while all taps pass.
 */
function simdSum(s: Scratch, simd: DepthwiseTapKernels, x: TensorInfo, dy: TensorInfo, g: DepthwiseGeometry, out: TensorInfo): void {
  const { n, h, w, c, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl } = g;
  const c4 = Math.ceil(c / 4) * 4,
    taps = kh * kw;
  const xs = padChannels(s, x, c4);
  const dys = padChannels(s, dy, c4);
  const grad = c4 === c ? out : s.alloc([taps * c4]);
  fillRuns(s.backend, grad, 0, 0, taps * c4, 1);
  const xBase = s.backend.getMemoryOffset(xs.dataId);
  const dyBase = s.backend.getMemoryOffset(dys.dataId);
  const wBase = s.backend.getMemoryOffset(grad.dataId);
  const pixel = c4 * F,
    xImage = h * w * pixel,
    dyImage = oh * ow * pixel;
  const group = imageGroup(n, xImage + dyImage);
  for (let n0 = 0; n0 < n; n0 += group) {
    const images = Math.min(group, n - n0);
    forEachTap(g, (a, b, i0, i1, j0, j1) => {
      const xp = xBase + n0 * xImage + ((sh * i0 + dh * a - pt) * w + sw * j0 + dw * b - pl) * pixel;
      const dp = dyBase + n0 * dyImage + (i0 * ow + j0) * pixel;
      const wp = wBase + (a * kw + b) * pixel;
      forChannelBlocks(simd.filterTap, c4 / 4, (kernel, v0, blocks) => {
        kernel(xp + 16 * v0, dp + 16 * v0, wp + 16 * v0, i1 - i0, j1 - j0, images, sh * w * pixel, sw * pixel, xImage, ow * pixel, pixel, dyImage, blocks);
      });
    });
  }
  if (grad !== out) copyRuns(s.backend, grad, 0, c4, out, 0, c, c, taps);
}

/** The same sums in plain loops over the heap (float64 accumulators), for runtimes without wasm SIMD. */
function scalarSum(s: Scratch, x: TensorInfo, dy: TensorInfo, g: DepthwiseGeometry, out: TensorInfo): void {
  const { n, h, w, c, oh, ow, kw, sh, sw, dh, dw, pt, pl } = g;
  const heap = heapF32(s.backend, out).heap;
  const xo = heapF32(s.backend, x).offset,
    dyo = heapF32(s.backend, dy).offset;
  const wo = heapF32(s.backend, out).offset;
  const acc = new Float64Array(c);
  heap.fill(0, wo, wo + g.kh * kw * c);
  forEachTap(g, (a, b, i0, i1, j0, j1) => {
    acc.fill(0);
    for (let b0 = 0; b0 < n; b0++) {
      for (let i = i0; i < i1; i++) {
        for (let j = j0; j < j1; j++) {
          const xp = xo + ((b0 * h + sh * i + dh * a - pt) * w + sw * j + dw * b - pl) * c;
          const dp = dyo + ((b0 * oh + i) * ow + j) * c;
          for (let k = 0; k < c; k++) acc[k] += heap[xp + k] * heap[dp + k];
        }
      }
    }
    const o = wo + (a * kw + b) * c;
    for (let k = 0; k < c; k++) heap[o + k] = acc[k];
  });
}

export const depthwiseConv2dNativeBackpropFilterConfig: KernelConfig = {
  kernelName: DepthwiseConv2dNativeBackpropFilter,
  backendName: 'wasm',
  kernelFunc: depthwiseConv2dNativeBackpropFilter as unknown as KernelFunc,
};
