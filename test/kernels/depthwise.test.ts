/**
 * The wasm depthwise convolution gradient kernels (DepthwiseConv2dNativeBackpropFilter and ...BackpropInput):
 * every path (SIMD tap kernels, plain loops, and the stock forward kernel on the flipped filter for the input
 * gradient at stride 1) against the cpu backend over a grid of shapes, strides, paddings and channel counts;
 * tfjs' gradient of tf.depthwiseConv2d against float64 finite differences; dilations (which the cpu kernels do not
 * implement) through the adjoint identities with the forward op; a MobileNetV2 block's training step; no leaks.
 * The SIMD micro-kernels at edge sizes: depthwise_simd.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { backend_util, DepthwiseConv2dNativeBackpropFilter, DepthwiseConv2dNativeBackpropInput, getKernel } from '@tensorflow/tfjs-core';

import { depthwiseGradOptions } from '../../src/shared/kernels/wasm/depthwise_common.js';
import { batchNormTrain } from '../../src/shared/nn/batchnorm_train.js';

import { assertClose, assertNoLeak, dot, finiteDiff, Pad, randomArray, runOn, size, tf, useWasm } from './helpers.js';

interface DwCase {
  n: number;
  h: number;
  w: number;
  c: number;
  m: number;
  k: [number, number];
  strides: [number, number];
  pad: Pad;
  dilations?: [number, number];
}

const describeCase = (c: DwCase) =>
  `n${c.n} ${c.h}x${c.w}x${c.c}*${c.m} k${c.k.join('x')} s${c.strides.join(',')} ` +
  `pad ${JSON.stringify(c.pad)}${c.dilations ? ` d${c.dilations.join(',')}` : ''}`;

function geometry(c: DwCase) {
  return backend_util.computeConv2DInfo([c.n, c.h, c.w, c.c], [c.k[0], c.k[1], c.c, c.m], c.strides, c.dilations ?? 1, c.pad, undefined, true);
}

/** The grid: 3x3 stride 1 and 2 under every padding kind and many channel counts, plus other filters and sizes. */
function gridCases(): DwCase[] {
  const cases: DwCase[] = [];
  const pads: Pad[] = [
    'same',
    'valid',
    [
      [0, 0],
      [1, 0],
      [0, 2],
      [0, 0],
    ],
  ];
  const channels = [1, 3, 4, 7, 8, 16, 33];
  let i = 0;
  for (const s of [1, 2]) {
    for (const pad of pads) {
      for (const c of channels) {
        i++;
        const n = 1 + (i % 3);
        cases.push({ n, h: 5 + (i % 4), w: 6 + (i % 3), c, m: 1, k: [3, 3], strides: [s, s], pad });
      }
    }
  }
  cases.push(
    { n: 2, h: 9, w: 7, c: 12, m: 1, k: [5, 5], strides: [2, 2], pad: 'same' },
    { n: 1, h: 8, w: 8, c: 20, m: 1, k: [1, 3], strides: [1, 2], pad: 'same' },
    { n: 3, h: 4, w: 4, c: 24, m: 1, k: [3, 3], strides: [3, 3], pad: 'valid' },
    { n: 2, h: 7, w: 5, c: 36, m: 1, k: [2, 2], strides: [2, 1], pad: 'same' },
    { n: 2, h: 12, w: 12, c: 48, m: 1, k: [3, 3], strides: [2, 2], pad: 'same' },
    { n: 4, h: 2, w: 2, c: 16, m: 1, k: [3, 3], strides: [1, 1], pad: 'same' },
    {
      n: 1,
      h: 3,
      w: 3,
      c: 6,
      m: 1,
      k: [3, 3],
      strides: [1, 1],
      pad: [
        [0, 0],
        [2, 2],
        [2, 2],
        [0, 0],
      ],
    },
    { n: 2, h: 6, w: 5, c: 3, m: 2, k: [3, 3], strides: [1, 1], pad: 'same' },
    { n: 2, h: 7, w: 7, c: 5, m: 3, k: [3, 3], strides: [2, 2], pad: 'same' },
    { n: 1, h: 6, w: 6, c: 4, m: 2, k: [3, 3], strides: [1, 1], pad: 'valid' },
  );
  return cases;
}

const filterPaths = ['simd', 'scalar'] as const;
const inputPaths = ['xnnpack', 'simd', 'scalar'] as const;

