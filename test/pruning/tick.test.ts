import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs-core';
import { tickSteps } from '../../src/coordinator/tick.js';
import type { GbnConfig } from '../../src/coordinator/tick_tock.js';
import { configSchema } from '../../src/shared/config/schema.js';
import { CifarResNet } from '../../src/shared/models/resnet_cifar.js';
import { BatchNorm2d, Conv2d, Linear } from '../../src/shared/nn/layers.js';
import { batchNorms } from '../../src/shared/pruning/gates.js';
import { pruningUpdate } from '../../src/shared/pruning/updates.js';
import { Rng } from '../../src/shared/rng.js';
import { BatchSampler } from '../../src/shared/train/batch_sampler.js';
import { Replica } from '../../src/shared/train/replica.js';
import { sgdStep } from '../../src/shared/train/sgd.js';
import { cpu } from './helpers.js';
import { LocalCluster, syntheticDataset } from './local_cluster.js';

const SHAPE: [number, number, number] = [8, 8, 1];
const SGD = { momentum: 0.9, weightDecay: 5e-4, nesterov: false };

function gbnConfig(gbn: Partial<GbnConfig>): GbnConfig {
  const c = configSchema.parse({
    base: { task_name: 't' },
    model: { name: 'mnist.resnet20', num_class: 10 },
    train: { max_epoch: 0 },
    data: { type: 'mnist', batch_size: 4, test_batch_size: 8 },
    loss: { criterion: 'softmax' },
    gbn: { sparse_lambda: 1e-3, lr_min: 1e-2, lr_max: 1e-2, tock_epoch: 1, T: 2, p: 0.2, finetune_epoch: 1, tick_batches: 1, ...gbn },
  });
  return c.gbn!;
}

/**
 * A gated ResNet-8 on one in-process replica after one step on every parameter (the Tock before the first Tick,
 * which leaves a momentum buffer on every parameter). The same seed gives the same cluster, bit for bit.
 */
async function gatedCluster(): Promise<LocalCluster> {
  const cluster = new LocalCluster(new Replica(new CifarResNet(8, 10, 1, new Rng(3)), SHAPE), syntheticDataset(16, SHAPE, 1), syntheticDataset(8, SHAPE, 2));
  await cluster.broadcastModelUpdate(pruningUpdate({ kind: 'gate', layers: [...batchNorms(cluster.replica.model)].map(([p]) => p) }));
  await cluster.step(Int32Array.from([0, 1, 2, 3]), 'all', { ...SGD, lr: 1e-2 });
  return cluster;
}

/** Every slot (parameters and buffers) by name, as copies. */
function slots(cluster: LocalCluster): Map<string, Float32Array> {
  return new Map([...cluster.replica.model.namedSlots()].map(([n, s]) => [n, (s.value.dataSync() as Float32Array).slice()]));
}

/** Slot names by the role the paper's Tick gives them (module types read from the model, not from names). */
function roles(cluster: LocalCluster): Record<'conv' | 'gate' | 'bnBias' | 'bnFrozen' | 'linear', string[]> {
  const r = { conv: [] as string[], gate: [] as string[], bnBias: [] as string[], bnFrozen: [] as string[], linear: [] as string[] };
  for (const [path, m] of cluster.replica.model.namedModules()) {
    if (m instanceof Conv2d) r.conv.push(`${path}.weight`, ...(m.bias ? [`${path}.bias`] : []));
    if (m instanceof Linear) r.linear.push(`${path}.weight`, `${path}.bias`);
    if (m instanceof BatchNorm2d) {
      r.gate.push(`${path}.g`);
      r.bnBias.push(`${path}.bias`);
      r.bnFrozen.push(`${path}.weight`, `${path}.running_mean`, `${path}.running_var`);
    }
  }
  return r;
}

/** Runs one Tick step and returns the slots before and after, with the accumulated gate scores. */
async function oneTickStep(gbn: Partial<GbnConfig>, prepare?: (c: LocalCluster) => void) {
  const cluster = await gatedCluster();
  prepare?.(cluster);
  const before = slots(cluster);
  const momentum = new Map(cluster.replica.momentumState());
  const { acc } = await tickSteps(cluster, gbnConfig(gbn), SGD, new BatchSampler(16, 4, 7), 1, undefined, async () => {});
  return { cluster, before, after: slots(cluster), momentum, scores: acc.perBn(), roles: roles(cluster) };
}

const same = (a: Float32Array, b: Float32Array) => a.length === b.length && a.every((v, i) => Object.is(v, b[i]));

