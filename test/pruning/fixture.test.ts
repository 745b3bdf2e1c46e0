import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { modelCost } from '../../src/shared/graph/flops.js';
import { parseSafetensors } from '../../src/shared/io/safetensors.js';
import { loadTorchState } from '../../src/shared/io/torch_state.js';
import { buildModel } from '../../src/shared/models/registry.js';
import { effectiveCost } from '../../src/shared/pruning/cost.js';
import { applyDecision, type MaskDecision } from '../../src/shared/pruning/decision.js';
import { batchNorms, groupMask } from '../../src/shared/pruning/gates.js';
import type { Module } from '../../src/shared/nn/module.js';
import { channelStructure, prunableGroups } from '../../src/shared/pruning/groups.js';
import { melt } from '../../src/shared/pruning/melt.js';
import { useBackend, addGates, isGated } from '../helpers.js';
import { evalLogits, maxAbsDiff } from './helpers.js';

// Compiled to dist/test/pruning/: the repo root is three levels up, and CI puts shared/ next to the repo.
const here = dirname(fileURLToPath(import.meta.url));
const FIXTURES = resolve(here, '../../../../shared/fixtures/pytorch-resnet56');
const BASELINE_MACS = 125_747_840;

function f32(name: string): Float32Array {
  const b = readFileSync(resolve(FIXTURES, name));
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

describe("the paper's pruned ResNet-56 (gbn70 fixture)", () => {
  // Inference only: the wasm backend is fast and exact enough (the fixture's README gives 4e-6 against PyTorch).
  before(() => useBackend('wasm'));

  it("melts to about 30% of the baseline MACs with PyTorch's logits", () => {
    // CI clones the repo next to a copy of shared/: a missing fixture is a broken checkout, not a reason to skip.
    assert.ok(existsSync(FIXTURES), `fixtures not found at ${FIXTURES}`);
    const model = buildModel('cifar.resnet56');
    const file = resolve(FIXTURES, 'resnet56_cifar10_gbn70.safetensors');
    // A copy: parseSafetensors reads tensor bytes at offset 0 of `.buffer`, wrong for a pooled Buffer view.
    loadTorchState(model, parseSafetensors(new Uint8Array(readFileSync(file)), file).tensors, [32, 32, 3], file);
    assert.ok(isGated(model));
    const s = channelStructure(model, [32, 32, 3]);
    assert.equal(prunableGroups(s).length, 3 + 27, 'one group per stage stream plus one per block interior');
    const predicted = effectiveCost(model, s);

    const x = tf.tidy(() => tf.transpose(tf.tensor4d(f32('input_a.f32'), [8, 3, 32, 32]), [0, 2, 3, 1]));
    const masked = evalLogits(model, x);
    const record = melt(model, [32, 32, 3]);
    const melted = evalLogits(model, x);
    x.dispose();

    const want = f32('logits_gbn70_a.f32');
    assert.ok(maxAbsDiff(masked, want) <= 1e-4, `masked vs PyTorch: ${maxAbsDiff(masked, want)}`);
    assert.ok(maxAbsDiff(melted, want) <= 1e-4, `melted vs PyTorch: ${maxAbsDiff(melted, want)}`);
    const cost = modelCost(model, [32, 32, 3]);
    assert.equal(cost.macs, predicted.macs);
    assert.equal(cost.params, predicted.params);
    const ratio = cost.macs / BASELINE_MACS;
    assert.ok(ratio > 0.25 && ratio < 0.35, `MACs ratio ${ratio}`);
    assert.ok(Object.keys(record.groups).length > 20);
    console.log(
      `# gbn70 melted: ${cost.macs} MACs (${(100 * ratio).toFixed(2)}% of baseline), ${cost.params} params; max |logit - PyTorch| masked ${maxAbsDiff(masked, want)}, melted ${maxAbsDiff(melted, want)}`,
    );
  });

  it("the paper's masks, as a decision record, replay onto the gated baseline", () => {
    const load = (name: string) => {
      const m = buildModel('cifar.resnet56');
      const file = resolve(FIXTURES, name);
      loadTorchState(m, parseSafetensors(new Uint8Array(readFileSync(file)), file).tensors, [32, 32, 3], file);
      return m;
    };
    const paper = load('resnet56_cifar10_gbn70.safetensors');
    const base = load('resnet56_cifar10_baseline.safetensors');
    addGates(base);
    const s = channelStructure(paper, [32, 32, 3]);
    const decision: MaskDecision = { kind: 'mask', groups: {}, layers: {} };
    for (const g of prunableGroups(s)) {
      const pruned = [...groupMask(paper, g)].flatMap((v, c) => (v === 0 ? [c] : []));
      if (pruned.length) {
        decision.groups[g.id] = pruned;
        decision.layers[g.id] = g.bns;
      }
    }
    applyDecision(base, JSON.parse(JSON.stringify(decision)));
    const masks = (m: Module) => [...batchNorms(m)].map(([p, bn]) => [p, Array.from(bn.mask!.value.dataSync())]);
    assert.deepEqual(masks(base), masks(paper));
    assert.equal(effectiveCost(base, channelStructure(base, [32, 32, 3])).macs, effectiveCost(paper, s).macs);
    base.dispose();
    paper.dispose();
  });
});