function withPaths<T>(filter: typeof depthwiseGradOptions.filter, input: typeof depthwiseGradOptions.input, f: () => T): T {
  const saved = { ...depthwiseGradOptions };
  depthwiseGradOptions.filter = filter;
  depthwiseGradOptions.input = input;
  try {
    return f();
  } finally {
    Object.assign(depthwiseGradOptions, saved);
  }
}

const strideOne = (c: DwCase) => c.strides[0] === 1 && c.strides[1] === 1;

const filterGrad = (c: DwCase) => (x: tf.Tensor, dy: tf.Tensor) =>
  tf
    .engine()
    .runKernel(
      DepthwiseConv2dNativeBackpropFilter,
      { x, dy },
      { strides: c.strides, pad: c.pad, dilations: c.dilations ?? [1, 1], filterShape: [c.k[0], c.k[1], c.c, c.m] },
    ) as tf.Tensor;

const inputGrad = (c: DwCase) => (dy: tf.Tensor, w: tf.Tensor) =>
  tf
    .engine()
    .runKernel(
      DepthwiseConv2dNativeBackpropInput,
      { dy, filter: w },
      { strides: c.strides, pad: c.pad, dilations: c.dilations ?? [1, 1], inputShape: [c.n, c.h, c.w, c.c] },
    ) as tf.Tensor;

function arraysOf(c: DwCase, seed: number) {
  const xShape = [c.n, c.h, c.w, c.c],
    wShape = [c.k[0], c.k[1], c.c, c.m],
    yShape = geometry(c).outShape;
  return {
    x: { values: randomArray(size(xShape), seed), shape: xShape },
    w: { values: randomArray(size(wShape), seed + 1), shape: wShape },
    dy: { values: randomArray(size(yShape), seed + 2), shape: [...yShape] },
  };
}

before(useWasm);

describe('depthwise gradient kernels: registration', () => {
  it('wasm has both kernels', () => {
    assert.ok(getKernel(DepthwiseConv2dNativeBackpropFilter, 'wasm'));
    assert.ok(getKernel(DepthwiseConv2dNativeBackpropInput, 'wasm'));
  });
});

describe('depthwise gradient kernels on wasm vs cpu', () => {
  gridCases().forEach((c, i) => {
    it(describeCase(c), async () => {
      const a = arraysOf(c, 500 + 7 * i);
      const [wantF] = await runOn('cpu', [a.x, a.dy], filterGrad(c));
      const [wantI] = await runOn('cpu', [a.dy, a.w], inputGrad(c));
      for (const path of filterPaths) {
        const [got] = await withPaths(path, 'auto', () => runOn('wasm', [a.x, a.dy], filterGrad(c)));
        assertClose(got, wantF, 1e-5 * Math.sqrt(c.n * c.h * c.w), `dW (${path}) ${describeCase(c)}`);
      }
      for (const path of inputPaths) {
        if (path === 'xnnpack' && !strideOne(c)) continue;
        const [got] = await withPaths('auto', path, () => runOn('wasm', [a.dy, a.w], inputGrad(c)));
        assertClose(got, wantI, 1e-5, `dx (${path}) ${describeCase(c)}`);
      }
    });
  });

  it('rejects a dy that does not have the output shape', () => {
    const c: DwCase = { n: 1, h: 5, w: 5, c: 4, m: 1, k: [3, 3], strides: [1, 1], pad: 'same' };
    tf.tidy(() => {
      assert.throws(() => filterGrad(c)(tf.zeros([1, 5, 5, 4]), tf.zeros([1, 4, 5, 4])), /does not match/);
      assert.throws(() => inputGrad(c)(tf.zeros([1, 5, 5, 3]), tf.zeros([3, 3, 4, 1])), /does not match/);
    });
  });
});

/** Float64 depthwise convolution (NHWC x, [kh, kw, C, M] w) with dilations, under tfjs' geometry. */
function depthwiseF64(c: DwCase, x: ArrayLike<number>, w: ArrayLike<number>): Float64Array {
  const info = geometry(c);
  const { outHeight: oh, outWidth: ow, strideHeight: sh, strideWidth: sw, dilationHeight: dh, dilationWidth: dw } = info;
  const { top, left } = info.padInfo;
  const co = c.c * c.m;
  const y = new Float64Array(c.n * oh * ow * co);
  for (let b = 0; b < c.n; b++) {
    for (let i = 0; i < oh; i++) {
      for (let j = 0; j < ow; j++) {
        for (let p = 0; p < c.k[0]; p++) {
          const r = sh * i + dh * p - top;
          if (r < 0 || r >= c.h) continue;
          for (let q = 0; q < c.k[1]; q++) {
            const col = sw * j + dw * q - left;
            if (col < 0 || col >= c.w) continue;
            for (let ch = 0; ch < c.c; ch++) {
              const xv = x[((b * c.h + r) * c.w + col) * c.c + ch];
              for (let k = 0; k < c.m; k++) {
                y[((b * oh + i) * ow + j) * co + ch * c.m + k] += xv * w[((p * c.k[1] + q) * c.c + ch) * c.m + k];
              }
            }
          }
        }
      }
    }
  }
  return y;
}

