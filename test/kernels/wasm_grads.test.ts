/** Pooling gradients against the cpu backend, gradients against float64 finite differences, and a small CNN's step. */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { AvgPoolGrad, MaxPoolGrad } from '@tensorflow/tfjs-core';
import { type ConvCase, cnnInputs, convGeometry, describeCase, type PoolCase, poolCases, type Shape4 } from './cases.js';
import { assertClose, conv2dF64, dot, finiteDiff, randomArray, runOn, size, tf, useWasm } from './helpers.js';

before(useWasm);

describe('pooling gradients vs cpu', () => {
  poolCases.forEach((c, i) => {
    const name = `${c.shape} f${c.filter} s${c.stride} ${c.pad}`;
    const inputs = (outShape: number[]) => [
      { values: randomArray(size(c.shape), 700 + i), shape: c.shape },
      { values: randomArray(size(outShape), 800 + i), shape: outShape },
    ];
    const outShape = tf.backend_util.computePool2DInfo(c.shape, c.filter, c.stride, 1, c.pad).outShape;
    it(`MaxPoolGrad ${name}`, async () => {
      const run = (x: tf.Tensor, dy: tf.Tensor) => {
        const y = tf.maxPool(x as tf.Tensor4D, c.filter, c.stride, c.pad);
        return tf.engine().runKernel(MaxPoolGrad, { dy, input: x, output: y }, { filterSize: c.filter, strides: c.stride, pad: c.pad }) as tf.Tensor;
      };
      const [want] = await runOn('cpu', inputs(outShape), run);
      const [got] = await runOn('wasm', inputs(outShape), run);
      assertClose(got, want, 1e-5, `MaxPoolGrad ${name}`);
    });
    it(`AvgPoolGrad ${name}`, async () => {
      const run = (x: tf.Tensor, dy: tf.Tensor) =>
        tf.engine().runKernel(AvgPoolGrad, { dy, input: x }, { filterSize: c.filter, strides: c.stride, pad: c.pad }) as tf.Tensor;
      const [want] = await runOn('cpu', inputs(outShape), run);
      const [got] = await runOn('wasm', inputs(outShape), run);
      assertClose(got, want, 1e-5, `AvgPoolGrad ${name}`);
    });
  });

  it('MaxPoolGrad breaks ties like the cpu backend (first maximum)', async () => {
    // Post-ReLU activations: many windows are all zeros, others tie too.
    const shape = [2, 9, 9, 4];
    const values = randomArray(size(shape), 950).map((v) => Math.max(0, Math.round(v * 2) / 2));
    const outShape = tf.backend_util.computePool2DInfo(shape as Shape4, 3, 2, 1, 'same').outShape;
    const inputs = [
      { values, shape },
      { values: randomArray(size(outShape), 951), shape: outShape },
    ];
    const run = (x: tf.Tensor, dy: tf.Tensor) =>
      tf
        .engine()
        .runKernel(MaxPoolGrad, { dy, input: x, output: tf.maxPool(x as tf.Tensor4D, 3, 2, 'same') }, { filterSize: 3, strides: 2, pad: 'same' }) as tf.Tensor;
    const [want] = await runOn('cpu', inputs, run);
    const [got] = await runOn('wasm', inputs, run);
    // Same routing; overlapping windows may sum in another order.
    assertClose(got, want, 1e-6, 'MaxPoolGrad with ties');
  });

  it('MaxPoolGrad routes each window to exactly one input on ties', () => {
    // Post-ReLU activations: most windows are all zeros.
    const x = tf
      .relu(tf.tensor(randomArray(2 * 9 * 9 * 4, 900), [2, 9, 9, 4]))
      .sub(0.5)
      .relu() as tf.Tensor4D;
    const y = tf.maxPool(x, 3, 2, 'same');
    const dy = tf.onesLike(y);
    const dx = tf.engine().runKernel(MaxPoolGrad, { dy, input: x, output: y }, { filterSize: 3, strides: 2, pad: 'same' }) as tf.Tensor;
    assert.equal(dx.sum().dataSync()[0], y.size);
    // Every routed position holds its window's max value (0 or positive).
    const xv = x.dataSync(),
      dxv = dx.dataSync();
    for (let i = 0; i < dxv.length; i++) {
      if (dxv[i] !== 0) assert.ok(xv[i] >= 0);
    }
    tf.dispose([x, y, dy, dx]);
  });
});

/** Pooling forward in float64 over explicit padding (NHWC). */
function poolF64(
  x: ArrayLike<number>,
  shape: Shape4,
  f: number,
  s: number,
  padTop: number,
  padLeft: number,
  outH: number,
  outW: number,
  mode: 'max' | 'avg',
): Float64Array {
  const [n, h, w, c] = shape;
  const y = new Float64Array(n * outH * outW * c);
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < outH; i++) {
      for (let j = 0; j < outW; j++) {
        for (let k = 0; k < c; k++) {
          let acc = mode === 'max' ? -Infinity : 0;
          let count = 0;
          for (let p = 0; p < f; p++) {
            const r = i * s + p - padTop;
            if (r < 0 || r >= h) continue;
            for (let q = 0; q < f; q++) {
              const col = j * s + q - padLeft;
              if (col < 0 || col >= w) continue;
              const v = x[((b * h + r) * w + col) * c + k];
              acc = mode === 'max' ? Math.max(acc, v) : acc + v;
              count++;
            }
          }
          y[((b * outH + i) * outW + j) * c + k] = mode === 'max' ? acc : acc / count;
        }
      }
    }
  }
  return y;
}

