import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/shared/backend.js';
import { GdpError } from '../../src/shared/errors.js';
import { loadModelFile } from '../../src/shared/io/model_file.js';
import { exportTfjs, toLayersModel } from '../../src/shared/io/tfjs_export.js';
import { tfjsDirReader, tfjsDirWriter } from '../../src/shared/io/tfjs_files.js';
import { maxAbsDiff } from '../helpers.js';
import { predictLogits } from '../../src/shared/models/infer.js';
import { buildModel } from '../../src/shared/models/registry.js';
import { ImageNetResNet } from '../../src/shared/models/resnet_imagenet.js';
import { BatchNorm2d, MaxPool2d } from '../../src/shared/nn/layers.js';
import { Module, Sequential, type Ops } from '../../src/shared/nn/module.js';
import { Rng } from '../../src/shared/rng.js';
import { MIXED_SHAPE, Mixed } from '../pruning/mixed_net.js';
import { fixture, fixtureInputNhwc, fixtureLogits, hasFixture, INPUT_SHAPE_NHWC } from './fixture.js';

await initBackend('wasm');
const dir = await mkdtemp(join(tmpdir(), 'gdp-tfjs-'));
test.after(() => rm(dir, { recursive: true, force: true }));

function images(n: number, [h, w, c]: readonly number[], seed = 2): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n * h * w * c }, () => rng.normal());
}

/** Runs a stock tfjs LayersModel on NHWC images. */
function runLayers(m: tf.LayersModel, x: Float32Array, shape: [number, number, number, number]): Float32Array {
  return tf.tidy(() => (m.predict(tf.tensor4d(x, shape)) as tf.Tensor).dataSync() as Float32Array);
}

/** Exports to a directory, reloads with stock tf.loadLayersModel and compares with gdp's own forward pass. */
async function roundTrip(model: Module, inputShape: [number, number, number], n: number, name: string): Promise<number> {
  const out = join(dir, name);
  await exportTfjs(model, inputShape, tfjsDirWriter(out));
  const loaded = await tf.loadLayersModel(tfjsDirReader(out));
  try {
    const x = images(n, inputShape);
    const shape: [number, number, number, number] = [n, ...inputShape];
    const want = predictLogits(model, x, shape);
    return maxAbsDiff(runLayers(loaded, x, shape), want) / Math.max(1, ...Array.from(want, Math.abs));
  } finally {
    loaded.dispose();
  }
}

test('VGG-16 (conv bias, ReLU modules, max pools, flatten) exports with the same outputs', async () => {
  const model = buildModel('cifar.vgg16', { seed: 5 });
  try {
    const d = await roundTrip(model, [32, 32, 3], 2, 'vgg16');
    assert.ok(d <= 1e-4, `relative diff ${d}`);
  } finally {
    model.dispose();
  }
});

test('a small ImageNet bottleneck ResNet (7x7/2 pad 3, padded max pool, strided downsample) exports with the same outputs', async () => {
  const model = new ImageNetResNet([1, 1, 1, 1], 5, new Rng(6));
  try {
    const d = await roundTrip(model, [64, 64, 3], 2, 'resnet-tiny');
    assert.ok(d <= 1e-4, `relative diff ${d}`);
  } finally {
    model.dispose();
  }
});

test('mobilenet_v2 (depthwise convs, ReLU6, inverted residuals, the dropout placeholder) exports with the same outputs', async () => {
  const model = buildModel('mobilenet_v2', { widthMult: 0.35, numClasses: 10, seed: 3 });
  try {
    const d = await roundTrip(model, [32, 32, 3], 2, 'mobilenet');
    assert.ok(d <= 1e-4, `relative diff ${d}`);
  } finally {
    model.dispose();
  }
});

test('a channel concat and a flatten of a 3x3 map into a Linear layer export with the same outputs (PyTorch feature order)', async () => {
  const model = new Mixed(new Rng(9));
  try {
    const d = await roundTrip(model, MIXED_SHAPE, 2, 'mixed');
    assert.ok(d <= 1e-4, `relative diff ${d}`);
  } finally {
    model.dispose();
  }
});

test('gated BNs export with gate and mask folded in', async () => {
  const model = buildModel('cifar.resnet20', { seed: 7 });
  try {
    const rng = new Rng(8);
    for (const [, m] of model.namedModules()) {
      if (!(m instanceof BatchNorm2d)) continue;
      m.addGate();
      m.gate!.set(tf.tensor1d(Float32Array.from({ length: m.channels }, () => 0.5 + rng.next())));
      m.mask!.set(tf.tensor1d(Float32Array.from({ length: m.channels }, () => (rng.next() < 0.3 ? 0 : 1))));
    }
    const d = await roundTrip(model, [32, 32, 3], 2, 'gated');
    assert.ok(d <= 1e-4, `relative diff ${d}`);
  } finally {
    model.dispose();
  }
});

test('the directory is stock TF.js: model.json names weights.bin and every weight', async () => {
  const json = JSON.parse(await readFile(join(dir, 'vgg16', 'model.json'), 'utf8'));
  assert.equal(json.format, 'layers-model');
  assert.deepEqual(json.weightsManifest[0].paths, ['weights.bin']);
  const names = json.weightsManifest[0].weights.map((w: { name: string }) => w.name);
  assert.ok(names.includes('features_0/kernel') && names.includes('features_1/moving_variance') && names.includes('classifier/bias'), names.join());
  const bytes = (await readFile(join(dir, 'vgg16', 'weights.bin'))).byteLength;
  // 14,728,266 parameters plus 2 x 4,224 BN statistics, float32.
  assert.equal(bytes, (14_728_266 + 2 * 4_224) * 4);
});

test('a padded max pool on possibly negative values is refused, not exported wrong', () => {
  class PoolFirst extends Module {
    readonly pool = this.addChild('pool', new MaxPool2d(3, 2, 1));
    readonly rest = this.addChild('rest', new Sequential([]));
    apply<T>(x: T, F: Ops<T>): T {
      return this.rest.apply(this.pool.apply(x, F), F);
    }
  }
  assert.throws(
    () => toLayersModel(new PoolFirst(), [8, 8, 3]),
    (e: unknown) => e instanceof GdpError && e.code === 'UNSUPPORTED_EXPORT' && e.message.includes('pool'),
  );
});

test("the paper's ResNet-56 exported to TF.js reproduces PyTorch's logits", { skip: hasFixture ? false : 'fixture absent' }, async () => {
  const { model, inputShape } = await loadModelFile(fixture('resnet56_cifar10_baseline.safetensors'), { arch: 'cifar.resnet56' });
  const out = join(dir, 'resnet56');
  try {
    await exportTfjs(model, inputShape, tfjsDirWriter(out));
  } finally {
    model.dispose();
  }
  const before = tf.memory().numTensors;
  const loaded = await tf.loadLayersModel(tfjsDirReader(out));
  const got = runLayers(loaded, await fixtureInputNhwc(), [...INPUT_SHAPE_NHWC]);
  loaded.dispose();
  assert.equal(tf.memory().numTensors, before);
  const d = maxAbsDiff(got, await fixtureLogits('base'));
  assert.ok(d <= 1e-4, `max abs diff ${d}`);
});