describe('depthwise gradients against finite differences (tf.grads of tf.depthwiseConv2d on wasm)', () => {
  const cases: DwCase[] = [
    { n: 2, h: 7, w: 6, c: 8, m: 1, k: [3, 3], strides: [1, 1], pad: 'same' },
    { n: 2, h: 7, w: 8, c: 7, m: 1, k: [3, 3], strides: [2, 2], pad: 'same' },
    { n: 1, h: 6, w: 6, c: 5, m: 2, k: [3, 3], strides: [1, 1], pad: 'valid' },
  ];
  cases.forEach((c, i) => {
    it(describeCase(c), () => {
      const a = arraysOf(c, 900 + 5 * i);
      // L = sum(r * y^2) / 2 is quadratic in every single parameter: central differences are exact up to rounding.
      const r32 = a.dy.values;
      const [gx, gw] = tf.tidy(() => {
        const r = tf.tensor(r32, a.dy.shape);
        const loss = (x: tf.Tensor, w: tf.Tensor) =>
          tf.mul(0.5, tf.sum(tf.mul(r, tf.square(tf.depthwiseConv2d(x as tf.Tensor4D, w as tf.Tensor4D, c.strides, c.pad)))));
        return tf
          .grads(loss)([tf.tensor(a.x.values, a.x.shape), tf.tensor(a.w.values, a.w.shape)])
          .map((t) => t.dataSync());
      });
      const x = Float64Array.from(a.x.values),
        w = Float64Array.from(a.w.values);
      const loss = () => {
        const y = depthwiseF64(c, x, w);
        return (
          0.5 *
          dot(
            y.map((v) => v * v),
            r32,
          )
        );
      };
      const idx = (n: number, seed: number) => Array.from(randomArray(20, seed), (v) => Math.floor(((v + 1) / 2) * n));
      const wi = idx(w.length, 950 + i),
        xi = idx(x.length, 960 + i);
      assertClose(
        wi.map((j) => gw[j]),
        finiteDiff(w, wi, 1e-2, loss),
        1e-4,
        'dL/dw',
      );
      assertClose(
        xi.map((j) => gx[j]),
        finiteDiff(x, xi, 1e-2, loss),
        1e-4,
        'dL/dx',
      );
    });
  });
});

describe('dilated depthwise gradients: adjoint identities with the forward op', () => {
  // The cpu gradient kernels ignore dilations, so these check <dy, conv(x, w)> = <dW, w> = <dx, x> instead,
  // with the forward kernel of either backend (which implement dilations) and a float64 forward.
  const cases: DwCase[] = [
    { n: 2, h: 9, w: 8, c: 8, m: 1, k: [3, 3], strides: [1, 1], pad: 'same', dilations: [2, 2] },
    { n: 1, h: 10, w: 9, c: 7, m: 1, k: [3, 2], strides: [1, 1], pad: 'valid', dilations: [2, 3] },
    {
      n: 2,
      h: 8,
      w: 8,
      c: 4,
      m: 2,
      k: [3, 3],
      strides: [1, 1],
      pad: [
        [0, 0],
        [1, 3],
        [2, 0],
        [0, 0],
      ],
      dilations: [2, 1],
    },
  ];
  cases.forEach((c, i) => {
    it(describeCase(c), async () => {
      const a = arraysOf(c, 1500 + 3 * i);
      const want = dot(depthwiseF64(c, a.x.values, a.w.values), a.dy.values);
      const [y] = await runOn('wasm', [a.x, a.w], (x, w) => tf.depthwiseConv2d(x as tf.Tensor4D, w as tf.Tensor4D, c.strides, c.pad, 'NHWC', c.dilations));
      assertClose([dot(y, a.dy.values)], [want], 1e-5, 'forward');
      for (const path of filterPaths) {
        const [dw] = await withPaths(path, 'auto', () => runOn('wasm', [a.x, a.dy], filterGrad(c)));
        assertClose([dot(dw, a.w.values)], [want], 1e-5, `<dW, w> (${path})`);
      }
      for (const path of inputPaths) {
        const [dx] = await withPaths('auto', path, () => runOn('wasm', [a.dy, a.w], inputGrad(c)));
        assertClose([dot(dx, a.x.values)], [want], 1e-5, `<dx, x> (${path})`);
      }
    });
  });
});

