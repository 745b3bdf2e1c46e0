/**
 * Winograd F(2x2, 3x3) convolution for the wasm backend (Lavin & Gray 2016, "Fast Algorithms for Convolutional
 * Neural Networks"): stride-1, dilation-1 3x3 NHWC convolutions with any padding, 2.25x fewer multiplications than
 * the direct tiles. Conv2D.ts picks it by shape; Conv2DBackpropInput's stride-1 convolutions on the flipped filter
 * come through Conv2D and so use it too.
 *
 * Per call: the filter is transformed once (U, [16, ci, co]); the output's 2x2 tiles are then taken in blocks of
 * whole tile rows (spanning images), sized so that the block's transformed input V ([16, tiles, ci]) and products
 * M ([16, tiles, co]) stay in L2 cache (winogradOptions.blockBytes): input transform of the block's tile rows, the
 * 16 matrix products M[xi] = V[xi] U[xi], output transform into y (all SIMD kernels of simd/winograd.ts). Each
 * output value is a fixed sum (channel order in the products, fixed transform formulas), so results are the same bits
 * for every call and block size; they differ from the direct convolution's by rounding (winograd.test.ts bounds it).
 * Measured on ResNet's layers (batch 64, 2026-11-30): 1.4x (16 channels) to 2x (64 channels) the direct tiles.
 */
import { TensorInfo } from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

import { windowNHWC } from './heap_layout.js';
import { shortGeometry } from './kernel_utils.js';
import { withScratch } from './scratch.js';
import { heapModule } from './simd/module.js';
import { winogradFunctions } from './simd/winograd.js';
import { winogradGradFunctions } from './simd/winograd_grad.js';

/** The kernels of simd/winograd.ts and simd/winograd_grad.ts (byte offsets into the heap; see there for layouts). */
export interface WinogradKernels {
  filter(g: number, u: number): void;
  input(x: number, v: number, tiles: number, xRow: number, vPlane: number): void;
  products(v: number, u: number, m: number, quads: number, vPlane: number, mPlane: number): void;
  output1x1(m: number, y: number, tiles: number, yRow: number, mPlane: number): void;
  output1x2(m: number, y: number, tiles: number, yRow: number, mPlane: number): void;
  output2x1(m: number, y: number, tiles: number, yRow: number, mPlane: number): void;
  output2x2(m: number, y: number, tiles: number, yRow: number, mPlane: number): void;
  dyTiles(dy: number, d: number, tiles: number, dyRow: number, dPlane: number): void;
  filterGrad(du: number, dw: number): void;
}

/** The Winograd kernels for ci input and co output channels on `backend`'s heap (assembled once), or null. */
export function winogradKernels(backend: BackendWasm, ci: number, co: number): WinogradKernels | null {
  return heapModule<WinogradKernels>(backend, `winograd${ci},${co}`, () => [...winogradFunctions({ ci, co }), ...winogradGradFunctions({ ci, co })]);
}

/** Tuning switches (tests and benchmarks); `blockBytes` bounds a block's V plus M, in bytes. */
export const winogradOptions = { blockBytes: 1 << 18 };

export type Geometry = ReturnType<typeof shortGeometry>;

/** Whether the Winograd path applies: 3x3 taps, stride 1, at least 4 input and output channels, a non-empty output. */
export function winogradApplies(g: Geometry): boolean {
  return g.kh === 3 && g.kw === 3 && g.sh === 1 && g.sw === 1 && g.c >= 4 && g.co >= 4 && g.oh > 0 && g.ow > 0;
}

/**
 * Tiles rounded up to whole quads: the products run on blocks of 4 tiles; the extra tiles' V values are whatever the
 * buffer holds, and their products (in M's extra tiles) are never read.
 */
const quadTiles = (tiles: number) => 4 * Math.ceil(tiles / 4);

/**
 * Floats between two planes of V or M holding `floats` each: a whole number of 64-byte cache lines, and an odd one,
 * so that the 16 planes' values of one tile (read or written together) fall in 16 different sets of the L1 cache
 * (with planes a multiple of 4 KiB apart, as blocks of 2^k tiles would be, they all fell in one and the transforms
 * ran 2-3x slower).
 */
export function planeFloats(floats: number): number {
  const lines = Math.ceil(floats / 16);
  return 16 * (lines % 2 === 0 ? lines + 1 : lines);
}

