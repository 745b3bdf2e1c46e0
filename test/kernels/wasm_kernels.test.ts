import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import {
  AvgPoolGrad,
  BatchMatMul,
  Conv2D,
  Conv2DBackpropFilter,
  Conv2DBackpropInput,
  DepthwiseConv2dNativeBackpropFilter,
  DepthwiseConv2dNativeBackpropInput,
  getKernel,
  getKernelsForBackend,
  Identity,
  MaxPoolGrad,
  Mean,
  Sum,
} from '@tensorflow/tfjs-core';

import { conv2DBackpropFilterOptions } from '../../src/shared/kernels/wasm/Conv2DBackpropFilter.js';
import { simdKernels } from '../../src/shared/kernels/wasm/simd/module.js';
import { BatchNormTrainBackward, BatchNormTrainForward, ClipGrad, ReluGrad } from '../../src/shared/kernels/custom_kernels.js';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { registerWasmTrainingKernels, wasmTrainingKernels } from '../../src/shared/kernels/wasm/register_all.js';

import { assertClose, assertNoLeak, conv2dF64, dot, finiteDiff, Pad, randomArray, runOn, size, tf, useWasm, wasmDataIds } from './helpers.js';

type Shape4 = [number, number, number, number];

interface ConvCase {
  n: number;
  h: number;
  w: number;
  ci: number;
  co: number;
  k: number;
  strides: [number, number];
  pad: Pad;
}

function describeCase(c: ConvCase): string {
  return `n${c.n} ${c.h}x${c.w}x${c.ci}->${c.co} k${c.k} s${c.strides.join(',')} pad ${JSON.stringify(c.pad)}`;
}

/** The grid: every kernel/stride/padding combination, varied sizes. */
function convCases(): ConvCase[] {
  const kernels = [1, 3, 7];
  const strides: Array<[number, number]> = [
    [1, 1],
    [2, 2],
  ];
  const pads: Pad[] = [
    'same',
    'valid',
    [
      [0, 0],
      [1, 2],
      [0, 3],
      [0, 0],
    ],
  ];
  const sizes = [7, 9, 15];
  const channels = [1, 3, 16];
  const cases: ConvCase[] = [];
  let i = 0;
  for (const k of kernels) {
    for (const s of strides) {
      for (const pad of pads) {
        const h = sizes[i % 3];
        const w = sizes[(i + 1) % 3];
        if (pad !== 'valid' || (h >= k && w >= k)) {
          cases.push({
            n: i % 2 === 0 ? 1 : 8,
            h,
            w,
            ci: channels[i % 3],
            co: channels[(i + 2) % 3],
            k,
            strides: s,
            pad,
          });
        }
        i++;
      }
    }
  }
  // Shapes the grid misses: unused trailing rows (valid, even size), ResNet
  // shortcut and stem geometry, even kernel, stride 3, unequal strides, and
  // explicit pads that exceed the kernel (negative derived pads).
  cases.push(
    { n: 2, h: 8, w: 10, ci: 3, co: 4, k: 3, strides: [2, 2], pad: 'valid' },
    { n: 8, h: 16, w: 16, ci: 16, co: 32, k: 1, strides: [2, 2], pad: 'same' },
    {
      n: 1,
      h: 15,
      w: 15,
      ci: 3,
      co: 16,
      k: 7,
      strides: [2, 2],
      pad: [
        [0, 0],
        [3, 3],
        [3, 3],
        [0, 0],
      ],
    },
    { n: 2, h: 9, w: 9, ci: 3, co: 5, k: 2, strides: [2, 2], pad: 'same' },
    { n: 2, h: 10, w: 11, ci: 4, co: 3, k: 3, strides: [3, 3], pad: 'same' },
    { n: 2, h: 9, w: 8, ci: 3, co: 4, k: 3, strides: [2, 1], pad: 'same' },
    {
      n: 2,
      h: 7,
      w: 9,
      ci: 2,
      co: 3,
      k: 1,
      strides: [2, 2],
      pad: [
        [0, 0],
        [3, 1],
        [2, 4],
        [0, 0],
      ],
    },
    {
      n: 1,
      h: 7,
      w: 7,
      ci: 2,
      co: 2,
      k: 3,
      strides: [1, 1],
      pad: [
        [0, 0],
        [4, 0],
        [0, 5],
        [0, 0],
      ],
    },
  );
  return cases;
}

