import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/shared/backend.js';
import { GdpError } from '../../src/shared/errors.js';
import { modelCost } from '../../src/shared/graph/flops.js';
import { layerWidths, loadModel, loadModelFile, saveModelFile, serializeModel } from '../../src/shared/io/model_file.js';
import { parseSafetensors, serializeSafetensors } from '../../src/shared/io/safetensors.js';
import { exportTorchState } from '../../src/shared/io/torch_state.js';
import { maxAbsDiff } from '../helpers.js';
import { predictLogits } from '../../src/shared/models/infer.js';
import { buildModel } from '../../src/shared/models/registry.js';
import type { CifarResNet } from '../../src/shared/models/resnet_cifar.js';
import { BatchNorm2d, Conv2d } from '../../src/shared/nn/layers.js';
import { Rng } from '../../src/shared/rng.js';

await initBackend('wasm');
const dir = await mkdtemp(join(tmpdir(), 'gdp-model-file-'));
test.after(() => rm(dir, { recursive: true, force: true }));

function randomImages(n: number, [h, w, c]: readonly number[], seed = 1): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n * h * w * c }, () => rng.normal());
}

/** A ResNet-20 on MNIST shrunk like a melted net: block widths differ from the default build, BNs gated. */
function prunedResNet20(): CifarResNet {
  const model = buildModel('mnist.resnet20', { seed: 3 }) as CifarResNet;
  const keep = [0, 2, 5, 7, 11];
  for (const stage of model.layers) {
    const b = stage.layers[1] as unknown as { conv1: Conv2d; bn1: BatchNorm2d; conv2: Conv2d };
    b.conv1.keepOutputChannels(keep);
    b.bn1.keepChannels(keep);
    b.conv2.keepInputChannels(keep);
  }
  // Non-trivial BN statistics so a mix-up of running_mean and running_var would show.
  const rng = new Rng(9);
  for (const [, m] of model.namedModules()) {
    if (m instanceof BatchNorm2d) {
      const v = (k: number) => tf.tensor1d(Float32Array.from({ length: m.channels }, () => k + 0.3 * rng.normal()));
      m.runningMean.set(v(0));
      m.runningVar.set(tf.abs(v(1)));
      m.bias.set(v(0));
    }
  }
  return model;
}

test('export -> parse -> load into a fresh model gives identical logits and records arch, classes, widths', async () => {
  const model = prunedResNet20();
  const path = join(dir, 'pruned.safetensors');
  try {
    await saveModelFile(path, model, { arch: 'mnist.resnet20', numClasses: 10 });
    const x = randomImages(4, [28, 28, 1]);
    const want = predictLogits(model, x, [4, 28, 28, 1]);
    const loaded = await loadModelFile(path);
    try {
      assert.equal(loaded.arch, 'mnist.resnet20');
      assert.equal(loaded.numClasses, 10);
      assert.deepEqual(loaded.inputShape, [28, 28, 1]);
      assert.deepEqual(JSON.parse(loaded.metadata.widths), layerWidths(model));
      assert.equal(loaded.metadata.widths.includes('"layer2.1.conv1":[32,5]'), true);
      assert.deepEqual(modelCost(loaded.model, [28, 28, 1]), modelCost(model, [28, 28, 1]));
      assert.deepEqual(predictLogits(loaded.model, x, [4, 28, 28, 1]), want);
    } finally {
      loaded.model.dispose();
    }
  } finally {
    model.dispose();
  }
});

test('gated models round-trip in the paper GBN form', async () => {
  const model = buildModel('cifar.resnet20', { seed: 4 });
  try {
    for (const [, m] of model.namedModules()) if (m instanceof BatchNorm2d) m.addGate();
    const bn = model.slot('layer1.0.bn1.bn_mask');
    bn.set(tf.tensor1d(Float32Array.from({ length: 16 }, (_, i) => (i % 3 ? 1 : 0))));
    const file = parseSafetensors(serializeModel(model, { arch: 'cifar.resnet20', numClasses: 10 }));
    assert.deepEqual(file.tensors.get('layer1.0.bn1.g')?.shape, [1, 16, 1, 1]);
    assert.ok(file.tensors.has('layer1.0.bn1.bn.running_var'));
    const loaded = loadModel(file);
    try {
      assert.equal(loaded.gated, true);
      const x = randomImages(2, [32, 32, 3]);
      assert.deepEqual(predictLogits(loaded.model, x, [2, 32, 32, 3]), predictLogits(model, x, [2, 32, 32, 3]));
    } finally {
      loaded.model.dispose();
    }
  } finally {
    model.dispose();
  }
});

