/**
 * Winograd F(2x2, 3x3) convolutions on wasm (src/shared/kernels/wasm/Conv2DWinograd.ts, simd/winograd.ts):
 * - the same bits as a plain-JS run of the same float32 operations (winograd_reference.ts), which also shows the
 *   Winograd path ran (the direct tiles round differently);
 * - within a rounding-error bound of the tfjs cpu backend's conv2d and its input gradient (tf.grads);
 * - deterministic (two calls, same bits), and no tensor leaks.
 *
 * The bound: both results are within gamma_k times the sum of the magnitudes of the terms they add of the exact
 * value (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., section 3.1; gamma_k = k u / (1 - k u),
 * u = 2^-24, k the longest chain of float32 operations). Winograd: k = ci + 13 (filter transform 6, input transform
 * 2, product 1, ci channel additions, output transform 4), the term sum S from winogradTermSums. cpu: k = 9 ci + 1,
 * the term sum sum(|x| |w|) over the 9 ci products (a direct convolution of |x| and |w| in float64). So
 * |wasm - cpu| <= gamma_(ci+13) S + gamma_(9ci+1) sum(|x| |w|). The filter gradient (channel counts multiples of 4
 * in and 8 out), the same way: k = T + 11 for T tiles (input and dy transforms 2 each, product 1, T tile additions,
 * dW transform 6) against the cpu's k = n oh ow + 1 with sum(|x| |dy|).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { conv2DOptions } from '../../src/shared/kernels/wasm/Conv2D.js';
import { winogradOptions } from '../../src/shared/kernels/wasm/Conv2DWinograd.js';
import { assertNoLeak, conv2dF64, randomArray, runOn, tf, useWasm } from './helpers.js';
import { WinogradCase, winogradConvF32, winogradFilterGradF32, winogradFilterGradTermSums, winogradTermSums } from './winograd_reference.js';

/** x [n, h, w, ci], filter [3, 3, ci, co], padding [top, bottom, left, right]. */
type Case = { n: number; h: number; w: number; ci: number; co: number; pad: [number, number, number, number] };

/** Odd and even heights and widths, channel counts below, at and above multiples of 4 and 8, batch 1 to 3. */
const CASES: Case[] = [
  { n: 1, h: 4, w: 4, ci: 4, co: 4, pad: [1, 1, 1, 1] },
  { n: 2, h: 5, w: 7, ci: 5, co: 6, pad: [1, 1, 1, 1] },
  { n: 3, h: 7, w: 6, ci: 9, co: 13, pad: [0, 0, 0, 0] },
  { n: 1, h: 9, w: 11, ci: 16, co: 24, pad: [2, 1, 0, 2] },
  { n: 2, h: 8, w: 8, ci: 19, co: 8, pad: [1, 1, 1, 1] },
  { n: 1, h: 3, w: 2, ci: 7, co: 12, pad: [1, 1, 1, 1] },
  { n: 2, h: 13, w: 10, ci: 32, co: 17, pad: [1, 0, 2, 1] },
];

const name = (c: Case) => `n${c.n} ${c.h}x${c.w}x${c.ci}->${c.co} pad ${c.pad.join(',')}`;
const tfPad = (c: Case): [[0, 0], [number, number], [number, number], [0, 0]] => [
  [0, 0],
  [c.pad[0], c.pad[1]],
  [c.pad[2], c.pad[3]],
  [0, 0],
];
const outSize = (c: Case) => [c.h + c.pad[0] + c.pad[1] - 2, c.w + c.pad[2] + c.pad[3] - 2];
const convArrays = (c: Case, x: Float32Array, filter: Float32Array) => [
  { values: x, shape: [c.n, c.h, c.w, c.ci] },
  { values: filter, shape: [3, 3, c.ci, c.co] },
];

/** The forward case as the reference sees it. */
function forward(c: Case): WinogradCase {
  const [oh, ow] = outSize(c);
  return { n: c.n, h: c.h, w: c.w, ci: c.ci, co: c.co, pt: c.pad[0], pl: c.pad[2], oh, ow };
}

/** dx = the stride-1 convolution of dy with the flipped, in/out-swapped filter, padded by 2 - pad (no crops here). */
function backward(c: Case): WinogradCase {
  const [oh, ow] = outSize(c);
  return { n: c.n, h: oh, w: ow, ci: c.co, co: c.ci, pt: 2 - c.pad[0], pl: 2 - c.pad[2], oh: c.h, ow: c.w };
}

