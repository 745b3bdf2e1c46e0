import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs-core';
import { loadDataset } from '../../src/shared/data/index.js';
import { loadMnist } from '../../src/shared/data/mnist.js';
import { stratifiedSubset } from '../../src/shared/data/subset.js';
import { saveModelFile } from '../../src/shared/io/model_file.js';
import { buildModel } from '../../src/shared/models/registry.js';
import { BatchNorm2d, Conv2d } from '../../src/shared/nn/layers.js';
import { Rng } from '../../src/shared/rng.js';
import { Replica, addStats, emptyStats } from '../../src/shared/train/replica.js';
import { useBackend } from '../helpers.js';
import { solidFolderConfig, writeSolidFolder } from '../data/folder_files.js';
import { gdpModel } from './gdp_model.js';

describe('BN re-estimation and gdp-model eval', () => {
  let dir: string;
  before(async () => {
    await useBackend('wasm');
    dir = await mkdtemp(join(tmpdir(), 'gdp-eval-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("recalibrateBatchNorm sets running statistics to the plain average of the batches' statistics, nothing else", async () => {
    const model = buildModel('mnist.resnet20', { seed: 2 });
    const replica = new Replica(model, [28, 28, 1]);
    const mnist = loadMnist();
    const batches = [
      await mnist.train.load(
        Int32Array.from({ length: 16 }, (_, i) => i),
        { augment: false, seed: 0 },
      ),
      await mnist.train.load(
        Int32Array.from({ length: 24 }, (_, i) => 100 + i),
        { augment: false, seed: 0 },
      ),
    ];
    const params = replica.readParams(replica.layout('all'));
    const tensors = tf.memory().numTensors;
    assert.equal(await replica.recalibrateBatchNorm(batches), 2);
    assert.equal(tf.memory().numTensors, tensors, 'no tensor leak');

    // The first BN sees conv1 of the input: its expected statistics come straight from the batches.
    const conv1 = (model as unknown as { conv1: Conv2d }).conv1;
    const bn1 = (model as unknown as { bn1: BatchNorm2d }).bn1;
    const want = tf.tidy(() => {
      const stats = batches.map((b) => {
        const y = conv1.forward(tf.tensor4d(b.x, [b.n, 28, 28, 1]));
        const { mean, variance } = tf.moments(y, [0, 1, 2]);
        const n = y.size / y.shape[3]!;
        return { mean, variance: tf.mul(variance, n / (n - 1)) };
      });
      return [tf.div(tf.add(stats[0].mean, stats[1].mean), 2).dataSync(), tf.div(tf.add(stats[0].variance, stats[1].variance), 2).dataSync()];
    });
    const close = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).every((v, i) => Math.abs(v - b[i]) <= 1e-4 * Math.max(1, Math.abs(b[i])));
    assert.ok(close(bn1.runningMean.value.dataSync(), want[0]), 'running_mean');
    assert.ok(close(bn1.runningVar.value.dataSync(), want[1]), 'running_var');
    assert.ok(Math.max(...Array.from(want[0]).map(Math.abs)) > 1e-3, 'the statistics are not the initial zeros');
    assert.equal(bn1.momentum, 0.1, 'momentum restored');
    assert.deepEqual(replica.readParams(replica.layout('all')), params, 'parameters untouched');
    model.dispose();
  });

  it('eval --json gives the numbers of an in-process evaluation, with and without re-estimation', async () => {
    const model = buildModel('mnist.resnet20', { seed: 3 });
    const file = join(dir, 'r20.safetensors');
    await saveModelFile(file, model, { arch: 'mnist.resnet20', numClasses: 10 });
    const mnist = loadMnist();
    const replica = new Replica(model, [28, 28, 1]);
    const evaluate = async () => {
      let s = emptyStats();
      // --test-subset 300 evaluates 300 samples in class proportion, in the test set's order.
      const subset = stratifiedSubset(mnist.test.labels, 300);
      for (let i = 0; i < 300; i += 100) s = addStats(s, replica.evaluate(await mnist.test.load(subset.subarray(i, i + 100), { augment: false, seed: 0 })));
      return s;
    };

    const flags = ['--json', '--backend', 'wasm', '--batch-size', '100', '--test-subset', '300'];
    const plain = await gdpModel('eval', '--weights', file, ...flags);
    assert.equal(plain.code, 0, plain.stderr);
    const got = JSON.parse(plain.stdout);
    const ref = await evaluate();
    assert.equal(got.samples, 300);
    assert.equal(got.top1, ref.correct1 / ref.count);
    assert.ok(Math.abs(got.loss - ref.lossSum / ref.count) < 1e-5);

    const recal = await gdpModel('eval', '--weights', file, ...flags, '--recalibrate-bn', '2', '--seed', '4');
    assert.equal(recal.code, 0, recal.stderr);
    const order = Int32Array.from({ length: mnist.train.size }, (_, i) => i);
    new Rng(4).shuffle(order);
    await replica.recalibrateBatchNorm([0, 1].map((b) => mnist.train.load(order.subarray(b * 100, (b + 1) * 100), { augment: false, seed: 4 })));
    const refRecal = await evaluate();
    const r = JSON.parse(recal.stdout);
    assert.equal(r.recalibrated_batches, 2);
    assert.equal(r.top1, refRecal.correct1 / refRecal.count);
    assert.notEqual(r.loss, got.loss, 'the re-estimated statistics changed the result');
    model.dispose();
  });

  it('eval stops with the reason on a dataset the model cannot take or cannot find', async () => {
    const file = join(dir, 'r56.safetensors');
    const m = buildModel('cifar.resnet56', { seed: 1 });
    await saveModelFile(file, m, { arch: 'cifar.resnet56', numClasses: 10 });
    m.dispose();
    const wrong = await gdpModel('eval', '--weights', file, '--backend', 'cpu');
    assert.equal(wrong.code, 2);
    assert.match(wrong.stderr, /SHAPE_MISMATCH.*28x28x1.*32x32x3/);
    const noDir = await gdpModel('eval', '--weights', file, '--data', 'cifar10', '--backend', 'cpu');
    assert.equal(noDir.code, 2);
    // eval reads no config: the message names the flag only.
    assert.match(noDir.stderr, /BAD_FLAG.*--data cifar10 needs the dataset folder: pass --data-dir/);
    assert.doesNotMatch(noDir.stderr, /data\.dir/);
  });

  it('eval --data folder: own images sized as the model input give the numbers of an in-process evaluation, with re-estimation', async () => {
    const folder = await writeSolidFolder(3);
    try {
      const model = buildModel('cifar.resnet20', { seed: 5, numClasses: 3 });
      const file = join(dir, 'own.safetensors');
      await saveModelFile(file, model, { arch: 'cifar.resnet20', numClasses: 3 });
      const config = solidFolderConfig(folder.dir);
      const data = await loadDataset(config);
      const replica = new Replica(model, [32, 32, 3]);
      const all = (n: number) => Int32Array.from({ length: n }, (_, i) => i);
      const r = await gdpModel('eval', '--weights', file, '--data', 'folder', '--data-dir', folder.dir, '--batch-size', '4', '--json', '--backend', 'wasm');
      assert.equal(r.code, 0, r.stderr);
      const got = JSON.parse(r.stdout);
      const ref = replica.evaluate(await data.test.load(all(data.test.size), { augment: false, seed: 0 }));
      assert.equal(got.samples, folder.val.length);
      assert.equal(got.top1, ref.correct1 / ref.count);
      assert.ok(Math.abs(got.loss - ref.lossSum / ref.count) < 1e-5, `${got.loss} vs ${ref.lossSum / ref.count}`);
      // --recalibrate-bn draws shuffled training batches of the folder, as on a built-in dataset.
      const recal = await gdpModel(
        'eval',
        '--weights',
        file,
        '--data',
        'folder',
        '--data-dir',
        folder.dir,
        '--batch-size',
        '4',
        '--json',
        '--backend',
        'wasm',
        '--recalibrate-bn',
        '1',
      );
      assert.equal(recal.code, 0, recal.stderr);
      const order = all(data.train.size);
      new Rng(0).shuffle(order);
      await replica.recalibrateBatchNorm([data.train.load(order.subarray(0, 4), { augment: false, seed: 0 })]);
      const refRecal = replica.evaluate(await data.test.load(all(data.test.size), { augment: false, seed: 0 }));
      assert.ok(Math.abs(JSON.parse(recal.stdout).loss - refRecal.lossSum / refRecal.count) < 1e-5);
      await data.close?.();
      model.dispose();
    } finally {
      await rm(folder.dir, { recursive: true, force: true });
    }
  });

  it("a model whose class count is not the data's is named with --data, not a config key there is none of", async () => {
    const file = join(dir, 'r20-3.safetensors');
    const m = buildModel('mnist.resnet20', { seed: 1, numClasses: 3 });
    await saveModelFile(file, m, { arch: 'mnist.resnet20', numClasses: 3 });
    m.dispose();
    const r = await gdpModel('eval', '--weights', file, '--backend', 'cpu');
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /SHAPE_MISMATCH\]: .*r20-3\.safetensors \(evaluated on --data mnist\) has 3 classes, but mnist has 10 classes/);
    assert.doesNotMatch(r.stderr, /model\.num_class/);
    // A model for 32x32x3 images on the default digits: the shapes, and where the user's own images go.
    const c = join(dir, 'c20-3.safetensors');
    const cm = buildModel('cifar.resnet20', { seed: 1, numClasses: 3 });
    await saveModelFile(c, cm, { arch: 'cifar.resnet20', numClasses: 3 });
    cm.dispose();
    const rc = await gdpModel('eval', '--weights', c, '--backend', 'cpu');
    assert.equal(rc.code, 2, rc.stderr);
    assert.match(rc.stderr, /SHAPE_MISMATCH\]: --data mnist gives 28x28x1 images \(HWC\), the model takes 32x32x3: .*--data folder --data-dir DIR/);
  });

  it('a batch over the wasm heap stops with BATCH_TOO_LARGE before any pass (eval, predict, bench)', async () => {
    const file = join(dir, 'r20.safetensors');
    const m = buildModel('mnist.resnet20', { seed: 1 });
    await saveModelFile(file, m, { arch: 'mnist.resnet20', numClasses: 10 });
    m.dispose();
    // The command: recalibration batches come from the 7,996 training digits, so that is the shard.
    const r = await gdpModel('eval', '--weights', file, '--recalibrate-bn', '2', '--batch-size', '10000', '--backend', 'wasm');
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /BATCH_TOO_LARGE.*--batch-size 10000 makes shards of 7996 samples.*limit of 4\.00 GiB.*use a smaller --batch-size/);
    assert.doesNotMatch(r.stderr, /RuntimeError|wasm-function/);
    const b = await gdpModel('bench', '--weights', file, '--batches', '1,20000', '--backend', 'wasm');
    assert.equal(b.code, 2, b.stderr);
    assert.match(b.stderr, /BATCH_TOO_LARGE.*--batches 20000/);
    // A batch of 20000 digits to predict from a missing input file: only the memory check can stop it first.
    const predictHuge = (backend: string) =>
      gdpModel(
        'predict',
        '--weights',
        file,
        '--input',
        join(dir, 'absent.f32'),
        '--shape',
        '20000,1,28,28',
        '--out',
        join(dir, 'o.f32'),
        '--batch',
        '20000',
        '--backend',
        backend,
      );
    // cpu has no known limit: the check lets it through (here to the missing input file).
    const p = await predictHuge('cpu');
    assert.doesNotMatch(p.stderr, /BATCH_TOO_LARGE/);
    const pw = await predictHuge('wasm');
    assert.match(pw.stderr, /BATCH_TOO_LARGE.*--batch 20000/);
  });
});