test('safetensors are read correctly from a pooled Node Buffer (non-zero byteOffset)', () => {
  const data = Float32Array.from([1.5, -2, 3.25]);
  const bytes = serializeSafetensors(new Map([['t', { shape: [3], data }]]));
  const pooled = Buffer.concat([Buffer.from('xxxxxxxxxxxx'), Buffer.from(bytes)]).subarray(12);
  assert.notEqual(pooled.byteOffset, 0);
  assert.deepEqual(parseSafetensors(pooled).tensors.get('t')?.data, data);
});

async function expectGdpError(p: Promise<unknown> | (() => unknown), code: string, ...mentions: string[]): Promise<void> {
  await assert.rejects(
    async () => (typeof p === 'function' ? p() : p),
    (e: unknown) => {
      assert.ok(e instanceof GdpError, `expected a GdpError, got ${String(e)}`);
      assert.equal(e.code, code, e.message);
      for (const m of mentions) assert.ok(e.message.includes(m), `'${e.message}' should mention '${m}'`);
      return true;
    },
  );
}

test('bad files give clear errors naming the tensor or field', async () => {
  const model = buildModel('mnist.resnet20');
  try {
    const good = serializeModel(model, { arch: 'mnist.resnet20', numClasses: 10 });
    const state = exportTorchState(model);
    const withState = (edit: (m: typeof state) => void, meta: Record<string, string> = { arch: 'mnist.resnet20' }) => {
      const m = new Map(state);
      edit(m);
      return serializeSafetensors(m, meta);
    };
    const write = async (name: string, bytes: Uint8Array) => {
      const p = join(dir, name);
      await writeFile(p, bytes);
      return p;
    };

    const truncated = await write('truncated.safetensors', good.subarray(0, good.length - 100));
    await expectGdpError(loadModelFile(truncated), 'BAD_SAFETENSORS', truncated, 'linear.weight', 'truncated');

    const missing = await write(
      'missing.safetensors',
      withState((m) => m.delete('layer2.0.bn2.running_var')),
    );
    await expectGdpError(loadModelFile(missing), 'MISSING_TENSOR', missing, 'layer2.0.bn2.running_var');

    const wrongKernel = await write(
      'kernel.safetensors',
      withState((m) => m.set('layer1.1.conv2.weight', { shape: [16, 16, 5, 5], data: new Float32Array(16 * 16 * 25) })),
    );
    await expectGdpError(loadModelFile(wrongKernel), 'SHAPE_MISMATCH', 'layer1.1.conv2.weight', '[16,16,5,5]');

    const wrongBn = await write(
      'bn.safetensors',
      withState((m) => m.set('bn1.running_mean', { shape: [12], data: new Float32Array(12) })),
    );
    await expectGdpError(loadModelFile(wrongBn), 'SHAPE_MISMATCH', 'bn1.running_mean');

    // Widths that do not chain: conv1 makes 16 channels, its BN is given 12.
    const chain = await write(
      'chain.safetensors',
      withState((m) => {
        for (const n of ['weight', 'bias', 'running_mean', 'running_var']) m.set(`bn1.${n}`, { shape: [12], data: new Float32Array(12) });
      }),
    );
    await expectGdpError(loadModelFile(chain), 'SHAPE_MISMATCH', 'bn1');

    // A residual block whose branch makes 12 channels while its shortcut carries 16: the addition does not fit.
    const residual = await write(
      'residual.safetensors',
      withState((m) => {
        m.set('layer1.0.conv2.weight', { shape: [12, 16, 3, 3], data: new Float32Array(12 * 16 * 9) });
        for (const n of ['weight', 'bias', 'running_mean', 'running_var']) m.set(`layer1.0.bn2.${n}`, { shape: [12], data: new Float32Array(12) });
      }),
    );
    await expectGdpError(loadModelFile(residual), 'SHAPE_MISMATCH', residual, 'addition', '[28,28,12]', "'layer1.0.bn2'", '[28,28,16]');

    const unknown = await write(
      'unknown.safetensors',
      withState(() => {}, { arch: 'cifar.resnet57' }),
    );
    await expectGdpError(loadModelFile(unknown), 'UNKNOWN_ARCH', unknown, 'cifar.resnet57');

    const noArch = await write(
      'noarch.safetensors',
      withState(() => {}, {}),
    );
    await expectGdpError(loadModelFile(noArch), 'MISSING_ARCH', "'arch'", '--arch');
    await expectGdpError(loadModelFile(noArch, { arch: 'cifar.resnet20' }), 'SHAPE_MISMATCH', noArch, 'conv1', 'input channels');

    const extra = await write(
      'extra.safetensors',
      withState((m) => m.set('layer9.conv.weight', { shape: [1], data: new Float32Array(1) })),
    );
    await expectGdpError(loadModelFile(extra), 'UNEXPECTED_TENSOR', 'layer9.conv.weight');

    const badClasses = await write(
      'classes.safetensors',
      withState(() => {}, { arch: 'mnist.resnet20', num_class: 'ten' }),
    );
    await expectGdpError(loadModelFile(badClasses), 'BAD_METADATA', "'num_class'");

    const lyingWidths = await write(
      'widths.safetensors',
      withState(() => {}, { arch: 'mnist.resnet20', widths: '{"layer1.0.conv1":[16,8]}' }),
    );
    await expectGdpError(loadModelFile(lyingWidths), 'SHAPE_MISMATCH', 'layer1.0.conv1', "'widths'");

    await expectGdpError(loadModelFile(join(dir, 'nope.safetensors')), 'FILE_NOT_FOUND', 'nope.safetensors');

    // Wrappers' prefixes are accepted (the paper's ResNet-50 keeps torchvision's net under `backbone.`).
    const wrapped = new Map([...state].map(([n, t]) => [`backbone.${n}`, t]));
    const loaded = loadModel(parseSafetensors(serializeSafetensors(wrapped)), { arch: 'mnist.resnet20' });
    loaded.model.dispose();
    assert.equal(loaded.numClasses, 10);
  } finally {
    model.dispose();
  }
});