function convGeometry(c: ConvCase) {
  return tf.backend_util.computeConv2DInfo([c.n, c.h, c.w, c.ci], [c.k, c.k, c.ci, c.co], c.strides, 1, c.pad);
}

/**
 * The conv gradient kernels as data: their inputs, in seed order, and the
 * attribute giving the shape each one reconstructs.
 */
const backpropKernels = {
  [Conv2DBackpropFilter]: (c: ConvCase, dyShape: number[]) => ({
    inputs: [
      ['x', [c.n, c.h, c.w, c.ci]],
      ['dy', dyShape],
    ] as const,
    attrs: { filterShape: [c.k, c.k, c.ci, c.co] },
  }),
  [Conv2DBackpropInput]: (c: ConvCase, dyShape: number[]) => ({
    inputs: [
      ['dy', dyShape],
      ['filter', [c.k, c.k, c.ci, c.co]],
    ] as const,
    attrs: { inputShape: [c.n, c.h, c.w, c.ci] },
  }),
};

async function checkBackprop(kernel: keyof typeof backpropKernels, c: ConvCase, seed: number): Promise<void> {
  const { inputs, attrs } = backpropKernels[kernel](c, convGeometry(c).outShape);
  const arrays = inputs.map(([, shape], i) => ({
    values: randomArray(size(shape), seed + i),
    shape: shape.slice(),
  }));
  const run = (...xs: tf.Tensor[]) =>
    tf.engine().runKernel(kernel, Object.fromEntries(inputs.map(([name], i) => [name, xs[i]])), {
      strides: c.strides,
      pad: c.pad,
      dataFormat: 'NHWC',
      ...attrs,
    }) as tf.Tensor;
  const [want] = await runOn('cpu', arrays, run);
  const [got] = await runOn('wasm', arrays, run);
  assertClose(got, want, 1e-4, `${kernel} ${describeCase(c)}`);
}

before(useWasm);

describe('registration', () => {
  it('registers every kernel for wasm under tfjs-core or custom_kernels.ts names', () => {
    const names = wasmTrainingKernels.map((k) => k.kernelName).sort();
    assert.deepEqual(
      names,
      [
        AvgPoolGrad,
        BatchMatMul,
        Conv2D,
        Conv2DBackpropFilter,
        Conv2DBackpropInput,
        DepthwiseConv2dNativeBackpropFilter,
        DepthwiseConv2dNativeBackpropInput,
        Identity,
        MaxPoolGrad,
        Mean,
        Sum,
        BatchNormTrainForward,
        BatchNormTrainBackward,
        ReluGrad,
        ClipGrad,
      ].sort(),
    );
    for (const config of wasmTrainingKernels) {
      assert.equal(config.backendName, 'wasm');
      assert.equal(getKernel(config.kernelName, 'wasm'), config);
    }
  });

  it('has the hand-written SIMD kernels on this runtime (else the fast paths fall back)', () => {
    assert.ok(simdKernels(tf.backend() as unknown as BackendWasm));
  });

  it('is idempotent', () => {
    const before = getKernelsForBackend('wasm').length;
    registerWasmTrainingKernels();
    registerWasmTrainingKernels();
    assert.equal(getKernelsForBackend('wasm').length, before);
    for (const config of wasmTrainingKernels) {
      assert.equal(getKernel(config.kernelName, 'wasm'), config);
    }
  });
});

