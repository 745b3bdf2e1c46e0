/**
 * gdp's wasm training kernels: their registration, matrix products and leading-axis reductions against the cpu
 * backend, Identity's shared buffers, and no leaks from any of them. Convolutions: wasm_conv.test.ts; pooling and
 * finite-difference gradients: wasm_grads.test.ts.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';

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

import { type ConvCase, cnnInputs, convGeometry } from './cases.js';
import { assertClose, assertNoLeak, randomArray, runOn, size, tf, useWasm, wasmDataIds } from './helpers.js';

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
