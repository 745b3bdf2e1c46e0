/**
 * Geometry and plumbing shared by the two depthwise convolution gradient kernels (wasm, NHWC).
 *
 * The depthwise convolution (tf.depthwiseConv2d, TensorFlow's DepthwiseConv2dNative) with filter [kh, kw, C, M]:
 *   y[n, i, j, c*M + m] = sum over (a, b) of x[n, sh*i + dh*a - pt, sw*j + dw*b - pl, c] * w[a, b, c, m]
 * (terms outside x are zero). A channel multiplier M > 1 is reduced to M = 1 over C*M channels: x's channels
 * repeated M times (filter gradient) or dx's C*M channels summed in groups of M (input gradient).
 */
import { backend_util, TensorInfo, Tile } from '@tensorflow/tfjs-core';

import { Scratch } from './scratch.js';
import { GdpError } from '../../errors.js';

type Shape4 = [number, number, number, number];

/** Sizes under the formula's names: c = channels after the multiplier (C*M), m = multiplier, dh/dw dilations. */
export interface DepthwiseGeometry {
  n: number;
  h: number;
  w: number;
  c: number;
  m: number;
  oh: number;
  ow: number;
  kh: number;
  kw: number;
  sh: number;
  sw: number;
  dh: number;
  dw: number;
  pt: number;
  pl: number;
}

/**
 * The geometry of a depthwise convolution of x [N, H, W, C] with a filter [kh, kw, C, M], attributes as tfjs
 * passes them to the gradient kernels (padding 'same', 'valid' or explicit [[0, 0], [t, b], [l, r], [0, 0]];
 * dilations default 1). Throws when the attributes are inconsistent (tfjs' own checks) or dy does not have the
 * output shape.
 */
export function depthwiseGeometry(
  kernelName: string,
  xShape: number[],
  filterShape: number[],
  dyShape: number[],
  attrs: {
    strides: number | [number, number];
    dilations?: number | [number, number];
    pad: unknown;
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
    dataFormat?: string;
  },
): DepthwiseGeometry {
  if (attrs.dataFormat != null && attrs.dataFormat !== 'NHWC') {
    throw new GdpError('UNSUPPORTED_LAYER', `${kernelName} on wasm supports NHWC only, got dataFormat '${attrs.dataFormat}'`);
  }
  const info = backend_util.computeConv2DInfo(
    xShape as Shape4,
    filterShape as Shape4,
    attrs.strides,
    attrs.dilations ?? 1,
    attrs.pad as Parameters<typeof backend_util.computeConv2DInfo>[4],
    attrs.dimRoundingMode,
    true,
  );
  const expected = info.outShape;
  if (dyShape.length !== 4 || dyShape.some((d, i) => d !== expected[i])) {
    throw new GdpError('SHAPE_MISMATCH', `${kernelName}: dy shape [${dyShape}] does not match the output shape [${expected}]`);
  }
  return {
    n: info.batchSize,
    h: info.inHeight,
    w: info.inWidth,
    c: info.outChannels,
    m: info.outChannels / info.inChannels,
    oh: info.outHeight,
    ow: info.outWidth,
    kh: info.filterHeight,
    kw: info.filterWidth,
    sh: info.strideHeight,
    sw: info.strideWidth,
    dh: info.dilationHeight,
    dw: info.dilationWidth,
    pt: info.padInfo.top,
    pl: info.padInfo.left,
  };
}

/**
 * Outputs [lo, hi) along one axis whose tap `k` reads inside the input: 0 <= s*i + d*k - pad < size, i < outSize.
 */
export function tapRange(k: number, pad: number, s: number, d: number, size: number, outSize: number): [number, number] {
  const lo = Math.max(0, Math.ceil((pad - d * k) / s));
  const hi = Math.min(outSize, Math.floor((size - 1 + pad - d * k) / s) + 1);
  return [lo, Math.max(lo, hi)];
}

/** Visits every tap (a, b) with output rows [i0, i1) and columns [j0, j1) that read inside x, skipping empty ones. */
export function forEachTap(g: DepthwiseGeometry, visit: (a: number, b: number, i0: number, i1: number, j0: number, j1: number) => void): void {
  for (let a = 0; a < g.kh; a++) {
    const [i0, i1] = tapRange(a, g.pt, g.sh, g.dh, g.h, g.oh);
    if (i1 === i0) continue;
    for (let b = 0; b < g.kw; b++) {
      const [j0, j1] = tapRange(b, g.pl, g.sw, g.dw, g.w, g.ow);
      if (j1 > j0) visit(a, b, i0, i1, j0, j1);
    }
  }
}

/** x [N, H, W, C] with every channel repeated m times: [N, H, W, C*m], channel c*m + k = x's channel c. */
export function repeatChannels(s: Scratch, x: TensorInfo, m: number): TensorInfo {
  if (m === 1) return x;
  const [n, h, w, c] = x.shape;
  const tiled = s.run(Tile, { x: s.view(x, [n * h * w, c, 1]) }, { reps: [1, 1, m] });
  return s.view(tiled, [n, h, w, c * m]);
}

/**
 * Paths, exported so tests and benchmarks can force each: 'simd' (wasm SIMD tap kernels), 'scalar' (plain loops
 * on the heap, the path without wasm SIMD) and, for the input gradient at stride 1, 'xnnpack' (the stock forward
 * depthwise kernel on the flipped filter). 'auto' takes xnnpack where it applies, else simd where available.
 */
export const depthwiseGradOptions: {
  filter: 'auto' | 'simd' | 'scalar';
  input: 'auto' | 'simd' | 'scalar' | 'xnnpack';
  groupBytes: number;
} = { filter: 'auto', input: 'auto', groupBytes: 1 << 19 };

/** Images per group whose two operands (`bytesPerImage` together) stay in L2 while every tap passes over them. */
export function imageGroup(n: number, bytesPerImage: number): number {
  return Math.max(1, Math.min(n, Math.floor(depthwiseGradOptions.groupBytes / bytesPerImage)));
}
