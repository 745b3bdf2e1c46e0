import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs-core';
import { modelCost } from '../../src/shared/graph/flops.js';
import { trace } from '../../src/shared/graph/trace.js';
import { buildModel } from '../../src/shared/models/registry.js';
import { BatchNorm2d } from '../../src/shared/nn/layers.js';
import type { Module } from '../../src/shared/nn/module.js';
import { effectiveCost } from '../../src/shared/pruning/cost.js';
import { applyDecision, globalPrune } from '../../src/shared/pruning/decision.js';
import { addGates } from '../helpers.js';
import { groupMask } from '../../src/shared/pruning/gates.js';
import { channelStructure, prunableGroups, type ChannelStructure } from '../../src/shared/pruning/groups.js';
import { randomImportance } from '../../src/shared/pruning/importance.js';
import { applyMelt, melt, parseMeltRecord } from '../../src/shared/pruning/melt.js';
import { Rng } from '../../src/shared/rng.js';
import { cpu, evalLogits, maxAbsDiff, randomImages, randomiseBatchNorms } from './helpers.js';

const SMALL: [number, number, number][] = [
  [8, 8, 3],
  [8, 8, 1],
];

/** Gated model with random BN values and gates, pruned by two rounds of random global decisions. */
function randomlyPruned(arch: string, shape: readonly number[], seed: number): { model: Module; s: ChannelStructure } {
  const rng = new Rng(seed);
  const model = buildModel(arch, { seed });
  randomiseBatchNorms(model, rng);
  addGates(model);
  for (const [, m] of model.namedModules()) {
    if (m instanceof BatchNorm2d) m.gate!.set(tf.tensor1d(Float32Array.from({ length: m.channels }, () => rng.normal())));
  }
  const s = channelStructure(model, shape);
  for (let round = 0; round < 2; round++) {
    const entries = prunableGroups(s).map((group) => ({ group, scores: randomImportance(group, rng), mask: groupMask(model, group) }));
    const { decision } = globalPrune(entries, { p: 0.3, minimalRatio: 0.1, flopsEta: 0, minArea: 1 });
    applyDecision(model, decision);
  }
  return { model, s };
}

/** Per traced node, the mask that zeroes its channels (from the nearest BN upstream), or undefined. */
function maskPerNode(model: Module, shape: readonly number[]): (string | undefined)[] {
  const g = trace(model, shape);
  const out: (string | undefined)[] = [];
  for (const n of g.nodes) {
    if (n.layer instanceof BatchNorm2d) out.push(Array.from(n.layer.mask!.value.dataSync()).join(','));
    else if (n.kind === 'relu' || n.kind === 'add' || n.kind === 'flatten' || (n.layer && n.layer.constructor.name.includes('Pool'))) {
      out.push(out[n.inputs[0]]);
      if (n.kind === 'add') assert.equal(out[n.inputs[0]], out[n.inputs[1]], `add node ${n.id}: its inputs carry different masks`);
    } else out.push(undefined);
  }
  return out;
}

describe('melt', () => {
  before(cpu);

  for (const [arch, shape] of [
    ['cifar.resnet20', SMALL[0]],
    ['mnist.resnet20', SMALL[1]],
  ] as const) {
    it(`${arch}: masked eval logits equal melted logits, no gates left, MACs as predicted`, () => {
      const { model, s } = randomlyPruned(arch, shape, 7);
      const masks = maskPerNode(model, shape);
      assert.ok(
        masks.some((m) => m?.includes('0')),
        'the random decision masked something',
      );
      const x = randomImages(4, shape, new Rng(3));
      const masked = evalLogits(model, x);
      const predicted = effectiveCost(model, s);
      const full = modelCost(model, shape);
      assert.ok(predicted.macs < full.macs * 0.9, `pruned ${predicted.macs} of ${full.macs} MACs`);

      const tensorsBefore = tf.memory().numTensors;
      const record = melt(model, shape);
      const melted = evalLogits(model, x);
      assert.ok(maxAbsDiff(masked, melted) <= 1e-4, `max |masked - melted| = ${maxAbsDiff(masked, melted)}`);
      assert.ok(tf.memory().numTensors <= tensorsBefore, 'melting leaks no tensors');
      for (const [name] of model.namedSlots()) assert.ok(!name.endsWith('.g') && !name.endsWith('.bn_mask'), `${name} left after melt`);
      for (const [, m] of model.namedModules()) if (m instanceof BatchNorm2d) assert.equal(m.gated, false);

      const after = modelCost(model, shape);
      assert.equal(after.macs, predicted.macs);
      assert.equal(after.params, predicted.params);
      const g = trace(model, shape);
      for (const n of g.nodes.filter((n) => n.kind === 'add')) {
        const [a, b] = n.inputs.map((i) => g.nodes[i].shape.at(-1));
        assert.equal(a, b, `add node ${n.id} joins ${a} and ${b} channels`);
      }
      assert.ok(Object.keys(record.groups).length > 0);
      x.dispose();
    });
  }

  it('a melt record replays through JSON onto a second replica with identical weights', () => {
    const shape = SMALL[0];
    const a = randomlyPruned('cifar.resnet20', shape, 11).model;
    const b = randomlyPruned('cifar.resnet20', shape, 11).model;
    const record = parseMeltRecord(JSON.parse(JSON.stringify(melt(a, shape))));
    applyMelt(b, record);
    const sa = [...a.namedSlots()];
    const sb = new Map(b.namedSlots());
    assert.equal(sa.length, sb.size);
    for (const [name, slot] of sa) {
      assert.deepEqual(slot.value.shape, sb.get(name)!.value.shape, name);
      assert.deepEqual(slot.value.dataSync(), sb.get(name)!.value.dataSync(), name);
    }
  });

  it('rejects a record whose widths do not fit the model, leaving it untouched', () => {
    const shape = SMALL[0];
    const a = randomlyPruned('cifar.resnet20', shape, 5).model;
    const record = melt(a, shape);
    const fresh = buildModel('cifar.resnet32');
    addGates(fresh);
    const id = Object.keys(record.groups)[0];
    record.layers[id].width += 1;
    assert.throws(
      () => applyMelt(fresh, record),
      (e: Error & { code?: string }) => e.code === 'BAD_MELT',
    );
    assert.ok(
      [...fresh.namedSlots()].some(([n]) => n.endsWith('.g')),
      'still gated',
    );
  });

  it('refuses masks that differ inside a group, or a group with every channel masked', () => {
    const shape = SMALL[0];
    const model = buildModel('cifar.resnet20');
    addGates(model);
    const s = channelStructure(model, shape);
    const stream = prunableGroups(s).find((g) => g.id === 'bn1')!;
    const bnAt = new Map([...model.namedModules()]);
    const bn2 = bnAt.get('layer1.1.bn2') as BatchNorm2d;
    const half = Float32Array.from({ length: 16 }, (_, i) => (i === 3 ? 0 : 1));
    bn2.mask!.set(tf.tensor1d(half));
    assert.throws(
      () => melt(model, shape),
      (e: Error & { code?: string }) => e.code === 'INCONSISTENT_MASK' && /channel 3/.test(e.message),
    );
    for (const p of stream.bns) (bnAt.get(p) as BatchNorm2d).mask!.set(tf.zeros([16]));
    assert.throws(
      () => melt(model, shape),
      (e: Error & { code?: string }) => e.code === 'EMPTY_GROUP',
    );
  });
});
