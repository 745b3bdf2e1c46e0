/** The wasm convolution kernels (forward, and both gradients under every filter-gradient strategy) against the cpu backend. */
import { after, before, describe, it } from 'node:test';
import { Conv2DBackpropFilter, Conv2DBackpropInput } from '@tensorflow/tfjs-core';
import { conv2DBackpropFilterOptions } from '../../src/shared/kernels/wasm/Conv2DBackpropFilter.js';
import { type ConvCase, convCases, convGeometry, describeCase } from './cases.js';
import { assertClose, randomArray, runOn, size, tf, useWasm } from './helpers.js';

before(useWasm);

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
