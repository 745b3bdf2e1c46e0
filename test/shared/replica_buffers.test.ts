import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { GdpError } from '../../src/shared/errors.js';
import { buildModel } from '../../src/shared/models/registry.js';
import { Replica } from '../../src/shared/train/replica.js';
import { randomArray, useBackend } from '../helpers.js';

const SGD = { lr: 0.1, momentum: 0.9, weightDecay: 5e-4, nesterov: false };
// Small images: what is checked (buffer reuse, aliasing) does not depend on the size, and the cpu backend's filter
// gradient (most of this file's time) grows with the pixels.
const HW = 6;

function smallReplica(): Replica {
  return new Replica(buildModel('mnist.resnet20', { seed: 3 }), [HW, HW, 1]);
}

function batchOf(n: number, seed: number) {
  return { x: randomArray(n * HW * HW, seed), y: Int32Array.from({ length: n }, (_, i) => (i * 3) % 10), n };
}

for (const backend of ['wasm', 'cpu'] as const) {
  test(`${backend}: gradients into a reused buffer are the bits of a fresh one; a buffer of another size is refused`, async () => {
    await useBackend(backend);
    const a = smallReplica();
    const layout = a.layout('all');
    const fresh = a.gradients(batchOf(2, 5), layout);
    // Stale values in the buffer must not leak into the result: every element is written.
    const out = new Float32Array(layout.size).fill(Number.NaN);
    const reused = a.gradients(batchOf(2, 5), layout, out);
    assert.equal(reused.grad, out);
    assert.deepEqual(reused.grad, fresh.grad);
    assert.deepEqual(reused.stats, fresh.stats);
    assert.throws(
      () => a.gradients(batchOf(2, 5), layout, new Float32Array(layout.size - 1)),
      (e: unknown) => e instanceof GdpError && e.code === 'INTERNAL',
    );
    a.model.dispose();
  });

  test(`${backend}: an update's uploaded tensors do not alias the host vectors the next update changes`, async () => {
    await useBackend(backend);
    const r = smallReplica();
    const layout = r.layout('all');
    const step = (seed: number) => {
      const { grad } = r.gradients(batchOf(2, seed), layout);
      r.applyGradient(layout, grad, SGD);
    };
    step(7);
    // A clone shares the slot's data: it keeps the values of the first update alive past the second.
    const [name, slot] = [...r.model.namedParameters()][0];
    const kept = tf.clone(slot.value);
    const afterFirst = (kept.dataSync() as Float32Array).slice();
    step(8);
    const now = r.readParams(layout).subarray(0, afterFirst.length);
    assert.notDeepEqual(now, afterFirst, `the second update changed '${name}'`);
    assert.deepEqual(kept.dataSync(), afterFirst, `'${name}' as uploaded by the first update`);
    // And the model computes with the host values.
    assert.deepEqual(slot.value.dataSync(), now);
    kept.dispose();
    r.model.dispose();
  });
}
