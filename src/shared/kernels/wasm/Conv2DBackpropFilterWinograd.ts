/**
 * The filter gradient of a stride-1 3x3 convolution by Winograd F(2x2, 3x3) (simd/winograd_grad.ts for the maths):
 * per block of tile rows (as in Conv2DWinograd.ts), the forward input transform V of x and the transform D of dy's
 * 2x2 tiles, then per plane dU[xi] += V[xi]^T D[xi] (the outer-product tile kernel, summing the tiles in order),
 * and dW = G^T dU G at the end. The sums over tiles run in one fixed order whatever the block size, so the result is
 * the same bits on every call.
 */
import { TensorInfo } from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

import { Geometry, planeFloats, transformInputRows, winogradApplies, winogradKernels, winogradTiling } from './Conv2DWinograd.js';
import { fillRuns, windowNHWC } from './heap_layout.js';
import { withScratch } from './scratch.js';
import type { SimdKernels } from './simd/module.js';

/** Whether the Winograd filter gradient applies: as the forward (winogradApplies), with ci a multiple of 4 and co of 8. */
export function winogradFilterGradApplies(g: Geometry): boolean {
  return winogradApplies(g) && g.c % 4 === 0 && g.co % 8 === 0;
}

/**
 * dW [3, 3, ci, co] (HWIO) of the convolution of x [n, h, w, ci] (NHWC, float32) with output gradient
 * dy [n, oh, ow, co], geometry `g` (winogradFilterGradApplies(g) must hold), as a new tensor of `filterShape`; null
 * when the SIMD module is unavailable (the caller falls back).
 */
export function conv2DBackpropFilterWinograd(
  backend: BackendWasm,
  simd: SimdKernels,
  x: TensorInfo,
  dy: TensorInfo,
  g: Geometry,
  filterShape: number[],
): TensorInfo | null {
  const k = winogradKernels(backend, g.c, g.co);
  if (k == null) return null;
  const tiling = winogradTiling(g);
  const { c: ci, co } = g;
  const { th, tw, tileRows, blockRows } = tiling;
  const F = Float32Array.BYTES_PER_ELEMENT;
  return withScratch(backend, (s) => {
    // x padded to whole 4x4 input tiles; dy zero-padded to whole 2x2 tiles (the extra outputs' gradients are zero).
    const xp = windowNHWC(s, x, -g.pt, tiling.hp, -g.pl, tiling.wp);
    const dyp = windowNHWC(s, dy, 0, 2 * th, 0, 2 * tw);
    const du = s.alloc([16, ci, co]);
    fillRuns(backend, du, 0, 0, 16 * ci * co, 1);
    const v = s.alloc([16 * planeFloats(blockRows * tw * ci)]);
    const d = s.alloc([16 * planeFloats(blockRows * tw * co)]);
    const dw = backend.makeOutput(filterShape, 'float32');
    const at = (t: TensorInfo) => backend.getMemoryOffset(t.dataId);
    const [xb, dyb, dub, vb, db] = [xp, dyp, du, v, d].map(at);
    const dyRow = 2 * tw * co * F;
    for (let q0 = 0; q0 < tileRows; q0 += blockRows) {
      const rows = Math.min(blockRows, tileRows - q0);
      const tiles = rows * tw;
      const vPlane = planeFloats(tiles * ci) * F,
        dPlane = planeFloats(tiles * co) * F;
      transformInputRows(k, tiling, ci, xb, vb, q0, rows, vPlane);
      for (let q = q0; q < q0 + rows; q++) {
        k.dyTiles(dyb + q * 2 * dyRow, db + (q - q0) * tw * co * F, tw, dyRow, dPlane);
      }
      for (let xi = 0; xi < 16; xi++) {
        simd.outerTile4x8(vb + xi * vPlane, db + xi * dPlane, dub + xi * ci * co * F, 1, tiles, 1, 0, ci * F, 0, 0, co * F, 0, co * F, ci / 4, co / 8);
      }
    }
    k.filterGrad(dub, at(dw));
    return dw;
  });
}
