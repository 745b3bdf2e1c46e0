/**
 * A plain-JS Winograd F(2x2, 3x3) convolution (Lavin & Gray 2016, eq. 7) that performs the same float32 operations
 * in the same order as the SIMD kernels of src/shared/kernels/wasm/simd/winograd.ts, so that with Math.fround as
 * rounding it gives their bits exactly (float32 +, -, * computed in float64 and rounded once are correctly
 * rounded). Run in float64 on |x| and |filter| with every subtraction turned into an addition, the same algorithm
 * gives per output the sum S of the magnitudes of all terms the float32 run adds, for the rounding-error bound of
 * winograd.test.ts (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., section 3.1: an expression
 * of depth k in +, -, * has error at most gamma_k = k u / (1 - k u) times that sum). The filter gradient
 * (simd/winograd_grad.ts) likewise. No side effects on import.
 */

const abs = (a: ArrayLike<number>) => Float64Array.from(a, Math.abs);

export interface WinogradCase {
  n: number;
  h: number;
  w: number;
  ci: number;
  co: number;
  /** Padding above and left of x (the output is oh x ow). */
  pt: number;
  pl: number;
  oh: number;
  ow: number;
}

interface Arith {
  f: (v: number) => number;
  sub: (a: number, b: number) => number;
  neg: (a: number) => number;
}

const F32: Arith = { f: Math.fround, sub: (a, b) => a - b, neg: (a) => -a };
/** The algorithm on magnitudes: subtractions become additions (the inputs are |x|, |filter| or |dy|). */
const MAGNITUDES: Arith = { f: (v) => v, sub: (a, b) => a + b, neg: (a) => a };

/** (G g G^T) per plane xi = 4 i + j of one 3x3 filter slice g (row-major), G = [[1,0,0],[.5,.5,.5],[.5,-.5,.5],[0,0,1]]. */
function filterTile(g: number[], { f, sub }: Arith): number[] {
  const gcol = (a: number, b: number, c: number) => [a, f(f(f(a + b) + c) * 0.5), f(f(f(sub(a, b)) + c) * 0.5), c];
  const r: number[][] = [0, 1, 2].map((b) => gcol(g[b], g[3 + b], g[6 + b])); // r[b][i] = (G g)[i][b]
  return [0, 1, 2, 3].flatMap((i) => gcol(r[0][i], r[1][i], r[2][i]));
}

/** B^T d B per plane of one 4x4 input tile d (row-major). */
function inputTile(d: number[], { f, sub }: Arith): number[] {
  const bt = (a: number, b: number, c: number, e: number) => [f(sub(a, c)), f(b + c), f(sub(c, b)), f(sub(b, e))];
  const t: number[][] = [0, 1, 2, 3].map((j) => bt(d[j], d[4 + j], d[8 + j], d[12 + j])); // t[j][i]
  return [0, 1, 2, 3].flatMap((i) => bt(t[0][i], t[1][i], t[2][i], t[3][i]));
}

/** A^T m A (2x2, row-major) of one 4x4 product tile m. */
function outputTile(m: number[], { f, sub }: Arith): number[] {
  const at = (a: number, b: number, c: number, e: number) => [f(f(a + b) + c), f(sub(f(sub(b, c)), e))];
  const s: number[][] = [0, 1, 2, 3].map((j) => at(m[j], m[4 + j], m[8 + j], m[12 + j])); // s[j][r]
  return [...at(s[0][0], s[1][0], s[2][0], s[3][0]), ...at(s[0][1], s[1][1], s[2][1], s[3][1])];
}

/**
 * y [n, oh, ow, co] (NHWC) of x [n, h, w, ci] (NHWC) and the filter [3, 3, ci, co] (HWIO), stride 1, by Winograd
 * F(2x2, 3x3), every operation rounded to float32.
 */
export function winogradConvF32(x: ArrayLike<number>, filter: ArrayLike<number>, c: WinogradCase): Float64Array {
  return run(x, filter, c, F32);
}

/** Per output of winogradConvF32, the sum S of the magnitudes of every term its float32 run adds (float64). */
export function winogradTermSums(x: ArrayLike<number>, filter: ArrayLike<number>, c: WinogradCase): Float64Array {
  return run(abs(x), abs(filter), c, MAGNITUDES);
}

/** B^T d B of input tile (ty, tx) of image b, per input channel (v[k][xi]); zeros outside x. */
function inputTiles(x: ArrayLike<number>, { h, w, ci, pt, pl }: WinogradCase, b: number, ty: number, tx: number, arith: Arith): number[][] {
  return Array.from({ length: ci }, (_, k) =>
    inputTile(
      Array.from({ length: 16 }, (_, t) => {
        const r = 2 * ty + (t >> 2) - pt,
          q = 2 * tx + (t & 3) - pl;
        return r >= 0 && r < h && q >= 0 && q < w ? x[((b * h + r) * w + q) * ci + k] : 0;
      }),
      arith,
    ),
  );
}

