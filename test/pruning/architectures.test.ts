import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { modelCost } from '../../src/shared/graph/flops.js';
import { trace } from '../../src/shared/graph/trace.js';
import { ARCHITECTURES, buildModel } from '../../src/shared/models/registry.js';
import { BatchNorm2d } from '../../src/shared/nn/layers.js';
import type { Module } from '../../src/shared/nn/module.js';
import { effectiveCost } from '../../src/shared/pruning/cost.js';
import { channelStructure, prunableGroups } from '../../src/shared/pruning/groups.js';
import { melt } from '../../src/shared/pruning/melt.js';
import { Rng } from '../../src/shared/rng.js';
import { cpu, evalLogits, gateAndPruneRandomly, maxAbsDiff, randomImages, randomiseBatchNorms } from './helpers.js';

/** The smallest square input (8, 16 or 32 pixels) the architecture traces at: forward passes stay cheap on cpu. */
function smallInput(model: Module, channels: number): [number, number, number] {
  for (const side of [8, 16, 32]) {
    try {
      trace(model, [side, side, channels]);
      return [side, side, channels];
    } catch {
      // too small for this network's downsampling
    }
  }
  throw new Error('no small input traces');
}

// Nothing in the pruning code knows these architectures: every registered one must group, prune and melt.
describe('every registered architecture', () => {
  before(cpu);

  for (const [name, spec] of Object.entries(ARCHITECTURES)) {
    it(`${name}: groups cover every BN once; a random prune melts to the same logits and the predicted MACs`, () => {
      const rng = new Rng(21);
      const model = buildModel(name, { seed: 21 });
      const full = channelStructure(model, spec.inputShape);
      const bns = [...model.namedModules()].filter(([, m]) => m instanceof BatchNorm2d).map(([p]) => p);
      assert.deepEqual(full.groups.flatMap((g) => g.bns).sort(), [...bns].sort());
      for (const g of prunableGroups(full)) assert.ok(g.producers.length > 0 && g.consumers.length > 0, `${g.id} has producers and consumers`);

      assert.deepEqual(effectiveCost(model, full).macs, modelCost(model, spec.inputShape).macs, 'a plain network is whole');
      const shape = smallInput(model, spec.inputShape[2]);
      // The full widths' cost, before the prune (a second model built for it costs seconds for the big nets).
      const fullMacs = modelCost(model, shape).macs;
      randomiseBatchNorms(model, rng);
      gateAndPruneRandomly(model, shape, rng, 0.5);
      const s = channelStructure(model, shape);
      const predicted = effectiveCost(model, s);
      const x = randomImages(2, shape, rng);
      const masked = evalLogits(model, x);
      melt(model, shape);
      const melted = evalLogits(model, x);
      x.dispose();
      assert.ok(maxAbsDiff(masked, melted) <= 1e-4, `max |masked - melted| ${maxAbsDiff(masked, melted)}`);
      const after = modelCost(model, shape);
      assert.equal(after.macs, predicted.macs);
      assert.equal(after.params, predicted.params);
      assert.ok(after.macs < 0.8 * fullMacs);
      model.dispose();
    });
  }
});