/** [3, 3, co, ci] with tap (a, b) = filter tap (2 - a, 2 - b) transposed. */
function flipSwap(filter: Float32Array, ci: number, co: number): Float32Array {
  const out = new Float32Array(filter.length);
  for (let t = 0; t < 9; t++) {
    for (let k = 0; k < ci; k++) for (let o = 0; o < co; o++) out[(t * co + o) * ci + k] = filter[((8 - t) * ci + k) * co + o];
  }
  return out;
}

const gamma = (k: number) => (k * 2 ** -24) / (1 - k * 2 ** -24);

/** |got - cpu| <= gamma_(ci+13) S + gamma_(9ci+1) sum(|x| |w|) per output (see the file comment). */
function assertWithinBound(got: Float32Array, cpu: Float32Array, x: Float32Array, filter: Float32Array, r: WinogradCase, what: string): void {
  const s = winogradTermSums(x, filter, r);
  const abs = (a: Float32Array) => Float64Array.from(a, Math.abs);
  const direct = conv2dF64(abs(x), [r.n, r.h, r.w, r.ci], abs(filter), [3, 3, r.ci, r.co], 1, r.pt, r.pl, r.oh, r.ow);
  assert.equal(got.length, s.length, `${what}: length`);
  for (let i = 0; i < got.length; i++) {
    const bound = gamma(r.ci + 13) * s[i] + gamma(9 * r.ci + 1) * direct[i];
    assert.ok(Math.abs(got[i] - cpu[i]) <= bound, `${what}: output ${i}: wasm ${got[i]}, cpu ${cpu[i]}, bound ${bound}`);
  }
}

function inputs(c: Case, seed: number) {
  const [oh, ow] = outSize(c);
  return {
    x: randomArray(c.n * c.h * c.w * c.ci, seed),
    filter: randomArray(9 * c.ci * c.co, seed + 1),
    dy: randomArray(c.n * oh * ow * c.co, seed + 2),
  };
}

const conv = (c: Case) => (x: tf.Tensor, f: tf.Tensor) => tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, 1, tfPad(c));
/** dx of sum(conv(x, f) * dy) through tf.grads, i.e. Conv2DBackpropInput with dy. */
const inputGradient = (c: Case) => (x: tf.Tensor, f: tf.Tensor, dy: tf.Tensor) =>
  tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(conv(c)(a, b), dy)))([x, f])[0];

/** Filter-gradient cases: the same geometries, channels rounded up to multiples of 4 in and 8 out (others take the direct kernel). */
const GRAD_CASES: Case[] = CASES.map((c) => ({ ...c, ci: 4 * Math.ceil(c.ci / 4), co: 8 * Math.ceil(c.co / 8) }));

/** dW of sum(conv(x, f) * dy) through tf.grads, i.e. Conv2DBackpropFilter with dy. */
const filterGradient = (c: Case) => (x: tf.Tensor, f: tf.Tensor, dy: tf.Tensor) =>
  tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(conv(c)(a, b), dy)))([x, f])[1];

/** sum over images and output pixels of |x| |dy| per dW value, in float64 (the cpu's term sums). */
function directFilterGradTermSums(x: Float32Array, dy: Float32Array, r: WinogradCase): Float64Array {
  const { n, h, w, ci, co, pt, pl, oh, ow } = r;
  const out = new Float64Array(9 * ci * co);
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < oh; i++) {
      for (let j = 0; j < ow; j++) {
        for (let t = 0; t < 9; t++) {
          const y = i + Math.floor(t / 3) - pt,
            z = j + (t % 3) - pl;
          if (y < 0 || y >= h || z < 0 || z >= w) continue;
          for (let k = 0; k < ci; k++) {
            const xv = Math.abs(x[((b * h + y) * w + z) * ci + k]);
            for (let o = 0; o < co; o++) out[(t * ci + k) * co + o] += xv * Math.abs(dy[((b * oh + i) * ow + j) * co + o]);
          }
        }
      }
    }
  }
  return out;
}

before(useWasm);

