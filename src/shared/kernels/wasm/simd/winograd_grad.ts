/**
 * Generators of the Winograd F(2x2, 3x3) filter-gradient kernels (wasm text). With the forward pass
 * Y_t = A^T [U . V_t] A per 2x2 output tile t (simd/winograd.ts), U = G g G^T, the loss gradient is
 * dL/dg = G^T [sum over t of (A dY_t A^T) . V_t] G: the transformed dy tiles D_t = A dY_t A^T (4x4 from 2x2) and the
 * forward's transformed input tiles V_t give, per plane xi, dU[xi] = sum_t V_t[xi]^T D_t[xi] ([ci, co], an outer
 * product sum over tiles, run by the filter-gradient tile kernel simd/tiles.ts outerTile), then dW = G^T dU G.
 * This is the transpose of the forward algorithm (Lavin & Gray 2016, section 4.1, applied to the weight gradient
 * as in their section 5); 16 multiplications per tile and channel pair instead of 36.
 *
 * Layouts as in simd/winograd.ts, plus D: [16, tiles, co] and dU: [16, ci, co].
 */
import type { WasmFunction } from './assembler.js';
import { filterPlanesFunction, get, names, planes, set, tileRowFunction, Transform1D, transform2D, WinogradShape } from './winograd.js';

/** A = [[1, 0], [1, 1], [1, -1], [0, -1]]: p, p + q, p - q, -q. */
const aColumn: Transform1D = ([p, q], [o0, o1, o2, o3]) => `
      ${set(o0, get(p))} ${set(o1, `${get(p, q)} f32x4.add`)} ${set(o2, `${get(p, q)} f32x4.sub`)} ${set(o3, `${get(q)} f32x4.neg`)}`;

/** G^T = [[1, 1/2, 1/2, 0], [0, 1/2, -1/2, 0], [0, 1/2, 1/2, 1]]: a + h, (b - c) / 2, h + e with h = (b + c) / 2 (exact halvings). */
const gTransposed: Transform1D = ([a, b, c, e], [o0, o1, o2]) => `
      ${set('$h', `${get(b, c)} f32x4.add ${get('$half')} f32x4.mul`)}
      ${set(o0, `${get(a, '$h')} f32x4.add`)} ${set(o1, `${get(b, c)} f32x4.sub ${get('$half')} f32x4.mul`)} ${set(o2, `${get('$h', e)} f32x4.add`)}`;

/**
 * `dyTiles(dy, d, tiles, dyRow, dPlane)`: D = A dY A^T for `tiles` 2x2 tiles of dy along one tile row. dy: the
 * (zero-padded to even height and width) output gradient at the tile row's top-left pixel (rows dyRow bytes apart);
 * d: tile 0 of plane 0 in D (planes dPlane bytes apart).
 */
function dyTransform({ co }: WinogradShape): WasmFunction {
  const px = co * 4;
  const dy = names('$y', 4),
    tmp = names('$t', 8),
    d = names('$d', 16);
  const body = `
      local.get $dy local.get $off i32.add local.set $p
      ${set(dy[0], 'local.get $p v128.load')} ${set(dy[1], `local.get $p v128.load offset=${px}`)}
      ${get('$p', '$dyRow')} i32.add local.set $p
      ${set(dy[2], 'local.get $p v128.load')} ${set(dy[3], `local.get $p v128.load offset=${px}`)}
      ${transform2D(aColumn, 2, 4, dy, tmp, d)}
      ${planes('store', '$d', '$dPlane', d)}`;
  return tileRowFunction('dyTiles', ['$dy', '$d', '$tiles', '$dyRow', '$dPlane'], co, [2 * px, px], [...dy, ...tmp, ...d], body);
}

/** The filter-gradient functions of one (ci, co) module: dyTiles, and `filterGrad(du, dw)`: dW = G^T dU G. */
export function winogradGradFunctions(shape: WinogradShape): WasmFunction[] {
  return [dyTransform(shape), filterPlanesFunction('filterGrad', shape, gTransposed, 4, 3, ['$h'])];
}
