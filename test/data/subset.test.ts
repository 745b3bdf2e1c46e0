import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import { parseConfig } from '../../src/shared/config/load.js';
import { loadDataset } from '../../src/shared/data/index.js';
import { SubsetDataset, stratifiedSubset } from '../../src/shared/data/subset.js';
import { Rng } from '../../src/shared/rng.js';

function mnistConfig(testSubset: number) {
  return parseConfig({
    base: { task_name: 'subset_test' },
    model: { name: 'mnist.resnet20', num_class: 10 },
    train: { max_epoch: 1, steplr: [[1, 0.1]] },
    data: { type: 'mnist', batch_size: 4, test_batch_size: 4, test_subset: testSubset },
    loss: { criterion: 'softmax' },
  });
}

function countsOf(labels: ArrayLike<number>, classes: number): number[] {
  const counts = new Array<number>(classes).fill(0);
  for (let i = 0; i < labels.length; i++) counts[labels[i]]++;
  return counts;
}

describe('data.test_subset', () => {
  it('takes all ten MNIST digits in proportion, the same subset on every load', async () => {
    // Independently of the loader: the mnist package's per-digit files, of which the last 20% are the test split.
    const require = createRequire(import.meta.url);
    const testPerDigit = Array.from({ length: 10 }, (_, d) => {
      const n = (require(`mnist/src/digits/${d}.json`) as { data: number[] }).data.length / 784;
      return n - Math.floor(n * 0.8);
    });
    const total = testPerDigit.reduce((a, b) => a + b, 0);
    assert.equal(total, 2004);

    const a = await loadDataset(mnistConfig(500));
    const b = await loadDataset(mnistConfig(500));
    assert.equal(a.test.size, 500);
    const counts = countsOf(a.test.labels, 10);
    for (let d = 0; d < 10; d++) {
      const exact = (500 * testPerDigit[d]) / total;
      assert.ok(Math.abs(counts[d] - exact) <= 1, `digit ${d}: ${counts[d]} samples, proportional share ${exact.toFixed(2)}`);
    }
    assert.deepEqual(a.test.labels, b.test.labels);
    const all = Int32Array.from({ length: 500 }, (_, i) => i);
    const [xa, xb] = await Promise.all([a.test.load(all, { augment: false, seed: 0 }), b.test.load(all, { augment: false, seed: 0 })]);
    assert.deepEqual(xa, xb);
    // Subset sample i is the full test set's sample members[i], images and labels.
    const members = (a.test as SubsetDataset).members;
    const full = await loadDataset(mnistConfig(10000));
    assert.equal(full.test.size, total);
    const direct = await full.test.load(members, { augment: false, seed: 0 });
    assert.deepEqual(xa.x, direct.x);
    assert.deepEqual(xa.y, direct.y);
  });

  it('gives each class its share within one sample, distinct ascending indices, for any class layout', () => {
    const rng = new Rng(11);
    for (let trial = 0; trial < 200; trial++) {
      const classes = 1 + rng.int(12);
      const size = 1 + rng.int(400);
      // Sorted by class half of the time (as MNIST's split and ImageNet's folders), shuffled otherwise.
      const labels = Int32Array.from({ length: size }, () => rng.int(classes));
      if (trial % 2) labels.sort();
      const n = 1 + rng.int(size + 10);
      const idx = stratifiedSubset(labels, n);
      assert.equal(idx.length, Math.min(n, size));
      for (let i = 1; i < idx.length; i++) assert.ok(idx[i] > idx[i - 1], `trial ${trial}: not strictly ascending`);
      assert.ok(idx[0] >= 0 && idx[idx.length - 1] < size);
      const have = countsOf(labels, classes);
      const got = countsOf(
        Array.from(idx, (k) => labels[k]),
        classes,
      );
      for (let c = 0; c < classes; c++) {
        const exact = (Math.min(n, size) * have[c]) / size;
        assert.ok(Math.abs(got[c] - exact) < 1, `trial ${trial} class ${c}: ${got[c]} of ${have[c]}, share ${exact}`);
      }
    }
  });

  it('spreads a class over its own order instead of taking its first samples', () => {
    // 100 samples of class 0, then 100 of class 1; 10 drawn: 5 each, the middle of each run of 20.
    const labels = Int32Array.from({ length: 200 }, (_, i) => (i < 100 ? 0 : 1));
    assert.deepEqual(Array.from(stratifiedSubset(labels, 10)), [10, 30, 50, 70, 90, 110, 130, 150, 170, 190]);
  });
});