test('loading does not leak tensors', async () => {
  const model = buildModel('mnist.resnet20');
  const bytes = serializeModel(model, { arch: 'mnist.resnet20', numClasses: 10 });
  model.dispose();
  const before = tf.memory().numTensors;
  const loaded = loadModel(parseSafetensors(bytes));
  const x = randomImages(1, [28, 28, 1]);
  const first = predictLogits(loaded.model, x, [1, 28, 28, 1]);
  assert.ok(maxAbsDiff(first, predictLogits(loaded.model, x, [1, 28, 28, 1])) === 0);
  loaded.model.dispose();
  assert.equal(tf.memory().numTensors, before);
});

test('the input normalisation round-trips through the metadata; a file without it loads without one', async () => {
  const model = buildModel('cifar.resnet20', { seed: 2, numClasses: 3 });
  try {
    const norm = { mean: [0.1, 0.2, 0.30000000000000004], std: [0.25, 1, 0.123456789] };
    const bytes = serializeModel(model, { arch: 'cifar.resnet20', numClasses: 3, norm }, { stage: 'train' });
    const parsed = parseSafetensors(bytes);
    assert.equal(parsed.metadata.input_mean, JSON.stringify(norm.mean));
    const loaded = loadModel(parsed);
    loaded.model.dispose();
    assert.deepEqual(loaded.norm, norm, 'bit for bit');
    const plain = loadModel(parseSafetensors(serializeModel(model, { arch: 'cifar.resnet20', numClasses: 3 })));
    plain.model.dispose();
    assert.equal(plain.norm, undefined);
    assert.equal(plain.metadata.input_mean, undefined);

    const state = exportTorchState(model);
    const bad = (meta: Record<string, string>) =>
      loadModel(parseSafetensors(serializeSafetensors(state, { arch: 'cifar.resnet20', num_class: '3', ...meta })), {}, 'f.safetensors');
    const is =
      (c: string, ...mention: string[]) =>
      (e: unknown) =>
        e instanceof GdpError && e.code === c && mention.every((m) => e.message.includes(m));
    assert.throws(() => bad({ input_mean: '[0,0,0]' }), is('BAD_METADATA', 'f.safetensors', "'input_std' is absent"));
    assert.throws(() => bad({ input_mean: '[0,0]', input_std: '[1,1]' }), is('BAD_METADATA', "'input_mean' has 2 value(s)", '3 channel(s)'));
    assert.throws(() => bad({ input_mean: '[0,0,0]', input_std: '[1,0,1]' }), is('BAD_METADATA', "'input_std' must be positive", 'channel 1'));
    assert.throws(
      () => bad({ input_mean: '[0,"a",0]', input_std: '[1,1,1]' }),
      is('BAD_METADATA', `'input_mean' must be a non-empty array of numbers, got [0,"a",0]`),
    );
    // A JSON value is quoted once, by JSON itself: a string as "x", not '"x"'.
    assert.throws(() => bad({ input_mean: '"x"', input_std: '[1,1,1]' }), is('BAD_METADATA', `'input_mean' must be a non-empty array of numbers, got "x"`));
  } finally {
    model.dispose();
  }
});
