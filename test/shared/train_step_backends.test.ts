import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/shared/backend.js';
import { ARCHITECTURES, buildModel } from '../../src/shared/models/registry.js';
import { Replica } from '../../src/shared/train/replica.js';
import { randomArray } from '../helpers.js';

/**
 * A full training step (forward, loss, backward, SGD update) on wasm gives the gradients the cpu backend gives,
 * for every architecture training uses. Small inputs keep the cpu side (the reference, whose conv filter gradient
 * is very slow) affordable, but not so small that a BN normalises only one or two values per channel: there
 * train-mode BN turns float rounding into sign flips (ResNet-50 at 32x32 ends in 1x1 maps).
 */
const cases: { arch: string; hw: number; batch: number }[] = [
  { arch: 'mnist.resnet20', hw: 12, batch: 4 },
  { arch: 'cifar.resnet56', hw: 8, batch: 2 },
  { arch: 'cifar.vgg16', hw: 32, batch: 2 },
  { arch: 'resnet50', hw: 64, batch: 2 },
];

async function stepOn(backend: 'cpu' | 'wasm', arch: string, hw: number, batch: number) {
  await initBackend(backend);
  const spec = ARCHITECTURES[arch];
  const model = buildModel(arch, { seed: 3 });
  const c = spec.inputShape[2];
  const replica = new Replica(model, [hw, hw, c]);
  const layout = replica.layout('all');
  const b = { x: randomArray(batch * hw * hw * c, 5), y: Int32Array.from({ length: batch }, (_, i) => (i * 3) % spec.defaultClasses), n: batch };
  const { grad, stats } = replica.gradients(b, layout);
  replica.applyGradient(layout, grad.map((v) => v / batch), { lr: 0.1, momentum: 0.9, weightDecay: 5e-4, nesterov: false });
  const params = replica.readParams(layout);
  const bn = model.namedBuffers().map(([, s]) => s.value.dataSync() as Float32Array);
  model.dispose();
  return { grad, stats, params, bn, names: layout.names, offsets: layout.offsets };
}

for (const { arch, hw, batch } of cases) {
  test(`${arch}: a training step on wasm matches the cpu backend`, { skip: !ARCHITECTURES[arch] && `${arch} is not registered` }, async () => {
    const cpu = await stepOn('cpu', arch, hw, batch);
    const wasm = await stepOn('wasm', arch, hw, batch);
    assert.ok(Math.abs(cpu.stats.lossSum - wasm.stats.lossSum) < 1e-3 * (1 + Math.abs(cpu.stats.lossSum)));
    // Compare per tensor, relative to that tensor's gradient scale, and name the tensor that differs. The floor
    // relative to the whole model's scale covers tensors whose true gradient is zero (a conv bias before BN).
    const global = cpu.grad.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    cpu.names.forEach((name, i) => {
      const lo = cpu.offsets[i];
      const hi = i + 1 < cpu.offsets.length ? cpu.offsets[i + 1] : cpu.grad.length;
      let scale = 0;
      let diff = 0;
      for (let k = lo; k < hi; k++) {
        scale = Math.max(scale, Math.abs(cpu.grad[k]));
        diff = Math.max(diff, Math.abs(cpu.grad[k] - wasm.grad[k]));
      }
      assert.ok(diff <= 2e-3 * scale + 1e-4 * global, `${name}: gradient differs by ${diff} (scale ${scale})`);
    });
    // Per tensor, 1e-4 scaled by the size of the applied step (lr 0.1 times the batch-mean gradient): float32
    // rounding through deep nets moves gradients by ~1e-5 of their scale (conv1 of resnet56 here: scale 70).
    cpu.names.forEach((name, i) => {
      const lo = cpu.offsets[i];
      const hi = i + 1 < cpu.offsets.length ? cpu.offsets[i + 1] : cpu.params.length;
      let scale = 0;
      let pd = 0;
      for (let k = lo; k < hi; k++) {
        scale = Math.max(scale, Math.abs(cpu.grad[k]));
        pd = Math.max(pd, Math.abs(cpu.params[k] - wasm.params[k]));
      }
      assert.ok(pd < 1e-4 * (1 + (0.1 * scale) / batch), `${name}: updated parameters differ by ${pd}`);
    });
    cpu.bn.forEach((v, i) => {
      for (let k = 0; k < v.length; k++) assert.ok(Math.abs(v[k] - wasm.bn[i][k]) < 1e-4 * (1 + Math.abs(v[k])), 'BN running stats differ');
    });
    assert.equal(tf.getBackend(), 'wasm');
  });
}
