import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { buildModel } from '../../src/shared/models/registry.js';
import { Replica } from '../../src/shared/train/replica.js';
import { randomArray, useBackend } from '../helpers.js';

test("200 training steps on wasm leave tf.memory().numTensors and the backend's buffers flat", async () => {
  await useBackend('wasm');
  const model = buildModel('mnist.resnet20', { seed: 1 });
  const replica = new Replica(model, [8, 8, 1]);
  const all = replica.layout('all');
  const batch = { x: randomArray(4 * 8 * 8, 3), y: Int32Array.of(1, 2, 3, 4), n: 4 };
  const step = (i: number) => {
    const { grad } = replica.gradients(batch, all);
    replica.applyGradient(
      all,
      grad.map((v) => v / batch.n),
      { lr: 0.01, momentum: 0.9, weightDecay: 5e-4, nesterov: i % 2 === 0 },
    );
    if (i % 50 === 0) replica.evaluate(batch);
  };
  step(0);
  const tensors = tf.memory().numTensors;
  const dataIds = tf.engine().backend.numDataIds();
  for (let i = 1; i <= 200; i++) step(i);
  assert.equal(tf.memory().numTensors, tensors);
  assert.equal(tf.engine().backend.numDataIds(), dataIds);
  model.dispose();
});
