import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { BatchNorm2d, Conv2d } from '../../src/shared/nn/layers.js';
import { runningStatsEma } from '../../src/shared/nn/running_stats.js';
import { buildModel } from '../../src/shared/models/registry.js';
import { modelCost } from '../../src/shared/graph/flops.js';
import { trace } from '../../src/shared/graph/trace.js';
import { Rng } from '../../src/shared/rng.js';
import { maxAbsDiff, randomArray, useBackend } from '../helpers.js';

before(() => useBackend('cpu'));

test("parameter and buffer names are PyTorch's", () => {
  const m = buildModel('cifar.resnet56');
  const names = [...m.namedSlots()].map(([n]) => n);
  for (const n of [
    'conv1.weight',
    'bn1.running_var',
    'layer1.0.conv1.weight',
    'layer2.0.shortcut.0.weight',
    'layer2.0.shortcut.1.bias',
    'layer3.8.bn2.weight',
    'linear.weight',
    'linear.bias',
  ]) {
    assert.ok(names.includes(n), `missing ${n}`);
  }
  assert.ok(!names.includes('layer1.0.shortcut.0.weight'), 'identity shortcuts have no conv');
  const params = m.namedParameters().reduce((a, [, s]) => a + s.value.size, 0);
  assert.equal(params, modelCost(m, [32, 32, 3]).params);
  m.dispose();
});

test('BatchNorm2d train mode normalises with batch stats and updates running stats with the unbiased variance', () => {
  const c = 3;
  const bn = new BatchNorm2d(c);
  bn.weight.set(tf.tensor1d([1, 2, 0.5]));
  bn.bias.set(tf.tensor1d([0, -1, 3]));
  const xs = randomArray(2 * 4 * 4 * c, 7, 3);
  const y = tf.tidy(() => bn.forward(tf.tensor4d(xs, [2, 4, 4, c]))).dataSync();
  const n = 2 * 4 * 4;
  for (let ch = 0; ch < c; ch++) {
    const v: number[] = [];
    for (let i = ch; i < xs.length; i += c) v.push(xs[i]);
    const mean = v.reduce((a, b) => a + b, 0) / n;
    const varB = v.reduce((a, b) => a + (b - mean) ** 2, 0) / n;
    const w = [1, 2, 0.5][ch];
    const b = [0, -1, 3][ch];
    for (let i = 0; i < n; i++) {
      const want = ((v[i] - mean) / Math.sqrt(varB + 1e-5)) * w + b;
      assert.ok(Math.abs(y[i * c + ch] - want) < 1e-4, `channel ${ch} elem ${i}`);
    }
    assert.ok(Math.abs(bn.runningMean.value.dataSync()[ch] - 0.1 * mean) < 1e-5);
    assert.ok(Math.abs(bn.runningVar.value.dataSync()[ch] - (0.9 + 0.1 * varB * (n / (n - 1)))) < 1e-5);
  }
  bn.dispose();
});

test("gating a BN (the paper's conversion) keeps its eval output; melting the gate back keeps it too", () => {
  const bn = new BatchNorm2d(4);
  bn.weight.set(tf.tensor1d([0.5, -2, 1.5, 0.25]));
  bn.bias.set(tf.tensor1d([0.1, 0.3, -0.2, 1]));
  bn.runningMean.set(tf.tensor1d([0.2, -0.1, 0, 0.5]));
  bn.runningVar.set(tf.tensor1d([1.5, 0.5, 2, 1]));
  bn.eval();
  const x = tf.tensor4d(randomArray(2 * 3 * 3 * 4, 3), [2, 3, 3, 4]);
  const before = bn.forward(x).dataSync();
  bn.addGate();
  assert.ok(bn.gated && !bn.weight.trainable && bn.gate!.trainable);
  assert.deepEqual(Array.from(bn.weight.value.dataSync()), [1, 1, 1, 1]);
  assert.ok(maxAbsDiff(bn.forward(x).dataSync(), before) < 1e-5);
  bn.mask!.set(tf.tensor1d([1, 0, 1, 1]));
  const masked = bn.forward(x).dataSync();
  for (let i = 1; i < masked.length; i += 4) assert.equal(masked[i], 0);
  bn.removeGate();
  assert.ok(!bn.gated && bn.weight.trainable);
  assert.ok(maxAbsDiff(bn.forward(x).dataSync(), masked) < 1e-5);
  x.dispose();
  bn.dispose();
});

