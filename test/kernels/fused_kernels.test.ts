/**
 * The fused wasm training kernels (batch norm forward/backward, ReLU gradient) against the cpu backend, which runs
 * the same maths composed from tfjs ops. Both the SIMD passes and their plain-loop fallback are checked, on channel
 * counts that are and are not multiples of 4 and on sizes spanning several reduction blocks.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { batchNormTrain } from '../../src/shared/nn/batchnorm_train.js';
import { relu } from '../../src/shared/nn/relu.js';
import { channelPassOptions } from '../../src/shared/kernels/wasm/channel_ops.js';
import { BatchNormTrainForward, ClipGrad, hasKernel, ReluGrad } from '../../src/shared/kernels/custom_kernels.js';
import { assertClose, assertNoLeak, randomArray, runOn, size, tf, useWasm } from './helpers.js';

type Shape4 = [number, number, number, number];

const shapes: Shape4[] = [
  [2, 3, 5, 4],
  [1, 7, 7, 3],
  [3, 5, 3, 13],
  [8, 32, 32, 16],
  [4, 9, 9, 64],
];

/** y, mean, variance, dx, da, dc of a batch-norm training step with a non-uniform upstream gradient. */
function bnStep(x: tf.Tensor, a: tf.Tensor, c: tf.Tensor, w: tf.Tensor): tf.Tensor[] {
  const stats: tf.Tensor[] = [];
  const f = (xi: tf.Tensor, ai: tf.Tensor, ci: tf.Tensor) => {
    const y = batchNormTrain(xi as tf.Tensor4D, ai as tf.Tensor1D, ci as tf.Tensor1D, 1e-5, (m, v) => {
      stats.push(tf.keep(m.clone()), tf.keep(v.clone()));
    });
    stats.push(tf.keep(y.clone()));
    return tf.sum(tf.mul(y, w));
  };
  const grads = tf.grads(f)([x, a, c]);
  return [stats[2], stats[0], stats[1], ...grads];
}

function bnArrays(shape: Shape4, seed: number) {
  const ch = shape[3];
  return [
    // An offset mean, so that the centred sums matter.
    { values: randomArray(size(shape), seed).map((v) => 3 + 2 * v), shape },
    { values: randomArray(ch, seed + 1), shape: [ch] },
    { values: randomArray(ch, seed + 2), shape: [ch] },
    { values: randomArray(size(shape), seed + 3), shape },
  ];
}

before(useWasm);

describe('fused kernels registration', () => {
  it('wasm has them, cpu composes tfjs ops instead', async () => {
    assert.ok(hasKernel(BatchNormTrainForward));
    assert.ok(hasKernel(ReluGrad));
    assert.ok(hasKernel(ClipGrad));
    await tf.setBackend('cpu');
    try {
      assert.ok(!hasKernel(BatchNormTrainForward));
      assert.ok(!hasKernel(ClipGrad));
    } finally {
      await tf.setBackend('wasm');
    }
  });
});

