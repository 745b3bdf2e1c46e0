import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { applyOverrides, parseConfig } from '../../src/shared/config/load.js';
import { loadDataset } from '../../src/shared/data/index.js';
import { GdpError } from '../../src/shared/errors.js';
import { CIFAR10_TEST_LABELS, CIFAR10_TRAIN_LABELS, writeTinyCifar10 } from './cifar_files.js';

const BASE = {
  base: { task_name: 'data_test' },
  model: { name: 'cifar.resnet20', num_class: 10 },
  train: { max_epoch: 1, steplr: [[1, 0.1]] },
  data: { type: 'cifar10', batch_size: 4, test_batch_size: 4, num_workers: 0 },
  loss: { criterion: 'softmax' },
};

function config(overrides: string[]) {
  return parseConfig(applyOverrides(structuredClone(BASE), overrides));
}

describe('loadDataset', () => {
  const t = writeTinyCifar10();
  after(() => rmSync(t.parent, { recursive: true, force: true }));

  it('reads data.dir, and --data-dir overrides it', async () => {
    for (const [overrides, opts] of [
      [[`data.dir=${t.parent}`], {}],
      [['data.dir=/nonexistent'], { dataDir: t.folder }],
    ] as const) {
      const pair = await loadDataset(config([...overrides]), opts);
      assert.deepEqual(Array.from(pair.train.labels), CIFAR10_TRAIN_LABELS);
      assert.deepEqual(Array.from(pair.test.labels), CIFAR10_TEST_LABELS);
      await pair.close?.();
    }
  });

  it('asks for data.dir or --data-dir when neither is given', async () => {
    await assert.rejects(loadDataset(config([])), (err: unknown) => {
      assert.ok(err instanceof GdpError && err.code === 'BAD_CONFIG', String(err));
      assert.match(err.message, /data\.dir/);
      assert.match(err.message, /--data-dir/);
      return true;
    });
  });

  it('rejects a model whose class count does not match the data', async () => {
    await assert.rejects(
      loadDataset(config(['model.num_class=100', 'data.type=cifar10', `data.dir=${t.parent}`])),
      /model\.num_class: 100, but cifar10 has 10 classes/,
    );
  });

  it('cuts the test set to data.test_subset, and loads the same samples through the pool', async () => {
    const inThread = await loadDataset(config([`data.dir=${t.parent}`, 'data.test_subset=2']));
    const pooled = await loadDataset(config([`data.dir=${t.parent}`, 'data.test_subset=2', 'data.num_workers=2']));
    const full = await loadDataset(config([`data.dir=${t.parent}`]));
    try {
      assert.equal(inThread.test.size, 2);
      // Labels 2, 8, 4, one sample each: two of three classes get one, ties going to the smaller labels (2 and 4).
      assert.deepEqual(Array.from(inThread.test.labels), [CIFAR10_TEST_LABELS[0], CIFAR10_TEST_LABELS[2]]);
      assert.deepEqual((await inThread.test.load([1], { augment: false, seed: 0 })).x, (await full.test.load([2], { augment: false, seed: 0 })).x);
      await assert.rejects(inThread.test.load([2], { augment: false, seed: 0 }), {
        name: 'GdpError',
        code: 'BAD_MESSAGE',
        message: /sample index 2 .*\[0, 2\)/,
      });
      const a = await inThread.train.load([5, 0, 2], { augment: true, seed: 4 });
      const b = await pooled.train.load([5, 0, 2], { augment: true, seed: 4 });
      assert.deepEqual(a, b);
    } finally {
      await pooled.close?.();
    }
  });

  it('still serves MNIST without a folder', async () => {
    const pair = await loadDataset(parseConfig({ ...structuredClone(BASE), data: { type: 'mnist', batch_size: 4, test_batch_size: 4 } }));
    assert.deepEqual(pair.train.shape, [28, 28, 1]);
  });
});
