import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs-core';
import { buildModel } from '../../src/shared/models/registry.js';
import { BatchNorm2d, Conv2d } from '../../src/shared/nn/layers.js';
import { tensorOps, type Module } from '../../src/shared/nn/module.js';
import { addGates } from '../helpers.js';
import { channelStructure, prunableGroups } from '../../src/shared/pruning/groups.js';
import { GateScoreAccumulator, gateImportance, l1Importance, randomImportance } from '../../src/shared/pruning/importance.js';
import { Rng } from '../../src/shared/rng.js';
import { Replica } from '../../src/shared/train/replica.js';
import { cpu, randomiseBatchNorms } from './helpers.js';

const SHAPE: [number, number, number] = [8, 8, 1];

function batch(rng: Rng, n: number) {
  return {
    x: Float32Array.from({ length: n * 64 }, () => rng.normal()),
    y: Int32Array.from({ length: n }, () => rng.int(10)),
    n,
  };
}

/** dL/dg of the mean cross-entropy for every gate, by BN path: the reference path, straight from tf.grads. */
function meanLossGateGrads(model: Module, b: ReturnType<typeof batch>): Map<string, Float32Array> {
  const bns = [...model.namedModules()].filter((e): e is [string, BatchNorm2d] => e[1] instanceof BatchNorm2d);
  model.train();
  const out = new Map<string, Float32Array>();
  tf.tidy(() => {
    const x = tf.tensor4d(b.x, [b.n, ...SHAPE]);
    const onehot = tf.oneHot(tf.tensor1d(b.y, 'int32'), 10);
    // The gate tensors themselves are differentiated: f reads them through the model.
    const f = () => tf.neg(tf.mean(tf.sum(tf.mul(onehot, tf.logSoftmax(model.apply(x, tensorOps))), 1))) as tf.Scalar;
    const grads = tf.grads(f)(bns.map(([, bn]) => bn.gate!.value));
    bns.forEach(([p], i) => out.set(p, grads[i].dataSync() as Float32Array));
  });
  return out;
}

describe('importance', () => {
  before(cpu);

  it('gate: accumulates |g * averaged dL/dg| over steps, equal to tf.grads of the mean loss', () => {
    const rng = new Rng(4);
    const model = buildModel('mnist.resnet20', { seed: 4 });
    randomiseBatchNorms(model, rng);
    addGates(model);
    const replica = new Replica(model, SHAPE);
    const layout = replica.layout('gates');
    const acc = new GateScoreAccumulator(layout);
    const expected = new Map<string, Float64Array>();
    const tensors = tf.memory().numTensors;
    for (let step = 0; step < 2; step++) {
      const b = batch(rng, 4);
      const ref = meanLossGateGrads(model, b);
      const gates = replica.readParams(layout);
      const { grad } = replica.gradients(b, layout);
      acc.add(
        gates,
        grad.map((v) => v / b.n),
      );
      layout.names.forEach((name, i) => {
        const p = name.slice(0, -2);
        const e = expected.get(p) ?? new Float64Array(ref.get(p)!.length);
        ref.get(p)!.forEach((d, c) => (e[c] += Math.abs(gates[layout.offsets[i] + c] * d)));
        expected.set(p, e);
      });
    }
    assert.equal(tf.memory().numTensors, tensors, 'no tensors leak');
    assert.equal(acc.steps, 2);
    let maxRel = 0;
    let sum = 0;
    for (const [p, e] of expected) {
      const got = acc.perBn().get(p)!;
      e.forEach((v, c) => {
        maxRel = Math.max(maxRel, Math.abs(got[c] - v) / (Math.abs(v) + 1e-6));
        sum += v;
      });
    }
    assert.ok(sum > 0, 'scores are not all zero');
    assert.ok(maxRel < 1e-3, `max relative difference ${maxRel}`);

    // A group's score is the sum over its member BNs.
    const s = channelStructure(model, SHAPE);
    const stream = prunableGroups(s).find((g) => g.bns.length > 1)!;
    const gs = gateImportance(stream, acc.perBn());
    const manual = stream.bns.reduce((t, p) => t + acc.perBn().get(p)![3], 0);
    assert.ok(Math.abs(gs[3] - manual) < 1e-12);
  });

  it('l1: per channel, the L1 norm of every producing filter; random: seeded', () => {
    const model = buildModel('cifar.resnet20', { seed: 2 });
    const s = channelStructure(model, [8, 8, 3]);
    const g = prunableGroups(s).find((x) => x.producers.length > 1)!;
    const convs = new Map(model.namedModules());
    const c = 5;
    let want = 0;
    for (const p of g.producers) {
      const w = (convs.get(p) as Conv2d).weight.value;
      want += tf.tidy(() => tf.sum(tf.abs(tf.slice(w, [0, 0, 0, c], [-1, -1, -1, 1]))).dataSync()[0]);
    }
    assert.ok(Math.abs(l1Importance(g, model)[c] - want) < 1e-3 * want);
    assert.deepEqual(randomImportance(g, new Rng(1)), randomImportance(g, new Rng(1)));
    assert.notDeepEqual(randomImportance(g, new Rng(1)), randomImportance(g, new Rng(2)));
  });
});