for (const strategy of ['auto', 'im2col', 'swapped', 'simd'] as const) {
  describe(`Conv2DBackpropFilter (${strategy}) vs cpu`, () => {
    const saved = { ...conv2DBackpropFilterOptions };
    before(() => {
      conv2DBackpropFilterOptions.strategy = strategy;
      // Small chunks so that the grid exercises chunk boundaries, and one
      // image per group for the simd path (auto uses whole-batch groups).
      conv2DBackpropFilterOptions.chunkFloats = strategy === 'im2col' ? 1000 : 1 << 18;
      conv2DBackpropFilterOptions.groupBytes = strategy === 'simd' ? 1 : 1 << 19;
    });
    after(() => {
      Object.assign(conv2DBackpropFilterOptions, saved);
    });
    convCases().forEach((c, i) => {
      it(describeCase(c), () => checkBackprop(Conv2DBackpropFilter, c, 100 + 7 * i));
    });
  });
}

describe('Conv2D vs cpu (SIMD path for stride 1 and 4+ output channels, else stock)', () => {
  // The grid as is, and with 8 or 16 output channels (blocks of 8 only) and
  // 5 or 13 (blocks of 8 and 4, overlapping), so that every stride-1 case runs
  // the SIMD kernel's paths, widths not divisible by 4 included.
  const cases = convCases().flatMap((c, i) => [c, { ...c, co: c.co === 16 ? 16 : 8 }, { ...c, co: i % 2 ? 5 : 13 }]);
  cases.forEach((c, i) => {
    it(describeCase(c), async () => {
      const xs = [
        { values: randomArray(c.n * c.h * c.w * c.ci, 500 + i), shape: [c.n, c.h, c.w, c.ci] },
        { values: randomArray(c.k * c.k * c.ci * c.co, 600 + i), shape: [c.k, c.k, c.ci, c.co] },
      ];
      const run = (x: tf.Tensor, f: tf.Tensor) => tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, c.strides, c.pad);
      const [want] = await runOn('cpu', xs, run);
      const [got] = await runOn('wasm', xs, run);
      assertClose(got, want, 1e-4, `Conv2D ${describeCase(c)}`);
    });
  });
});

describe('Conv2DBackpropInput vs cpu', () => {
  convCases().forEach((c, i) => {
    it(describeCase(c), () => checkBackprop(Conv2DBackpropInput, c, 300 + 7 * i));
  });
});

describe('BatchMatMul with transposes vs cpu', () => {
  const cases: Array<{ a: number[]; b: number[]; tA: boolean; tB: boolean }> = [
    { a: [5, 7], b: [7, 3], tA: false, tB: false },
    { a: [7, 5], b: [7, 3], tA: true, tB: false },
    { a: [5, 7], b: [3, 7], tA: false, tB: true },
    { a: [7, 5], b: [3, 7], tA: true, tB: true },
    { a: [3, 9, 4], b: [1, 9, 6], tA: true, tB: false },
    { a: [2, 4, 9], b: [2, 6, 9], tA: false, tB: true },
    { a: [8, 1], b: [3, 8], tA: true, tB: true },
    { a: [64, 10], b: [64, 32], tA: true, tB: false },
  ];
  cases.forEach((c, i) => {
    it(`a[${c.a}]${c.tA ? 'ᵀ' : ''} b[${c.b}]${c.tB ? 'ᵀ' : ''}`, async () => {
      const inputs = [
        { values: randomArray(size(c.a), 500 + i), shape: c.a },
        { values: randomArray(size(c.b), 600 + i), shape: c.b },
      ];
      const run = (a: tf.Tensor, b: tf.Tensor) => tf.matMul(a, b, c.tA, c.tB);
      const [want] = await runOn('cpu', inputs, run);
      const [got] = await runOn('wasm', inputs, run);
      assertClose(got, want, 1e-5, 'matMul');
    });
  });
});