describe('Winograd F(2x2, 3x3) Conv2D', () => {
  const saved = { ...conv2DOptions, ...winogradOptions };
  after(() => {
    conv2DOptions.winograd = saved.winograd;
    winogradOptions.blockBytes = saved.blockBytes;
  });

  CASES.forEach((c, i) => {
    it(`${name(c)}: forward, the reference's bits and within the bound of cpu`, async () => {
      const { x, filter } = inputs(c, 1000 + 3 * i);
      const arrays = convArrays(c, x, filter);
      const [got] = await runOn('wasm', arrays, conv(c));
      assert.deepEqual(got, Float32Array.from(winogradConvF32(x, filter, forward(c))), 'bits of the JS reference');
      const [cpu] = await runOn('cpu', arrays, conv(c));
      assertWithinBound(got, cpu, x, filter, forward(c), 'forward vs cpu');
    });

    it(`${name(c)}: input gradient (tf.grads), the reference's bits and within the bound of cpu`, async () => {
      const { x, filter, dy } = inputs(c, 2000 + 3 * i);
      const [oh, ow] = outSize(c);
      const arrays = [...convArrays(c, x, filter), { values: dy, shape: [c.n, oh, ow, c.co] }];
      const [got] = await runOn('wasm', arrays, inputGradient(c));
      const flipped = flipSwap(filter, c.ci, c.co);
      assert.deepEqual(got, Float32Array.from(winogradConvF32(dy, flipped, backward(c))), 'bits of the JS reference');
      const [cpu] = await runOn('cpu', arrays, inputGradient(c));
      assertWithinBound(got, cpu, dy, flipped, backward(c), 'dx vs cpu');
    });
  });

  GRAD_CASES.forEach((c, i) => {
    it(`${name(c)}: filter gradient (tf.grads), the reference's bits and within the bound of cpu`, async () => {
      const { x, filter, dy } = inputs(c, 3000 + 3 * i);
      const [oh, ow] = outSize(c);
      const arrays = [...convArrays(c, x, filter), { values: dy, shape: [c.n, oh, ow, c.co] }];
      const [got] = await runOn('wasm', arrays, filterGradient(c));
      const r = forward(c);
      assert.deepEqual(got, Float32Array.from(winogradFilterGradF32(x, dy, r)), 'bits of the JS reference');
      const [cpu] = await runOn('cpu', arrays, filterGradient(c));
      const s = winogradFilterGradTermSums(x, dy, r);
      const direct = directFilterGradTermSums(x, dy, r);
      const tiles = c.n * Math.ceil(oh / 2) * Math.ceil(ow / 2);
      for (let j = 0; j < got.length; j++) {
        const bound = gamma(tiles + 11) * s[j] + gamma(c.n * oh * ow + 1) * direct[j];
        assert.ok(Math.abs(got[j] - cpu[j]) <= bound, `dW ${j}: wasm ${got[j]}, cpu ${cpu[j]}, bound ${bound}`);
      }
    });
  });

  it('gives the same bits on every call and for every block size (y, dx and dW)', async () => {
    const c: Case = { n: 3, h: 11, w: 9, ci: 12, co: 24, pad: [1, 1, 1, 1] };
    const { x, filter, dy } = inputs(c, 77);
    const [oh, ow] = outSize(c);
    const arrays = [...convArrays(c, x, filter), { values: dy, shape: [c.n, oh, ow, c.co] }];
    const all = (a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) => [conv(c)(a, b), inputGradient(c)(a, b, d), filterGradient(c)(a, b, d)];
    const first = await runOn('wasm', arrays, all);
    assert.deepEqual(await runOn('wasm', arrays, all), first, 'second call');
    // Blocks of one tile row, and all rows in one block.
    for (const bytes of [1, 1 << 26]) {
      winogradOptions.blockBytes = bytes;
      assert.deepEqual(await runOn('wasm', arrays, all), first, `blockBytes ${bytes}`);
    }
    winogradOptions.blockBytes = saved.blockBytes;
  });

  it('is switched off by conv2DOptions.winograd (the direct tiles round differently)', async () => {
    const c: Case = { n: 2, h: 8, w: 8, ci: 16, co: 16, pad: [1, 1, 1, 1] };
    const { x, filter } = inputs(c, 5);
    const arrays = convArrays(c, x, filter);
    conv2DOptions.winograd = false;
    const [direct] = await runOn('wasm', arrays, conv(c));
    conv2DOptions.winograd = true;
    const [wino] = await runOn('wasm', arrays, conv(c));
    assert.notDeepEqual(direct, wino);
    assert.deepEqual(wino, Float32Array.from(winogradConvF32(x, filter, forward(c))));
  });

  it('leaks no tensors (forward and input gradient)', () => {
    const x = tf.ones([2, 7, 5, 6]) as tf.Tensor4D;
    const f = tf.ones([3, 3, 6, 9]) as tf.Tensor4D;
    assertNoLeak(() => {
      tf.tidy(() => {
        tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, 'same')))([x, f]);
      });
    });
    tf.dispose([x, f]);
  });
});
