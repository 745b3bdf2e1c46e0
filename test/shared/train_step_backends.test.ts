import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/shared/backend.js';
import { ARCHITECTURES, buildModel } from '../../src/shared/models/registry.js';
import { Replica } from '../../src/shared/train/replica.js';
import type { Module } from '../../src/shared/nn/module.js';
import { channelStructure, prunableGroups } from '../../src/shared/pruning/groups.js';
import { applyDecision } from '../../src/shared/pruning/decision.js';
import { melt } from '../../src/shared/pruning/melt.js';
import { randomArray, addGates } from '../helpers.js';

/**
 * A full training step (forward, loss, backward, SGD update) on wasm gives the gradients the cpu backend gives,
 * for every architecture training uses. Small inputs keep the cpu side (the reference, whose conv filter gradient
 * is very slow) affordable, but not so small that a BN normalises only one or two values per channel: there
 * train-mode BN turns float rounding into sign flips (ResNet-50 at 32x32 ends in 1x1 maps).
 */
const cases: { arch: string; hw: number; batch: number; keep?: number }[] = [
  { arch: 'mnist.resnet20', hw: 12, batch: 4 },
  { arch: 'cifar.resnet56', hw: 8, batch: 2 },
  // VGG-16 needs 32x32 inputs (five 2x2 pools); both big nets are narrowed to a quarter of their channels.
  { arch: 'cifar.vgg16', hw: 32, batch: 2, keep: 0.25 },
  // 64x64 ends in 2x2 maps (8 values per channel in the last BNs at batch 2). 48x48 (3x3 maps before them) is too
  // few: there the rounding differences of the Winograd and direct kernels grow past the tolerance by conv1.
  { arch: 'resnet50', hw: 64, batch: 2, keep: 0.25 },
];

/**
 * The same architecture with every channel group cut to `keep` of its width by the pruning engine's own surgery:
 * the same layers and kernels run, at a sixteenth of the cost for the cpu reference.
 */
function narrow(model: Module, inputShape: readonly number[], keep: number): void {
  addGates(model);
  const groups: Record<string, number[]> = {};
  const layers: Record<string, string[]> = {};
  for (const g of prunableGroups(channelStructure(model, inputShape))) {
    const kept = Math.max(1, Math.ceil(g.width * keep));
    groups[g.id] = Array.from({ length: g.width - kept }, (_, i) => kept + i);
    layers[g.id] = g.bns;
  }
  applyDecision(model, { kind: 'mask', groups, layers });
  melt(model, inputShape);
}

async function stepOn(backend: 'cpu' | 'wasm', arch: string, hw: number, batch: number, keep?: number) {
  await initBackend(backend);
  const spec = ARCHITECTURES[arch];
  const model = buildModel(arch, { seed: 3 });
  const c = spec.inputShape[2];
  if (keep !== undefined) narrow(model, [hw, hw, c], keep);
  const replica = new Replica(model, [hw, hw, c]);
  const layout = replica.layout('all');
  const b = { x: randomArray(batch * hw * hw * c, 5), y: Int32Array.from({ length: batch }, (_, i) => (i * 3) % spec.defaultClasses), n: batch };
  const { grad, stats } = replica.gradients(b, layout);
  replica.applyGradient(
    layout,
    grad.map((v) => v / batch),
    { lr: 0.1, momentum: 0.9, weightDecay: 5e-4, nesterov: false },
  );
  const params = replica.readParams(layout);
  const bn = model.namedBuffers().map(([, s]) => s.value.dataSync() as Float32Array);
  model.dispose();
  return { grad, stats, params, bn, names: layout.names, offsets: layout.offsets };
}

for (const { arch, hw, batch, keep } of cases) {
  test(`${arch}: a training step on wasm matches the cpu backend`, { skip: !ARCHITECTURES[arch] && `${arch} is not registered` }, async () => {
    const cpu = await stepOn('cpu', arch, hw, batch, keep);
    const wasm = await stepOn('wasm', arch, hw, batch, keep);
    assert.ok(Math.abs(cpu.stats.lossSum - wasm.stats.lossSum) < 1e-3 * (1 + Math.abs(cpu.stats.lossSum)));
    // Compare per tensor, relative to that tensor's gradient scale, and name the tensor that differs. The floor
    // relative to the whole model's scale covers tensors whose true gradient is zero (a conv bias before BN).
    const global = cpu.grad.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    cpu.names.forEach((name, i) => {
      const lo = cpu.offsets[i];
      const hi = i + 1 < cpu.offsets.length ? cpu.offsets[i + 1] : cpu.grad.length;
      let scale = 0;
      let diff = 0;
      let pd = 0;
      for (let k = lo; k < hi; k++) {
        scale = Math.max(scale, Math.abs(cpu.grad[k]));
        diff = Math.max(diff, Math.abs(cpu.grad[k] - wasm.grad[k]));
        pd = Math.max(pd, Math.abs(cpu.params[k] - wasm.params[k]));
      }
      const gradTol = 2e-3 * scale + 1e-4 * global;
      assert.ok(diff <= gradTol, `${name}: gradient differs by ${diff} (scale ${scale})`);
      // The first SGD step moves a parameter by lr * (mean gradient + wd * p): its difference is bounded by the
      // same gradient tolerance scaled by lr / batch, plus float32 rounding of the parameter itself.
      assert.ok(pd <= (0.1 / batch) * gradTol + 1e-6, `${name}: updated parameters differ by ${pd}`);
    });
    cpu.bn.forEach((v, i) => {
      for (let k = 0; k < v.length; k++) assert.ok(Math.abs(v[k] - wasm.bn[i][k]) < 1e-4 * (1 + Math.abs(v[k])), 'BN running stats differ');
    });
    assert.equal(tf.getBackend(), 'wasm');
  });
}