describe('Sum and Mean vs cpu', () => {
  const cases: Array<{ shape: number[]; axis: number[]; keepDims: boolean }> = [
    { shape: [8, 9, 7, 16], axis: [0, 1, 2], keepDims: false },
    { shape: [8, 9, 7, 16], axis: [2, 0, 1], keepDims: true },
    { shape: [8, 9, 7, 3], axis: [0], keepDims: false },
    { shape: [5, 6], axis: [0, 1], keepDims: false },
    { shape: [300, 7], axis: [0], keepDims: true },
    { shape: [64, 16, 16, 8], axis: [0, 1, 2], keepDims: false },
    // Not leading axes: the stock kernels run.
    { shape: [8, 9, 7, 16], axis: [1, 2], keepDims: false },
    { shape: [8, 9, 7, 16], axis: [3], keepDims: true },
  ];
  cases.forEach((c, i) => {
    for (const op of ['sum', 'mean'] as const) {
      it(`${op} [${c.shape}] axis ${c.axis} keepDims ${c.keepDims}`, async () => {
        const inputs = [{ values: randomArray(size(c.shape), 1800 + i), shape: c.shape }];
        const run = (x: tf.Tensor) => tf[op](x, c.axis, c.keepDims);
        const [want] = await runOn('cpu', inputs, run);
        const wantShape = c.keepDims ? c.shape.map((d, j) => (c.axis.includes(j) ? 1 : d)) : c.shape.filter((_, j) => !c.axis.includes(j));
        const got = await runOn('wasm', inputs, (x) => {
          const out = run(x);
          assert.deepEqual(out.shape, wantShape);
          return out;
        });
        assertClose(got[0], want, 1e-5, op);
      });
    }
  });

  it('int32 sums still work (stock kernel)', () => {
    const x = tf.tensor(
      [
        [1, 2],
        [3, 4],
      ],
      [2, 2],
      'int32',
    );
    assert.deepEqual(Array.from(tf.sum(x, 0).dataSync()), [4, 6]);
  });
});

describe('BatchMatMul with the same data as B under two shapes', () => {
  // The stock kernel caches XNNPACK operators by B's tensor id; a reshape
  // shares the id, so the second product used to reuse the first's packed B.
  it('gives the cpu results for both shapes', async () => {
    const inputs = [{ values: randomArray(64 * 16, 1900), shape: [64, 16] }];
    const run = (x: tf.Tensor) => {
      const first = tf.matMul(tf.ones([1, 64]), x);
      first.dataSync();
      const second = tf.matMul(tf.ones([3, 32]), tf.reshape(x, [32, 32]));
      const third = tf.sum(x); // Sum over all axes: B [1024, 1]
      return [first, second, third];
    };
    const want = await runOn('cpu', inputs, run);
    const got = await runOn('wasm', inputs, run);
    want.forEach((w, i) => assertClose(got[i], w, 1e-5, `product ${i}`));
  });
});

describe('Identity', () => {
  it('clones share data and survive the original', () => {
    const x = tf.tensor([1, 2, 3, 4], [2, 2]);
    const ids = wasmDataIds();
    const y = tf.clone(x);
    assert.equal(wasmDataIds(), ids, 'no new buffer');
    x.dispose();
    assert.deepEqual(Array.from(y.dataSync()), [1, 2, 3, 4]);
    assert.deepEqual(y.shape, [2, 2]);
    y.dispose();
    assert.equal(wasmDataIds(), ids - 1, 'buffer freed with the last owner');
  });
});

interface PoolCase {
  shape: Shape4;
  filter: number;
  stride: number;
  pad: 'same' | 'valid';
}

const poolCases: PoolCase[] = [
  { shape: [2, 8, 8, 3], filter: 2, stride: 2, pad: 'valid' },
  { shape: [2, 9, 7, 3], filter: 2, stride: 2, pad: 'valid' },
  { shape: [1, 9, 9, 16], filter: 2, stride: 2, pad: 'same' },
  { shape: [8, 15, 15, 3], filter: 3, stride: 2, pad: 'same' },
  { shape: [2, 7, 9, 1], filter: 3, stride: 1, pad: 'same' },
  { shape: [2, 7, 7, 16], filter: 7, stride: 1, pad: 'valid' },
  { shape: [2, 9, 9, 3], filter: 3, stride: 3, pad: 'valid' },
];

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

