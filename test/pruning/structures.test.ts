import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs-core';
import { modelCost } from '../../src/shared/graph/flops.js';
import type { Linear } from '../../src/shared/nn/layers.js';
import { effectiveCost } from '../../src/shared/pruning/cost.js';
import { groupMask } from '../../src/shared/pruning/gates.js';
import { channelStructure, prunableGroups } from '../../src/shared/pruning/groups.js';
import { applyMelt, melt, parseMeltRecord } from '../../src/shared/pruning/melt.js';
import { Rng } from '../../src/shared/rng.js';
import { MIXED_SHAPE as SHAPE, Mixed } from './mixed_net.js';
import { cpu, evalLogits, gateAndPruneRandomly, maxAbsDiff, randomImages, randomiseBatchNorms } from './helpers.js';

/** Gated, with random BN statistics and gates, and a random global decision pruning about half the filters. */
function randomlyPruned(seed: number): Mixed {
  const rng = new Rng(seed);
  const model = new Mixed(new Rng(seed + 100));
  randomiseBatchNorms(model, rng);
  gateAndPruneRandomly(model, SHAPE, rng, 0.5);
  return model;
}

describe('channel groups of depthwise convolutions, concatenations and flatten', () => {
  before(cpu);

  it('a depthwise conv ties its input and output; concat and flatten give consumers offsets and areas', () => {
    const s = channelStructure(new Mixed(new Rng(1)), SHAPE);
    const byId = new Map(s.groups.map((g) => [g.id, g]));
    const stem = byId.get('stem.1')!;
    assert.deepEqual(stem.bns, ['stem.1', 'branch2.1'], 'the depthwise conv joins its input and output spaces');
    assert.deepEqual(stem.depthwise, ['branch2.0']);
    assert.deepEqual(stem.consumers, ['branch1.0', 'branch2.3']);
    assert.deepEqual(stem.slices, {}, 'both read the whole space');
    // branch1 (4 channels) is concatenated twice: first at 0 of the 1x1 mix conv, then after the 8 residual channels
    // of a 3x3 map flattened into fc, each channel spread over 9 features.
    const b1 = byId.get('branch1.1')!;
    assert.deepEqual(b1.consumers, ['mix.0', 'fc']);
    assert.deepEqual(b1.slices, { 'mix.0': { offset: 0, area: 1 }, fc: { offset: 72, area: 9 } });
    assert.deepEqual(byId.get('branch2.4')!.slices, { 'mix.0': { offset: 4, area: 1 } });
    const res = byId.get('mix.1')!;
    assert.deepEqual(res.bns, ['mix.1', 'block.7'], 'the residual add merges the block output with its input');
    assert.deepEqual(res.slices, { fc: { offset: 0, area: 9 } });
    const inner = byId.get('block.1')!;
    assert.deepEqual([inner.bns, inner.depthwise, inner.producers, inner.consumers], [['block.1', 'block.4'], ['block.3'], ['block.0'], ['block.6']]);
    assert.deepEqual(
      prunableGroups(s).map((g) => g.id),
      ['stem.1', 'branch1.1', 'branch2.4', 'mix.1', 'block.1'],
    );
    assert.deepEqual(
      s.groups.filter((g) => !g.prunable).map((g) => [g.id, g.blockReason]),
      [
        ['@input', 'it is the network input'],
        ['@fc', 'it is the network output'],
      ],
    );
    // The flatten's output is two runs of groups, in feature order.
    const flat = s.graph.nodes.find((n) => n.kind === 'flatten')!;
    assert.deepEqual(
      s.segmentsOfNode[flat.id].map((g) => [s.groups[g.group].id, g.width, g.area]),
      [
        ['mix.1', 8, 9],
        ['branch1.1', 4, 9],
      ],
    );
  });

  it('a BN over a concatenation keeps the concatenated groups whole, with the reason', () => {
    const s = channelStructure(new Mixed(new Rng(1), { bnAfterConcat: true }), SHAPE);
    for (const id of ['branch1.1', 'branch2.4']) {
      const g = s.groups.find((x) => x.id === id)!;
      assert.equal(g.prunable, false, id);
      assert.match(g.blockReason!, /'mix.0' normalises a concatenation/);
    }
    assert.ok(
      prunableGroups(s).some((g) => g.id === 'stem.1'),
      'groups elsewhere stay prunable',
    );
  });

  for (const seed of [3, 4, 5]) {
    it(`masked = melted (seed ${seed}): logits within 1e-5, predicted MACs and params, record replays`, () => {
      const model = randomlyPruned(seed);
      const s = channelStructure(model, SHAPE);
      const masks = prunableGroups(s).map((g) => groupMask(model, g).filter((v) => v === 0).length);
      assert.ok(
        masks.every((n) => n > 0),
        `every prunable group lost channels: ${masks}`,
      );
      const predicted = effectiveCost(model, s);
      const x = randomImages(3, SHAPE, new Rng(seed));
      const masked = evalLogits(model, x);
      const twin = randomlyPruned(seed);
      const tensors = tf.memory().numTensors;
      const record = melt(model, SHAPE);
      assert.ok(tf.memory().numTensors <= tensors, 'melting leaks no tensors');
      const melted = evalLogits(model, x);
      assert.ok(maxAbsDiff(masked, melted) <= 1e-5, `max |masked - melted| = ${maxAbsDiff(masked, melted)}`);
      const after = modelCost(model, SHAPE);
      assert.equal(after.macs, predicted.macs);
      assert.equal(after.params, predicted.params);
      const fc = [...model.namedModules()].find(([p]) => p === 'fc')![1] as Linear;
      assert.equal(
        fc.inFeatures,
        (predicted.alive[s.groups.findIndex((g) => g.id === 'mix.1')] + predicted.alive[s.groups.findIndex((g) => g.id === 'branch1.1')]) * 9,
      );
      // The record as it travels (JSON) melts a second replica into the same network.
      applyMelt(twin, parseMeltRecord(JSON.parse(JSON.stringify(record))));
      assert.deepEqual(evalLogits(twin, x), melted);
      x.dispose();
      model.dispose();
      twin.dispose();
    });
  }

  it('a melt record whose slice does not fit the consumer is refused before anything changes', () => {
    const model = randomlyPruned(6);
    const s = channelStructure(model, SHAPE);
    const record = JSON.parse(JSON.stringify(melt(randomlyPruned(6), SHAPE)));
    record.layers['branch1.1'].slices.fc = [100, 9];
    const before = modelCost(model, SHAPE);
    assert.throws(
      () => applyMelt(model, record),
      (e: Error & { code?: string }) => e.code === 'BAD_MELT' && /'fc' has 108 inputs/.test(e.message),
    );
    assert.deepEqual(modelCost(model, SHAPE), before);
    assert.ok(
      prunableGroups(s).every((g) => model.slot(`${g.bns[0]}.g`)),
      'still gated',
    );
    model.dispose();
  });
});
