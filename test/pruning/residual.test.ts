import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { trace, type Graph } from '../../src/shared/graph/trace.js';
import { buildModel } from '../../src/shared/models/registry.js';
import { BatchNorm2d, MaxPool2d } from '../../src/shared/nn/layers.js';
import type { Module } from '../../src/shared/nn/module.js';
import { applyDecision, globalPrune } from '../../src/shared/pruning/decision.js';
import { addGates } from '../helpers.js';
import { groupMask } from '../../src/shared/pruning/gates.js';
import { channelStructure, prunableGroups } from '../../src/shared/pruning/groups.js';
import { randomImportance } from '../../src/shared/pruning/importance.js';
import { melt } from '../../src/shared/pruning/melt.js';
import { Rng } from '../../src/shared/rng.js';
import { cpu } from './helpers.js';

/**
 * The channels alive in a node's output: a gated BN's mask, carried through ReLU and pooling; the network input is
 * whole. Anything else (a convolution's raw output) has no mask of its own: null.
 */
function alive(g: Graph, id: number): number[] | null {
  const n = g.nodes[id];
  if (n.kind === 'input') return Array(n.shape[n.shape.length - 1]).fill(1);
  if (n.kind === 'relu') return alive(g, n.inputs[0]);
  if (n.kind === 'add') return alive(g, n.inputs[0]);
  if (n.kind === 'layer' && n.layer instanceof BatchNorm2d) return [...(n.layer.mask!.value.dataSync() as Float32Array)];
  if (n.kind === 'layer' && n.layer instanceof MaxPool2d) return alive(g, n.inputs[0]);
  return null;
}

function adds(g: Graph) {
  return g.nodes.filter((n) => n.kind === 'add');
}

/** Prunes half the filters with random scores (the decision code does not care where scores come from). */
function pruneHalf(model: Module, shape: [number, number, number], seed: number): void {
  const rng = new Rng(seed);
  addGates(model);
  const s = channelStructure(model, shape);
  const entries = prunableGroups(s).map((group) => ({ group, scores: randomImportance(group, rng), mask: groupMask(model, group) }));
  applyDecision(model, globalPrune(entries, { p: 0.5, minimalRatio: 0.1, flopsEta: 0, minArea: 1 }).decision);
}

describe('residual additions in pruned ResNets', () => {
  before(cpu);

  for (const [arch, shape] of [
    ['mnist.resnet20', [28, 28, 1]],
    ['cifar.resnet56', [32, 32, 3]],
    ['resnet50', [32, 32, 3]],
  ] as [string, [number, number, number]][]) {
    it(`${arch}: both inputs of every addition carry the same channel set, masked and after the melt`, () => {
      const model = buildModel(arch, { seed: 5 });
      pruneHalf(model, shape, 5);
      const g = trace(model, shape);
      const sums = adds(g);
      assert.ok(sums.length >= 9, `${sums.length} additions`);
      let pruned = 0;
      for (const n of sums) {
        const [a, b] = n.inputs.map((i) => alive(g, i));
        assert.ok(a && b, `addition ${n.id}: both inputs come from a BN (or the input)`);
        assert.deepEqual(a, b, `addition ${n.id}: the two inputs keep different channels`);
        pruned += a.filter((v) => v === 0).length;
      }
      assert.ok(pruned > 0, 'the residual streams lost channels (the check is not between two whole sets)');

      const widths = sums.map((n) => n.shape[2] - alive(g, n.inputs[0])!.filter((v) => v === 0).length);
      melt(model, shape);
      const after = trace(model, shape);
      const meltedSums = adds(after);
      assert.equal(meltedSums.length, sums.length);
      meltedSums.forEach((n, i) => {
        const [a, b] = n.inputs.map((j) => after.nodes[j].shape);
        assert.deepEqual(a, b, `melted addition ${n.id}`);
        assert.equal(n.shape[2], widths[i], `melted addition ${n.id} keeps exactly the unmasked channels`);
      });
      model.dispose();
    });
  }
});