/**
 * The tiling shared by the forward and the filter gradient: th x tw tiles of 2x2 outputs per image, tileRows = n th
 * tile rows, blockRows of them per block (their V and M, or V and D, within winogradOptions.blockBytes; at least
 * one), and the padded input's hp x wp size covering every 4x4 input tile (zeros outside x).
 */
export type WinogradTiling = ReturnType<typeof winogradTiling>;

export function winogradTiling(g: Geometry) {
  const th = Math.ceil(g.oh / 2),
    tw = Math.ceil(g.ow / 2);
  const tileRows = g.n * th;
  const perRow = 16 * tw * (g.c + g.co) * Float32Array.BYTES_PER_ELEMENT;
  const blockRows = Math.max(1, Math.min(tileRows, Math.floor(winogradOptions.blockBytes / perRow)));
  return { th, tw, tileRows, blockRows, hp: 2 * th + 2, wp: 2 * tw + 2 };
}

/**
 * V (planes vPlane bytes apart, tiles in tile-row order) of tile rows q0 .. q0 + rows - 1: the input transform of
 * the padded input xp (at heap offset xb, ci channels, tiling.hp x tiling.wp per image) into V at heap offset vb.
 */
export function transformInputRows(
  k: WinogradKernels,
  tiling: WinogradTiling,
  ci: number,
  xb: number,
  vb: number,
  q0: number,
  rows: number,
  vPlane: number,
): void {
  const { th, tw, hp, wp } = tiling;
  const F = Float32Array.BYTES_PER_ELEMENT;
  const xRow = wp * ci * F;
  for (let q = q0; q < q0 + rows; q++) {
    const b = Math.floor(q / th),
      r = q % th;
    k.input(xb + (b * hp + 2 * r) * xRow, vb + (q - q0) * tw * ci * F, tw, xRow, vPlane);
  }
}

/**
 * y = conv2d(x, filter) for x [n, h, w, ci] and filter [3, 3, ci, co] (NHWC, HWIO, float32, stride 1,
 * dilation 1) with the geometry `g` (winogradApplies(g) must hold), as a new [n, oh, ow, co] tensor; null when the
 * SIMD module is unavailable (the caller falls back).
 */
export function conv2DWinograd(backend: BackendWasm, x: TensorInfo, filter: TensorInfo, g: Geometry): TensorInfo | null {
  const { n, c: ci, oh, ow, co, pt, pl } = g;
  const F = Float32Array.BYTES_PER_ELEMENT;
  const k = winogradKernels(backend, ci, co);
  if (k == null) return null;
  const tiling = winogradTiling(g);
  const { th, tw, tileRows, blockRows, hp, wp } = tiling;
  return withScratch(backend, (s) => {
    const xp = windowNHWC(s, x, -pt, hp, -pl, wp);
    const u = s.alloc([16, ci, co]);
    const v = s.alloc([16 * planeFloats(quadTiles(blockRows * tw) * ci)]);
    const m = s.alloc([16 * planeFloats(quadTiles(blockRows * tw) * co)]);
    const y = backend.makeOutput([n, oh, ow, co], 'float32');
    const at = (t: TensorInfo) => backend.getMemoryOffset(t.dataId);
    const [xb, ub, vb, mb, yb] = [xp, u, v, m, y].map(at);
    k.filter(at(filter), ub);
    const yRow = ow * co * F;
    const fullCols = Math.floor(ow / 2);
    for (let q0 = 0; q0 < tileRows; q0 += blockRows) {
      const rows = Math.min(blockRows, tileRows - q0);
      const tiles = rows * tw;
      const vPlane = planeFloats(quadTiles(tiles) * ci) * F,
        mPlane = planeFloats(quadTiles(tiles) * co) * F;
      transformInputRows(k, tiling, ci, xb, vb, q0, rows, vPlane);
      k.products(vb, ub, mb, Math.ceil(tiles / 4), vPlane, mPlane);
      for (let q = q0; q < q0 + rows; q++) {
        const b = Math.floor(q / th),
          r = q % th;
        const half = 2 * r + 1 === oh;
        const mq = mb + (q - q0) * tw * co * F,
          yq = yb + (b * oh + 2 * r) * ow * co * F;
        if (fullCols > 0) (half ? k.output1x2 : k.output2x2)(mq, yq, fullCols, yRow, mPlane);
        if (ow % 2 === 1) (half ? k.output1x1 : k.output2x1)(mq + fullCols * co * F, yq + 2 * fullCols * co * F, 1, yRow, mPlane);
      }
    }
    return y;
  });
}
