/**
 * Blocking choices of the SIMD convolution kernels that must not change a bit of the results:
 * - Conv2D's tiles (src/shared/kernels/wasm/Conv2D.ts, simd/tiles.ts convTile): output widths that leave 1, 2 or 3
 *   columns after the 4-pixel tiles are computed by a narrower tile. Checked against the cpu backend, and bit for
 *   bit against the previous way (the last 4 pixels again, overlapping), which sums every output in the same order.
 * - Conv2DBackpropFilter's image groups (how many images' x and dy one pass keeps in cache): every dW sum adds the
 *   same pixels in the same order whatever the group size.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { conv2DOptions } from '../../src/shared/kernels/wasm/Conv2D.js';
import { conv2DBackpropFilterOptions } from '../../src/shared/kernels/wasm/Conv2DBackpropFilter.js';
import { assertClose, assertNoLeak, randomArray, runOn, tf, useWasm } from './helpers.js';

interface Case {
  n: number;
  h: number;
  w: number;
  ci: number;
  co: number;
  k: number;
  pad: 'same' | 'valid';
}

/** Output widths 4..11 (every remainder mod 4), 8-channel blocks, 4-channel blocks and overlapping ones. */
function cases(): Case[] {
  const out: Case[] = [];
  let i = 0;
  for (const w of [4, 5, 6, 7, 8, 9, 10, 11]) {
    for (const co of [4, 8, 13, 16]) {
      const k = i % 3 === 0 ? 5 : 3;
      const pad = i % 4 === 1 ? 'valid' : 'same';
      out.push({ n: 1 + (i % 2), h: 3 + (i % 5), w: pad === 'valid' ? w + k - 1 : w, ci: [1, 3, 4, 16][i % 4], co, k, pad });
      i++;
    }
  }
  return out;
}

const name = (c: Case) => `n${c.n} ${c.h}x${c.w}x${c.ci}->${c.co} k${c.k} ${c.pad}`;

function arrays(c: Case, seed: number) {
  return [
    { values: randomArray(c.n * c.h * c.w * c.ci, seed), shape: [c.n, c.h, c.w, c.ci] },
    { values: randomArray(c.k * c.k * c.ci * c.co, seed + 1), shape: [c.k, c.k, c.ci, c.co] },
  ];
}

const conv = (c: Case) => (x: tf.Tensor, f: tf.Tensor) => tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, 1, c.pad);

before(useWasm);

// The direct kernels are under test: stride-1 3x3 convolutions and their filter gradients would otherwise run as
// Winograd (winograd.test.ts).
const savedConv2D = { ...conv2DOptions };
before(() => {
  conv2DOptions.winograd = false;
});
after(() => {
  Object.assign(conv2DOptions, savedConv2D);
});

describe('Conv2D remainder tiles', () => {
  const saved = { ...conv2DOptions };
  after(() => {
    conv2DOptions.remainderTiles = saved.remainderTiles;
  });

  cases().forEach((c, i) => {
    it(`${name(c)}: vs cpu, and the same bits as overlapping 4-pixel tiles`, async () => {
      const xs = arrays(c, 900 + 2 * i);
      const [want] = await runOn('cpu', xs, conv(c));
      conv2DOptions.remainderTiles = true;
      const [got] = await runOn('wasm', xs, conv(c));
      conv2DOptions.remainderTiles = false;
      const [overlapping] = await runOn('wasm', xs, conv(c));
      conv2DOptions.remainderTiles = saved.remainderTiles;
      assertClose(got, want, 1e-4, `Conv2D ${name(c)}`);
      assert.deepEqual(got, overlapping, `Conv2D ${name(c)}: remainder tiles vs overlapping tiles`);
    });
  });

  it('leaks no tensors', () => {
    const x = tf.ones([2, 6, 7, 3]) as tf.Tensor4D;
    const f = tf.ones([3, 3, 3, 12]) as tf.Tensor4D;
    assertNoLeak(() => {
      tf.conv2d(x, f, 1, 'same').dispose();
    });
    tf.dispose([x, f]);
  });
});

describe('Conv2DBackpropFilter image groups', () => {
  const saved = { ...conv2DBackpropFilterOptions };
  after(() => {
    Object.assign(conv2DBackpropFilterOptions, saved);
  });

  const shapes: Array<[number, number, number, number, number, 1 | 2]> = [
    // n, h, w, ci, co, stride
    [9, 7, 7, 8, 16, 1],
    [5, 14, 13, 4, 8, 1],
    [6, 9, 9, 16, 12, 2],
  ];
  shapes.forEach(([n, h, w, ci, co, s], i) => {
    it(`n${n} ${h}x${w}x${ci}->${co} s${s}: one image, a few and all images per group give the same bits`, async () => {
      const oh = Math.ceil(h / s),
        ow = Math.ceil(w / s);
      const xs = [
        { values: randomArray(n * h * w * ci, 700 + 2 * i), shape: [n, h, w, ci] },
        { values: randomArray(n * oh * ow * co, 701 + 2 * i), shape: [n, oh, ow, co] },
      ];
      const dW = (x: tf.Tensor, dy: tf.Tensor) =>
        tf
          .engine()
          .runKernel('Conv2DBackpropFilter', { x, dy }, { strides: [s, s], pad: 'same', dataFormat: 'NHWC', filterShape: [3, 3, ci, co] }) as tf.Tensor;
      const [want] = await runOn('cpu', xs, dW);
      const results: Float32Array[] = [];
      conv2DBackpropFilterOptions.strategy = 'simd';
      const imageBytes = 4 * (h * w * Math.ceil(ci / 4) * 4 + oh * ow * Math.ceil(co / 8) * 8);
      for (const groupBytes of [1, 3 * imageBytes, 1 << 30]) {
        conv2DBackpropFilterOptions.groupBytes = groupBytes;
        results.push((await runOn('wasm', xs, dW))[0]);
      }
      Object.assign(conv2DBackpropFilterOptions, saved);
      assertClose(results[0], want, 1e-4, 'dW vs cpu');
      assert.deepEqual(results[1], results[0], 'groups of 3 images vs 1');
      assert.deepEqual(results[2], results[0], 'one group vs 1 image per group');
    });
  });
});