describe('what a Tick trains (gbn.tick_trains, gbn.tick_decay_frozen)', () => {
  before(cpu);

  it('layouts: all_but_conv holds every parameter but the convolutions; gates only the gates', async () => {
    const cluster = await gatedCluster();
    const r = roles(cluster);
    const names = (set: 'all' | 'gates' | 'all_but_conv') => [...cluster.replica.layout(set).names].sort();
    assert.deepEqual(names('gates'), [...r.gate].sort());
    assert.deepEqual(names('all_but_conv'), [...r.gate, ...r.bnBias, ...r.linear].sort());
    assert.deepEqual(names('all'), [...r.conv, ...r.gate, ...r.bnBias, ...r.linear].sort());
    assert.ok(r.conv.length >= 9 && r.gate.length >= 9, `${r.conv.length} conv and ${r.gate.length} gate parameters`);
  });

  it('gates (the default): the step changes the gates and nothing else', async () => {
    const { before, after, roles: r } = await oneTickStep({});
    for (const n of r.gate) assert.ok(!same(before.get(n)!, after.get(n)!), `${n} trained`);
    for (const n of [...r.conv, ...r.bnBias, ...r.linear]) assert.ok(same(before.get(n)!, after.get(n)!), `${n} unchanged`);
  });

  it("all_but_conv (the paper's freeze_conv): gates, BN biases and the linear layer train; convolutions and BN weights stay", async () => {
    const gates = await oneTickStep({});
    const paper = await oneTickStep({ tick_trains: 'all_but_conv' });
    const { before, after, roles: r } = paper;
    for (const n of [...r.gate, ...r.bnBias, ...r.linear]) assert.ok(!same(before.get(n)!, after.get(n)!), `${n} trained`);
    for (const n of r.conv) assert.ok(same(before.get(n)!, after.get(n)!), `${n} unchanged`);
    for (const n of r.bnFrozen.filter((n) => n.endsWith('.weight'))) assert.ok(same(before.get(n)!, after.get(n)!), `${n} stays frozen`);
    // The gates take the same update either way (the gate gradient does not depend on what else trains), and so
    // do the scores: |g * dL/dg| at the same g.
    for (const n of r.gate) assert.ok(same(gates.after.get(n)!, after.get(n)!), `${n}: same update as a gates-only Tick`);
    for (const [bn, s] of gates.scores) assert.deepEqual(paper.scores.get(bn), s, bn);
  });

  it('tick_decay_frozen: the frozen parameters with momentum take the zero-gradient SGD step (PyTorch 1.x); the trained ones the same update', async () => {
    const plain = await oneTickStep({ tick_trains: 'all_but_conv' });
    const decayed = await oneTickStep({ tick_trains: 'all_but_conv', tick_decay_frozen: true });
    const r = decayed.roles;
    for (const n of [...r.gate, ...r.bnBias, ...r.linear]) assert.ok(same(plain.after.get(n)!, decayed.after.get(n)!), `${n}: same as without decay`);
    for (const n of r.conv) {
      // PyTorch 1.x SGD on a frozen parameter whose .grad is a zero tensor: d = 0 + wd * p; buf = m * buf + d; p -= lr * buf.
      const p = decayed.before.get(n)!.slice();
      sgdStep(p, new Float32Array(p.length), decayed.momentum.get(n)!.slice(), false, { ...SGD, lr: 1e-2 });
      assert.ok(same(decayed.after.get(n)!, p), `${n}: moved by weight decay and momentum`);
      assert.ok(!same(decayed.before.get(n)!, p), `${n}: the move is not zero`);
    }
    // With the gates alone trained, the BN biases and the linear layer are frozen too, and move the same way.
    const gatesOnly = await oneTickStep({ tick_decay_frozen: true });
    for (const n of [...gatesOnly.roles.bnBias, ...gatesOnly.roles.linear, ...gatesOnly.roles.conv]) {
      assert.ok(!same(gatesOnly.before.get(n)!, gatesOnly.after.get(n)!), `${n} moved`);
    }
    // A parameter without momentum (not trained since the last reset) had no .grad in PyTorch: it stays.
    const reset = await oneTickStep({ tick_trains: 'all_but_conv', tick_decay_frozen: true }, (c) => c.replica.resetMomentum());
    for (const n of reset.roles.conv) assert.ok(same(reset.before.get(n)!, reset.after.get(n)!), `${n} unchanged without momentum`);
  });

  it('no tensor leaks over Tick steps with the paper switches', async () => {
    const cluster = await gatedCluster();
    const gbn = gbnConfig({ tick_trains: 'all_but_conv', tick_decay_frozen: true });
    const sampler = new BatchSampler(16, 4, 7);
    await tickSteps(cluster, gbn, SGD, sampler, 1, undefined, async () => {});
    const tensors = tf.memory().numTensors;
    await tickSteps(cluster, gbn, SGD, sampler, 2, undefined, async () => {});
    assert.equal(tf.memory().numTensors, tensors);
  });
});