/** Small CNN touching every op a ResNet training step uses. */
function cnnLoss(x: tf.Tensor4D, labels: tf.Tensor2D, p: Record<string, tf.Tensor>): tf.Scalar {
  let h: tf.Tensor4D = tf.add(tf.conv2d(x, p.w1 as tf.Tensor4D, 1, 'same'), p.b1);
  const { mean, variance } = tf.moments(h, [0, 1, 2]);
  h = tf.add(tf.mul(tf.div(tf.sub(h, mean), tf.sqrt(tf.add(variance, 1e-5))), p.g), p.beta);
  h = tf.relu(h);
  h = tf.maxPool(h, 3, 2, 'same');
  h = tf.conv2d(h, p.w2 as tf.Tensor4D, 2, 'same');
  h = tf.maxPool(tf.relu(h), 2, 2, 'valid');
  h = tf.add(tf.clipByValue(h, -2, 2), tf.mul(tf.abs(h), 0.1));
  h = tf.add(h, tf.mul(tf.sign(h), 0.01));
  const pooled = tf.add(tf.mean(h, [1, 2]), tf.reshape(tf.avgPool(h, 2, 1, 'valid'), [h.shape[0], -1]));
  const logits = tf.add(tf.matMul(pooled, p.wf), p.bf);
  const ce = tf.losses.softmaxCrossEntropy(labels, logits);
  const nll = tf.neg(tf.mean(tf.sum(tf.mul(labels, tf.logSoftmax(logits)), 1)));
  return tf.add(ce, nll) as tf.Scalar;
}

const cnnShapes: Record<string, number[]> = {
  w1: [3, 3, 3, 8],
  b1: [8],
  g: [8],
  beta: [8],
  w2: [3, 3, 8, 6],
  wf: [6, 5],
  bf: [5],
};

function cnnInputs(batch: number) {
  const names = Object.keys(cnnShapes);
  const arrays = [
    { values: randomArray(batch * 16 * 16 * 3, 2000), shape: [batch, 16, 16, 3] },
    {
      values: Float32Array.from({ length: batch * 5 }, (_, i) => (i % 5 === ((i / 5) | 0) % 5 ? 1 : 0)),
      shape: [batch, 5],
    },
    ...names.map((name, i) => ({
      values: randomArray(size(cnnShapes[name]), 2100 + i).map((v) => (name === 'g' ? 1 + 0.5 * v : v)),
      shape: cnnShapes[name],
    })),
  ];
  const grads = (x: tf.Tensor, labels: tf.Tensor, ...ps: tf.Tensor[]) => {
    const f = (...args: tf.Tensor[]) => cnnLoss(x as tf.Tensor4D, labels as tf.Tensor2D, Object.fromEntries(names.map((n, i) => [n, args[i]])));
    const { value, grads } = tf.valueAndGrads(f)(ps);
    // Top-2 accuracy of some logits, as training loops report it.
    const logits = tf.matMul(tf.mean(x, [1, 2]), tf.reshape(tf.range(0, 15), [3, 5]));
    const top = tf.topk(logits, 2).indices;
    const hit = tf.equal(top, tf.expandDims(tf.argMax(labels, 1), 1));
    const acc = tf.mean(tf.cast(tf.any(hit, 1), 'float32'));
    return [value, ...grads, acc, tf.cast(top, 'float32')];
  };
  return { names, arrays, grads };
}

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

