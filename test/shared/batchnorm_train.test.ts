import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { batchNormTrain } from '../../src/shared/nn/batchnorm_train.js';
import { maxAbsDiff, randomArray, useBackend } from '../helpers.js';

before(() => useBackend('cpu'));

/** The textbook composition, differentiated by tfjs' autograd: the reference path. */
function reference(x: tf.Tensor4D, a: tf.Tensor1D, c: tf.Tensor1D): tf.Tensor {
  const { mean, variance } = tf.moments(x, [0, 1, 2]);
  return tf.add(tf.mul(tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, 1e-5))), a), c);
}

for (const shape of [
  [2, 3, 5, 4],
  [8, 4, 4, 16],
  [1, 7, 7, 3],
] as [number, number, number, number][]) {
  test(`fused BN forward and gradients equal autograd's for x ${shape.join('x')}`, () => {
    const ch = shape[3];
    const x = tf.tensor4d(
      randomArray(
        shape.reduce((p, q) => p * q, 1),
        11,
        2,
      ),
      shape,
    );
    const a = tf.tensor1d(randomArray(ch, 12, 1.5));
    const c = tf.tensor1d(randomArray(ch, 13, 0.5));
    // A non-uniform upstream gradient so every term of the backward pass matters.
    const w = tf.tensor4d(randomArray(x.size, 14), shape);
    const stats: Float32Array[] = [];
    const keepStats = (m: tf.Tensor, v: tf.Tensor) => stats.push(m.dataSync() as Float32Array, v.dataSync() as Float32Array);
    const fused = tf.grads((xi: tf.Tensor, ai: tf.Tensor, ci: tf.Tensor) =>
      tf.sum(tf.mul(batchNormTrain(xi as tf.Tensor4D, ai as tf.Tensor1D, ci as tf.Tensor1D, 1e-5, keepStats), w)),
    )([x, a, c]);
    const ref = tf.grads((xi: tf.Tensor, ai: tf.Tensor, ci: tf.Tensor) =>
      tf.sum(tf.mul(reference(xi as tf.Tensor4D, ai as tf.Tensor1D, ci as tf.Tensor1D), w)),
    )([x, a, c]);
    const names = ['dx', 'da', 'dc'];
    fused.forEach((g, i) => {
      const d = maxAbsDiff(g.dataSync(), ref[i].dataSync());
      assert.ok(d < 1e-4, `${names[i]} differs by ${d}`);
    });
    const yf = batchNormTrain(x, a, c, 1e-5, keepStats);
    assert.ok(maxAbsDiff(yf.dataSync(), reference(x, a, c).dataSync()) < 1e-5);
    const { mean, variance } = tf.moments(x, [0, 1, 2]);
    assert.ok(maxAbsDiff(stats[0], mean.dataSync()) < 1e-6);
    assert.ok(maxAbsDiff(stats[1], variance.dataSync()) < 1e-6);
    tf.dispose([x, a, c, w, yf, mean, variance, ...fused, ...ref]);
  });
}

test('fused BN frees everything it makes', () => {
  const x = tf.tensor4d(randomArray(2 * 4 * 4 * 3, 1), [2, 4, 4, 3]);
  const a = tf.ones([3]) as tf.Tensor1D;
  const c = tf.zeros([3]) as tf.Tensor1D;
  const run = () =>
    tf.tidy(() => {
      tf.grads((xi: tf.Tensor) => tf.sum(batchNormTrain(xi as tf.Tensor4D, a, c, 1e-5, () => {})))([x]);
    });
  run();
  const n0 = tf.memory().numTensors;
  for (let i = 0; i < 5; i++) run();
  assert.equal(tf.memory().numTensors, n0);
  tf.dispose([x, a, c]);
});
