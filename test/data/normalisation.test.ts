import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { decideNormalisation } from '../../src/coordinator/start_checks.js';
import { modelDescription } from '../../src/coordinator/checkpoint.js';
import { parseConfig } from '../../src/shared/config/load.js';
import type { ImageFolderDataset } from '../../src/shared/data/image_folder.js';
import { configNormalisation, loadDataset, resolveNormalisation } from '../../src/shared/data/index.js';
import { loadMnist, mnistNormalisation } from '../../src/shared/data/mnist.js';
import { CIFAR10_NORM, type Normalisation } from '../../src/shared/data/transforms.js';
import { writeSolidFolder } from './folder_files.js';
import { writeTinyCifar10 } from './cifar_files.js';

const folderConfig = (dir: string, extra: Record<string, unknown> = {}) =>
  parseConfig({
    base: { task_name: 'norm' },
    model: { name: 'cifar.resnet20', num_class: 3 },
    train: { max_epoch: 1, steplr: [[1, 0.1]] },
    data: { type: 'folder', dir, batch_size: 4, test_batch_size: 4, num_workers: 0, ...extra },
    loss: { criterion: 'softmax' },
  });

const all = (n: number) => Int32Array.from({ length: n }, (_, i) => i);

describe("a run's input normalisation", () => {
  it('a folder run without data.mean/std: decided once at start, written into the config and every checkpoint description', async () => {
    const folder = await writeSolidFolder(3);
    try {
      // What each worker computed for itself before the run decided it.
      const own = await loadDataset(folderConfig(folder.dir));
      const computed = await (own.train as ImageFolderDataset).normalisation();
      const x = (await own.test.load(all(own.test.size), { augment: false, seed: 0 })).x;
      await own.close?.();

      const config = folderConfig(folder.dir);
      assert.equal(configNormalisation(config), undefined);
      const lines: string[] = [];
      await decideNormalisation(config, { note: (l) => lines.push(l) });
      assert.deepEqual({ mean: config.data.mean, std: config.data.std }, computed);
      assert.deepEqual(modelDescription(config).norm, computed, 'every checkpoint records it');
      assert.match(lines.join('\n'), /input normalisation .*computed from the training images of .*: mean \[0\.\d+, .*\], std \[/);
      // The workers now load with the constants: the same images as when each computed its own.
      const fixed = await loadDataset(config);
      assert.deepEqual((await fixed.test.load(all(fixed.test.size), { augment: false, seed: 0 })).x, x);
      await fixed.close?.();

      // Given constants are kept, and said to be the config's.
      const given = folderConfig(folder.dir, { mean: [0, 0, 0], std: [1, 1, 1] });
      lines.length = 0;
      await decideNormalisation(given, { note: (l) => lines.push(l) });
      assert.deepEqual(modelDescription(given).norm, { mean: [0, 0, 0], std: [1, 1, 1] });
      assert.match(lines[0], /data\.mean\/data\.std: mean \[0\.00000, 0\.00000, 0\.00000\], std \[1\.00000/);
    } finally {
      rmSync(folder.dir, { recursive: true, force: true });
    }
  });

  it("built-in datasets record their own: MNIST's computed digits, CIFAR's constants", async () => {
    const base = { base: { task_name: 'norm' }, train: { max_epoch: 1, steplr: [[1, 0.1]] }, loss: { criterion: 'softmax' } };
    const mnist = parseConfig({ ...base, model: { name: 'mnist.resnet20', num_class: 10 }, data: { type: 'mnist', batch_size: 4, test_batch_size: 4 } });
    const m = mnistNormalisation();
    assert.equal(m.mean.length, 1);
    assert.ok(m.mean[0] > 0.05 && m.mean[0] < 0.3 && m.std[0] > 0.2 && m.std[0] < 0.5, JSON.stringify(m));
    assert.deepEqual(modelDescription(mnist).norm, m);
    assert.deepEqual((await resolveNormalisation(mnist)).norm, m);
    const cifar = parseConfig({ ...base, model: { name: 'cifar.resnet20', num_class: 10 }, data: { type: 'cifar10', batch_size: 4, test_batch_size: 4 } });
    assert.deepEqual(modelDescription(cifar).norm, CIFAR10_NORM);
  });

  it('loaders take another normalisation: MNIST by its own gives the default pair, by [0]/[1] the raw pixels', async () => {
    const own = loadMnist();
    const idx = all(50);
    const ref = (await own.train.load(idx, { augment: false, seed: 0 })).x;
    assert.deepEqual((await loadMnist(mnistNormalisation()).train.load(idx, { augment: false, seed: 0 })).x, ref);
    const raw = (await loadMnist({ mean: [0], std: [1] }).train.load(idx, { augment: false, seed: 0 })).x;
    const { mean, std } = mnistNormalisation();
    assert.ok(raw.every((v) => v >= 0 && v <= 1));
    assert.ok(raw.every((v, i) => Math.abs((v - mean[0]) / std[0] - ref[i]) < 1e-5));

    const t = writeTinyCifar10();
    try {
      const config = parseConfig({
        base: { task_name: 'norm' },
        model: { name: 'cifar.resnet20', num_class: 10 },
        train: { max_epoch: 1, steplr: [[1, 0.1]] },
        data: { type: 'cifar10', dir: t.folder, batch_size: 4, test_batch_size: 4, num_workers: 0 },
        loss: { criterion: 'softmax' },
      });
      const norm: Normalisation = { mean: [0, 0, 0], std: [1, 1, 1] };
      const pair = await loadDataset(config, { norm });
      const x = (await pair.test.load([0], { augment: false, seed: 0 })).x;
      await pair.close?.();
      assert.ok(
        x.every((v) => v >= 0 && v <= 1),
        'pixels in [0, 1]',
      );
      await assert.rejects(loadDataset(config, { norm: { mean: [0], std: [1] } }), /BAD_CONFIG|1 channel/);
    } finally {
      rmSync(t.parent, { recursive: true, force: true });
    }
  });
});