for (const useSimd of [true, false]) {
  describe(`batch norm training step on wasm vs cpu (${useSimd ? 'SIMD' : 'plain loops'})`, () => {
    before(() => {
      channelPassOptions.useSimd = useSimd;
    });
    after(() => {
      channelPassOptions.useSimd = true;
    });
    shapes.forEach((shape, i) => {
      it(`x ${shape.join('x')}`, async () => {
        const arrays = bnArrays(shape, 40 + 5 * i);
        const want = await runOn('cpu', arrays, bnStep);
        const got = await runOn('wasm', arrays, bnStep);
        ['y', 'mean', 'variance', 'dx', 'da', 'dc'].forEach((name, k) => {
          assertClose(got[k], want[k], 2e-4, `${name} of x ${shape.join('x')}`);
        });
      });
    });
  });

  describe(`relu gradient on wasm vs cpu (${useSimd ? 'SIMD' : 'plain loops'})`, () => {
    before(() => {
      channelPassOptions.useSimd = useSimd;
    });
    after(() => {
      channelPassOptions.useSimd = true;
    });
    for (const shape of [
      [2, 5, 5, 3],
      [4, 8, 8, 16],
    ]) {
      it(`x ${shape.join('x')}`, async () => {
        const values = randomArray(size(shape), 77);
        // Exact zeros: the gradient there is 0 on both backends.
        for (let j = 0; j < values.length; j += 7) values[j] = 0;
        const arrays = [
          { values, shape },
          { values: randomArray(size(shape), 78), shape },
        ];
        const step = (x: tf.Tensor, w: tf.Tensor) => {
          const { value, grads } = tf.valueAndGrads((xi: tf.Tensor) => tf.sum(tf.mul(relu(xi), w)))([x]);
          return [value, grads[0]];
        };
        const want = await runOn('cpu', arrays, step);
        const got = await runOn('wasm', arrays, step);
        assertClose(got[0], want[0], 1e-5, 'relu output sum');
        assertClose(got[1], want[1], 0, 'relu gradient');
      });
    }
  });
}

describe('clip gradients (tf.relu6, tf.clipByValue) vs their masks', () => {
  /** x in (-9, 7) with exact ties at the clip bounds and at 0 and 6; the mask computed here in JS. */
  const cases: Array<[string, number, number, boolean, (x: tf.Tensor) => tf.Tensor]> = [
    ['relu6', 0, 6, false, (x) => tf.relu6(x)],
    ['clipByValue(-0.5, 0.5)', -0.5, 0.5, true, (x) => tf.clipByValue(x, -0.5, 0.5)],
  ];
  for (const [name, lo, hi, loInclusive, f] of cases) {
    for (const shape of [
      [2, 5, 5, 3],
      [4, 8, 8, 16],
      [3, 7],
    ]) {
      const values = randomArray(size(shape), 91).map((v) => 8 * v - 1);
      [0, 6, lo, hi].forEach((tie, k) => {
        for (let j = k; j < values.length; j += 9) values[j] = tie;
      });
      const dy = randomArray(size(shape), 92);
      const want = dy.map((d, j) => ((loInclusive ? values[j] >= lo : values[j] > lo) && values[j] <= hi ? d : 0));
      const arrays = [
        { values, shape },
        { values: dy, shape },
      ];
      const grad = (x: tf.Tensor, d: tf.Tensor) => tf.grad((xi: tf.Tensor) => tf.sum(tf.mul(f(xi), d)))(x);
      for (const [backend, useSimd] of [
        ['wasm', true],
        ['wasm', false],
        ['cpu', true],
      ] as const) {
        it(`${name} x ${shape.join('x')} on ${backend}${useSimd ? '' : ' (plain loops)'}`, async () => {
          channelPassOptions.useSimd = useSimd;
          try {
            const [got] = await runOn(backend, arrays, grad);
            assertClose(got, want, 0, `${name} gradient`);
          } finally {
            channelPassOptions.useSimd = true;
          }
        });
      }
    }
  }
});

describe('fused kernels free what they make', () => {
  it('batch norm step, relu and clip gradients', () => {
    const [x, a, c, w] = bnArrays([2, 5, 5, 6], 9).map((v) => tf.tensor(v.values, v.shape));
    const once = () =>
      tf.tidy(() => {
        const out = bnStep(x, a, c, w);
        out.push(tf.grad((xi: tf.Tensor) => tf.sum(relu(xi)))(x));
        out.push(tf.grad((xi: tf.Tensor) => tf.sum(tf.relu6(xi)))(x), tf.grad((xi: tf.Tensor) => tf.sum(tf.clipByValue(xi, -1, 1)))(x));
        out.forEach((t) => t.dataSync());
        tf.dispose(out);
      });
    assertNoLeak(once);
    tf.dispose([x, a, c, w]);
  });
});
