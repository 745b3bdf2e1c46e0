import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadMnist } from '../../src/shared/data/mnist.js';

test('MNIST split: first 80% of each digit trains, the rest tests (7,996 / 2,004)', () => {
  const { train, test: testSet } = loadMnist();
  assert.equal(train.size, 7996);
  assert.equal(testSet.size, 2004);
  assert.deepEqual(train.shape, [28, 28, 1]);
  const perClass = (labels: Int32Array) => {
    const c = new Array(10).fill(0);
    for (const l of labels) c[l]++;
    return c;
  };
  // Counts per digit in the mnist package: 1001 1127 991 1032 980 863 1014 1070 944 978.
  assert.deepEqual(perClass(train.labels), [800, 901, 792, 825, 784, 690, 811, 856, 755, 782]);
  assert.deepEqual(perClass(testSet.labels), [201, 226, 199, 207, 196, 173, 203, 214, 189, 196]);
});

test('MNIST is normalised by the training set mean and std', async () => {
  const { train, test: testSet } = loadMnist();
  const all = await train.load(
    Array.from({ length: train.size }, (_, i) => i),
    { augment: false, seed: 0 },
  );
  let s = 0;
  let q = 0;
  for (const v of all.x) {
    s += v;
    q += v * v;
  }
  const mean = s / all.x.length;
  assert.ok(Math.abs(mean) < 1e-4, `train mean ${mean}`);
  assert.ok(Math.abs(Math.sqrt(q / all.x.length - mean * mean) - 1) < 1e-4);
  const t = await testSet.load([0, 2003], { augment: false, seed: 0 });
  assert.deepEqual(Array.from(t.y), [0, 9]);
  await assert.rejects(testSet.load([2004], { augment: false, seed: 0 }), {
    code: 'BAD_MESSAGE',
    message: /sample index 2004 is not a whole number in \[0, 2004\)/,
  });
});