describe('no leaks', () => {
  const c: ConvCase = { n: 2, h: 9, w: 9, ci: 3, co: 4, k: 3, strides: [2, 2], pad: 'same' };
  const info = convGeometry(c);
  const filterGrad = () =>
    tf.engine().runKernel(
      Conv2DBackpropFilter,
      {
        x: tf.ones([c.n, c.h, c.w, c.ci]),
        dy: tf.ones(info.outShape),
      },
      { strides: c.strides, pad: c.pad, filterShape: [3, 3, 3, 4] },
    ) as tf.Tensor;
  /** Runs f with some filter-gradient options set, restoring them after. */
  const withFilterOptions = (options: Partial<typeof conv2DBackpropFilterOptions>, f: () => tf.Tensor) => () => {
    const saved = { ...conv2DBackpropFilterOptions };
    Object.assign(conv2DBackpropFilterOptions, options);
    try {
      return f();
    } finally {
      Object.assign(conv2DBackpropFilterOptions, saved);
    }
  };
  const calls: Record<string, () => tf.Tensor> = {
    [Conv2DBackpropFilter]: filterGrad,
    [Conv2DBackpropFilter + ' 1x1 chunked']: withFilterOptions(
      { chunkFloats: 500 },
      () =>
        tf
          .engine()
          .runKernel(
            Conv2DBackpropFilter,
            { x: tf.ones([2, 9, 9, 3]), dy: tf.ones([2, 9, 9, 8]) },
            { strides: 1, pad: 'valid', filterShape: [1, 1, 3, 8] },
          ) as tf.Tensor,
    ),
    [Conv2DBackpropFilter + ' chunked im2col']: withFilterOptions({ chunkFloats: 500 }, filterGrad),
    [Conv2DBackpropFilter + ' swapped']: withFilterOptions({ strategy: 'swapped' }, filterGrad),
    [Conv2DBackpropFilter + ' im2col']: withFilterOptions({ strategy: 'im2col' }, filterGrad),
    [Conv2DBackpropFilter + ' simd, padded channels']: withFilterOptions({ strategy: 'simd' }, filterGrad),
    'Conv2D simd': () => tf.conv2d(tf.ones([2, 9, 9, 3]) as tf.Tensor4D, tf.ones([3, 3, 3, 8]) as tf.Tensor4D, 1, 'same'),
    [Conv2DBackpropInput]: () =>
      tf.engine().runKernel(
        Conv2DBackpropInput,
        {
          dy: tf.ones(info.outShape),
          filter: tf.ones([3, 3, 3, 4]),
        },
        { strides: c.strides, pad: c.pad, inputShape: [c.n, c.h, c.w, c.ci] },
      ) as tf.Tensor,
    [Conv2DBackpropInput + ' stride 1']: () =>
      tf.engine().runKernel(
        Conv2DBackpropInput,
        {
          dy: tf.ones([2, 9, 9, 4]),
          filter: tf.ones([3, 3, 3, 4]),
        },
        { strides: 1, pad: 'same', inputShape: [2, 9, 9, 3] },
      ) as tf.Tensor,
    [BatchMatMul]: () => tf.matMul(tf.ones([4, 3]), tf.ones([5, 4]), true, true),
    [Sum]: () => tf.sum(tf.ones([4, 3, 5]), [0, 1]),
    [Identity]: () => tf.clone(tf.ones([4, 3])),
    [Mean]: () => tf.mean(tf.ones([4, 3, 5]), [0, 1], true),
    [MaxPoolGrad]: () => tf.grad((x: tf.Tensor) => tf.maxPool(x as tf.Tensor4D, 3, 2, 'same'))(tf.randomUniform([2, 9, 9, 3])),
    [AvgPoolGrad]: () => tf.grad((x: tf.Tensor) => tf.avgPool(x as tf.Tensor4D, 2, 2, 'same'))(tf.randomUniform([2, 9, 9, 3])),
    'CNN step': () => {
      const { arrays, grads } = cnnInputs(2);
      const ts = arrays.map((a) => tf.tensor(a.values, a.shape));
      const out = grads(ts[0], ts[1], ...ts.slice(2));
      return tf.addN(out.map((t) => tf.sum(t)));
    },
  };
  for (const [name, call] of Object.entries(calls)) {
    it(name, () => {
      assertNoLeak(() =>
        tf.tidy(() => {
          call().dataSync();
        }),
      );
    });
  }
});