describe('a MobileNetV2 inverted residual block: training step on wasm vs cpu', () => {
  // 1x1 conv -> BN -> ReLU6 -> 3x3 depthwise -> BN -> ReLU6 (as clipByValue) -> 1x1 conv -> BN (+ x): every
  // gradient kernel the step needs on wasm (depthwise, clip, batch norm, convolutions) against cpu's.
  for (const [stride, cin, cout] of [
    [1, 4, 4],
    [2, 4, 8],
  ] as const) {
    it(`stride ${stride}, ${cin} -> ${cout} channels, expansion 6`, async () => {
      const e = 6 * cin;
      const shapes = [
        [2, 9, 9, cin],
        [1, 1, cin, e],
        [e],
        [e],
        [3, 3, e, 1],
        [e],
        [e],
        [1, 1, e, cout],
        [cout],
        [cout],
        [2, Math.ceil(9 / stride), Math.ceil(9 / stride), cout],
      ];
      const arrays = shapes.map((shape, k) => ({ values: randomArray(size(shape), 4000 + 10 * stride + k), shape }));
      const step = (x: tf.Tensor, ...p: tf.Tensor[]) => {
        const r = p[9];
        const bn = (t: tf.Tensor, a: tf.Tensor, c: tf.Tensor) => batchNormTrain(t as tf.Tensor4D, a as tf.Tensor1D, c as tf.Tensor1D, 1e-5, () => {});
        const f = (xi: tf.Tensor, ...q: tf.Tensor[]) => {
          let h = tf.relu6(bn(tf.conv2d(xi as tf.Tensor4D, q[0] as tf.Tensor4D, 1, 'same'), q[1], q[2]));
          h = tf.clipByValue(bn(tf.depthwiseConv2d(h as tf.Tensor4D, q[3] as tf.Tensor4D, stride, 'same'), q[4], q[5]), 0, 6);
          h = bn(tf.conv2d(h as tf.Tensor4D, q[6] as tf.Tensor4D, 1, 'same'), q[7], q[8]);
          return tf.sum(tf.mul(stride === 1 && cin === cout ? tf.add(h, xi) : h, r));
        };
        return tf.grads(f)([x, ...p.slice(0, 9)]);
      };
      const want = await runOn('cpu', arrays, step);
      const got = await runOn('wasm', arrays, step);
      want.forEach((w, k) => assertClose(got[k], w, 2e-4, `gradient ${k} (shape [${shapes[k]}])`));
    });
  }
});

describe('depthwise gradient kernels do not leak', () => {
  const c: DwCase = { n: 2, h: 6, w: 6, c: 7, m: 2, k: [3, 3], strides: [2, 2], pad: 'same' };
  const c1: DwCase = { ...c, c: 8, m: 1, strides: [1, 1] };
  for (const [filter, input] of [
    ['simd', 'simd'],
    ['scalar', 'scalar'],
    ['auto', 'xnnpack'],
  ] as const) {
    it(`filter ${filter}, input ${input}`, () => {
      withPaths(filter, input, () => {
        for (const cc of input === 'xnnpack' ? [c1] : [c, c1]) {
          const x = tf.randomNormal([cc.n, cc.h, cc.w, cc.c]);
          const w = tf.randomNormal([cc.k[0], cc.k[1], cc.c, cc.m]);
          const dy = tf.randomNormal(geometry(cc).outShape);
          assertNoLeak(() => {
            tf.dispose([filterGrad(cc)(x, dy), inputGrad(cc)(dy, w)]);
            tf.tidy(() => {
              tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.depthwiseConv2d(a as tf.Tensor4D, b as tf.Tensor4D, cc.strides, cc.pad)))([x, w]);
            });
          });
          tf.dispose([x, w, dy]);
        }
      });
    });
  }
});

after(() => {
  depthwiseGradOptions.filter = 'auto';
  depthwiseGradOptions.input = 'auto';
});