function sampleIndices(total: number, count: number, seed: number): number[] {
  const r = randomArray(count, seed);
  return Array.from(r, (v) => Math.floor(((v + 1) / 2) * total) % total);
}

describe('gradients vs float64 finite differences (tf.grads on wasm)', () => {
  const convs: ConvCase[] = [
    { n: 2, h: 7, w: 7, ci: 3, co: 4, k: 3, strides: [1, 1], pad: 'same' },
    { n: 2, h: 9, w: 9, ci: 2, co: 3, k: 3, strides: [2, 2], pad: 'same' },
    { n: 1, h: 8, w: 8, ci: 3, co: 2, k: 1, strides: [2, 2], pad: 'valid' },
    {
      n: 1,
      h: 11,
      w: 11,
      ci: 3,
      co: 4,
      k: 7,
      strides: [2, 2],
      pad: [
        [0, 0],
        [3, 3],
        [3, 3],
        [0, 0],
      ],
    },
  ];
  convs.forEach((c, i) => {
    it(`conv2d ${describeCase(c)}`, () => {
      const info = convGeometry(c);
      const xShape = [c.n, c.h, c.w, c.ci];
      const wShape = [c.k, c.k, c.ci, c.co];
      const x32 = randomArray(size(xShape), 1000 + i);
      const w32 = randomArray(size(wShape), 1100 + i);
      const r32 = randomArray(size(info.outShape), 1200 + i);
      const [gx, gw] = tf.tidy(() => {
        const r = tf.tensor(r32, info.outShape);
        const g = tf.grads((x: tf.Tensor, w: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, c.strides, c.pad), r)))([
          tf.tensor(x32, xShape),
          tf.tensor(w32, wShape),
        ]);
        return g.map((t) => t.dataSync());
      });
      const x = Float64Array.from(x32),
        w = Float64Array.from(w32);
      const loss = () => dot(conv2dF64(x, xShape, w, wShape, c.strides[0], info.padInfo.top, info.padInfo.left, info.outHeight, info.outWidth), r32);
      const wIdx = sampleIndices(w.length, 24, 1300 + i);
      const xIdx = sampleIndices(x.length, 24, 1400 + i);
      // The loss is linear in each argument, so central differences are
      // exact up to float64 rounding.
      assertClose(
        wIdx.map((j) => gw[j]),
        finiteDiff(w, wIdx, 1e-3, loss),
        1e-4,
        'dL/dw',
      );
      assertClose(
        xIdx.map((j) => gx[j]),
        finiteDiff(x, xIdx, 1e-3, loss),
        1e-4,
        'dL/dx',
      );
    });
  });

  const pools: Array<PoolCase & { mode: 'max' | 'avg' }> = [
    { shape: [2, 9, 9, 3], filter: 3, stride: 2, pad: 'same', mode: 'max' },
    { shape: [2, 8, 8, 2], filter: 2, stride: 2, pad: 'valid', mode: 'max' },
    { shape: [2, 8, 8, 2], filter: 2, stride: 2, pad: 'valid', mode: 'avg' },
    { shape: [2, 5, 5, 3], filter: 5, stride: 1, pad: 'valid', mode: 'avg' },
  ];
  pools.forEach((c, i) => {
    it(`${c.mode}Pool ${c.shape} f${c.filter} s${c.stride} ${c.pad}`, () => {
      const info = tf.backend_util.computePool2DInfo(c.shape, c.filter, c.stride, 1, c.pad);
      const x32 = randomArray(size(c.shape), 1500 + i);
      const r32 = randomArray(size(info.outShape), 1600 + i);
      const gx = tf.tidy(() => {
        const r = tf.tensor(r32, info.outShape);
        const pool = c.mode === 'max' ? tf.maxPool : tf.avgPool;
        return tf
          .grad((x: tf.Tensor) => tf.sum(tf.mul(pool(x as tf.Tensor4D, c.filter, c.stride, c.pad), r)))(tf.tensor(x32, c.shape))
          .dataSync();
      });
      const x = Float64Array.from(x32);
      const loss = () => dot(poolF64(x, c.shape, c.filter, c.stride, info.padInfo.top, info.padInfo.left, info.outHeight, info.outWidth, c.mode), r32);
      const idx = sampleIndices(x.length, 40, 1700 + i);
      assertClose(
        idx.map((j) => gx[j]),
        finiteDiff(x, idx, 1e-6, loss),
        1e-4,
        'dL/dx',
      );
    });
  });
});

describe('small CNN training step', () => {
  it('wasm gradients match cpu for every parameter', async () => {
    const { names, arrays, grads } = cnnInputs(4);
    const want = await runOn('cpu', arrays, grads);
    const got = await runOn('wasm', arrays, grads);
    assertClose(got[0], want[0], 1e-4, 'loss');
    names.forEach((name, i) => {
      assertClose(got[i + 1], want[i + 1], 1e-3, `d loss / d ${name}`);
    });
    assertClose(got[names.length + 1], want[names.length + 1], 0, 'top-k acc');
    assertClose(got[names.length + 2], want[names.length + 2], 0, 'topk');
  });
});
