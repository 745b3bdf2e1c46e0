import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { after, before, describe, it } from 'node:test';
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
import { coordinatorFor } from '../../src/coordinator/in_process.js';
import { layerWidths } from '../../src/shared/io/model_file.js';
import { serializeSafetensors } from '../../src/shared/io/safetensors.js';
import { exportTorchState } from '../../src/shared/io/torch_state.js';
import { stateChecksum } from '../../src/shared/train/model_state.js';
import { noLog, tinyConfig } from '../dist/helpers.js';
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

  describe('as the starting weights of a run', () => {
    let dir: string;
    before(() => (dir = mkdtempSync(join(tmpdir(), 'gdp-gbn70-'))));
    after(() => rmSync(dir, { recursive: true, force: true }));
    const config = (over: object) => tinyConfig({ base: { task_name: 'gbn70', seed: 3 }, model: { name: 'cifar.resnet56', num_class: 10 }, ...over });
    const input = () => tf.tidy(() => tf.transpose(tf.tensor4d(f32('input_a.f32'), [8, 3, 32, 32]), [0, 2, 3, 1]));
    const kinds = (c: ReturnType<typeof coordinatorFor>) => c.updates.map((u) => (u.kind === 'custom' ? u.handler : u.kind));

    it("the gated file (base.checkpoint_path) starts a gated run with the paper's masks; its melted form starts one at the melted widths, both with PyTorch's logits", () => {
      const want = f32('logits_gbn70_a.f32');
      const x = input();
      const gated = coordinatorFor(
        config({ base: { task_name: 'gbn70', seed: 3, checkpoint_path: resolve(FIXTURES, 'resnet56_cifar10_gbn70.safetensors') } }),
        noLog,
      );
      assert.deepEqual(kinds(gated), ['gdp.prune.gate']);
      const model = gated.model;
      const alive = [...batchNorms(model)].reduce((n, [, bn]) => n + Array.from(bn.mask!.value.dataSync()).reduce((a, v) => a + v, 0), 0);
      const all = [...batchNorms(model)].reduce((n, [, bn]) => n + bn.channels, 0);
      assert.ok(alive < 0.7 * all, `the file's masks prune channels: ${alive} of ${all} alive`);
      assert.ok(maxAbsDiff(evalLogits(model, x), want) <= 1e-4, 'gated run vs PyTorch');

      // Melt it (as the prune stage ends), save it as a run saves pruned.safetensors, and start a run from that file.
      melt(model, [32, 32, 3]);
      const file = join(dir, 'pruned.safetensors');
      writeFileSync(file, serializeSafetensors(exportTorchState(model)));
      const narrowed = coordinatorFor(config({ model: { name: 'cifar.resnet56', num_class: 10, weights: file } }), noLog);
      assert.deepEqual(kinds(narrowed), ['gdp.prune.melt']);
      // Two paths to the same network: the paper's masks melted in memory, and narrowing to the file's widths.
      assert.deepEqual(layerWidths(narrowed.model), layerWidths(model));
      assert.equal(stateChecksum(narrowed.model), stateChecksum(model));
      assert.ok(maxAbsDiff(evalLogits(narrowed.model, x), want) <= 1e-4, 'narrowed run vs PyTorch');
      assert.ok(modelCost(narrowed.model, [32, 32, 3]).macs / BASELINE_MACS < 0.35);
      x.dispose();
      model.dispose();
      narrowed.model.dispose();
    });
  });
});