test('removing output channels of a conv equals selecting them from the full output', () => {
  const conv = new Conv2d(3, 6, 3, new Rng(1), { padding: 1, stride: 2, bias: true });
  const x = tf.tensor4d(randomArray(2 * 7 * 7 * 3, 5), [2, 7, 7, 3]);
  const full = conv.forward(x);
  const keep = [0, 2, 5];
  const want = tf.gather(full, keep, 3).dataSync();
  conv.keepOutputChannels(keep);
  assert.equal(conv.outChannels, 3);
  assert.deepEqual(conv.outShape([7, 7, 3]), [4, 4, 3]);
  assert.ok(maxAbsDiff(conv.forward(x).dataSync(), want) < 1e-5);
  assert.throws(() => conv.outShape([7, 7, 2]), /expects 3 input channels/);
  tf.dispose([x, full]);
  conv.dispose();
});

test('tracing finds every residual addition and a width mismatch names the layer', () => {
  const m = buildModel('mnist.resnet20');
  const g = trace(m, [28, 28, 1]);
  assert.equal(g.nodes.filter((n) => n.kind === 'add').length, 9);
  assert.deepEqual(g.nodes[g.output].shape, [10]);
  const conv = m.slot('layer2.0.conv1.weight');
  conv.set(tf.zeros([3, 3, 16, 31]));
  (m as unknown as { layers: { layers: { conv1: Conv2d }[] }[] }).layers[1].layers[0].conv1.outChannels = 31;
  assert.throws(() => trace(m, [28, 28, 1]), /layer2\.0\.bn1: BatchNorm2d expects 32 input channels but receives 31/);
  m.dispose();
});

test('a residual addition of two widths is a SHAPE_MISMATCH naming the layers feeding it; an unknown slot is UNKNOWN_LAYER', () => {
  const m = buildModel('mnist.resnet20');
  const block = (m as unknown as { layers: { layers: { conv2: Conv2d; bn2: BatchNorm2d }[] }[] }).layers[0].layers[0];
  block.conv2.keepOutputChannels([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  block.bn2.keepChannels([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  assert.throws(() => trace(m, [28, 28, 1]), {
    name: 'GdpError',
    code: 'SHAPE_MISMATCH',
    message: "an addition of shapes [28,28,12] (after 'layer1.0.bn2') and [28,28,16] (after 'bn1')",
  });
  assert.throws(() => m.slot('layer1.0.conv3.weight'), {
    name: 'GdpError',
    code: 'UNKNOWN_LAYER',
    message: /no parameter or buffer named 'layer1\.0\.conv3\.weight'/,
  });
  m.dispose();
});

test('train and eval forward passes do not leak tensors', () => {
  const m = buildModel('mnist.resnet20');
  const x = tf.tensor4d(randomArray(2 * 8 * 8 * 1, 9), [2, 8, 8, 1]);
  const count = () => tf.memory().numTensors;
  m.train();
  tf.dispose(m.run(x));
  const n0 = count();
  for (let i = 0; i < 3; i++) tf.dispose(m.run(x));
  m.eval();
  for (let i = 0; i < 3; i++) tf.dispose(m.run(x));
  assert.equal(count(), n0);
  x.dispose();
  m.dispose();
});

test('runningStatsEma gives the bits of the tensor ops it replaces, on the cpu and wasm backends', async () => {
  const running = randomArray(37, 21, 3);
  const batch = randomArray(37, 22, 40);
  // Signed zeros and a tiny value: their signs and rounding must agree too.
  running.set([0, -0, 1e-40]);
  batch.set([-0, 0, -1e-40]);
  try {
    for (const backend of ['cpu', 'wasm'] as const) {
      await useBackend(backend);
      // momentum 0.1 with the unbiased variance factor of 32 samples; 1/k of a re-estimation (k = 1, 3).
      for (const [keep, take] of [
        [0.9, 0.1 * (32 / 31)],
        [0, 1],
        [1 - 1 / 3, 1 / 3],
      ]) {
        const ops = tf.tidy(() => tf.add(tf.mul(tf.tensor1d(running), keep), tf.mul(tf.tensor1d(batch), take)).dataSync() as Float32Array);
        const host = runningStatsEma(running, batch, keep, take);
        assert.deepEqual(new Uint32Array(host.buffer), new Uint32Array(ops.buffer), `${backend}, keep ${keep}, take ${take}`);
      }
    }
  } finally {
    await useBackend('cpu');
  }
});