function run(x: ArrayLike<number>, filter: ArrayLike<number>, c: WinogradCase, arith: Arith): Float64Array {
  const { n, h, w, ci, co, pt, pl, oh, ow } = c;
  const { f } = arith;
  const y = new Float64Array(n * oh * ow * co);
  const u: number[][] = []; // u[k * co + o][xi]
  for (let k = 0; k < ci; k++) {
    for (let o = 0; o < co; o++) {
      u.push(
        filterTile(
          Array.from({ length: 9 }, (_, t) => filter[(t * ci + k) * co + o]),
          arith,
        ),
      );
    }
  }
  for (let b = 0; b < n; b++) {
    for (let ty = 0; ty < Math.ceil(oh / 2); ty++) {
      for (let tx = 0; tx < Math.ceil(ow / 2); tx++) {
        const v = inputTiles(x, c, b, ty, tx, arith);
        for (let o = 0; o < co; o++) {
          // Products summed over the input channels in order, from 0 (as the kernel's zeroed accumulators).
          const m = Array.from({ length: 16 }, (_, xi) => {
            let acc = 0;
            for (let k = 0; k < ci; k++) acc = f(acc + f(v[k][xi] * u[k * co + o][xi]));
            return acc;
          });
          const out = outputTile(m, arith);
          for (let t = 0; t < 4; t++) {
            const oy = 2 * ty + (t >> 1),
              ox = 2 * tx + (t & 1);
            if (oy < oh && ox < ow) y[((b * oh + oy) * ow + ox) * co + o] = out[t];
          }
        }
      }
    }
  }
  return y;
}

/** A dY A^T (4x4, row-major) of one 2x2 output-gradient tile dy (row-major), A = [[1, 0], [1, 1], [1, -1], [0, -1]]. */
function dyTile(dy: number[], { f, sub, neg }: Arith): number[] {
  const a = (p: number, q: number) => [p, f(p + q), f(sub(p, q)), neg(q)];
  const t: number[][] = [0, 1].map((j) => a(dy[j], dy[2 + j])); // t[j][i]
  return [0, 1, 2, 3].flatMap((i) => a(t[0][i], t[1][i]));
}

/** G^T du G (3x3, row-major) of one 4x4 tile du: a + h, (b - c) / 2, h + e with h = (b + c) / 2 per column, then row. */
function gradTile(du: number[], { f, sub }: Arith): number[] {
  const gt = (a: number, b: number, c: number, e: number) => {
    const h = f(f(b + c) * 0.5);
    return [f(a + h), f(f(sub(b, c)) * 0.5), f(h + e)];
  };
  const t: number[][] = [0, 1, 2, 3].map((j) => gt(du[j], du[4 + j], du[8 + j], du[12 + j])); // t[j][i]
  return [0, 1, 2].flatMap((i) => gt(t[0][i], t[1][i], t[2][i], t[3][i]));
}

/**
 * dW [3, 3, ci, co] (HWIO) of the stride-1 convolution of x [n, h, w, ci] with output gradient dy [n, oh, ow, co]
 * (NHWC), by the Winograd filter gradient of simd/winograd_grad.ts, every operation rounded to float32 (tiles summed
 * in order: images, tile rows, tile columns).
 */
export function winogradFilterGradF32(x: ArrayLike<number>, dy: ArrayLike<number>, c: WinogradCase): Float64Array {
  return runGrad(x, dy, c, F32);
}

/** Per dW value of winogradFilterGradF32, the sum of the magnitudes of every term its float32 run adds (float64). */
export function winogradFilterGradTermSums(x: ArrayLike<number>, dy: ArrayLike<number>, c: WinogradCase): Float64Array {
  return runGrad(abs(x), abs(dy), c, MAGNITUDES);
}

function runGrad(x: ArrayLike<number>, dy: ArrayLike<number>, c: WinogradCase, arith: Arith): Float64Array {
  const { n, h, w, ci, co, pt, pl, oh, ow } = c;
  const { f } = arith;
  const du = new Float64Array(16 * ci * co); // [xi][c][o]
  for (let b = 0; b < n; b++) {
    for (let ty = 0; ty < Math.ceil(oh / 2); ty++) {
      for (let tx = 0; tx < Math.ceil(ow / 2); tx++) {
        const v = inputTiles(x, c, b, ty, tx, arith);
        const d = Array.from({ length: co }, (_, o) =>
          dyTile(
            Array.from({ length: 4 }, (_, t) => {
              const r = 2 * ty + (t >> 1),
                q = 2 * tx + (t & 1);
              return r < oh && q < ow ? dy[((b * oh + r) * ow + q) * co + o] : 0;
            }),
            arith,
          ),
        );
        for (let xi = 0; xi < 16; xi++) {
          for (let k = 0; k < ci; k++) {
            for (let o = 0; o < co; o++) {
              const i = (xi * ci + k) * co + o;
              du[i] = f(du[i] + f(v[k][xi] * d[o][xi]));
            }
          }
        }
      }
    }
  }
  const dw = new Float64Array(9 * ci * co);
  for (let k = 0; k < ci; k++) {
    for (let o = 0; o < co; o++) {
      const g = gradTile(
        Array.from({ length: 16 }, (_, xi) => du[(xi * ci + k) * co + o]),
        arith,
      );
      for (let t = 0; t < 9; t++) dw[(t * ci + k) * co + o] = g[t];
    }
  }
  return dw;
}
