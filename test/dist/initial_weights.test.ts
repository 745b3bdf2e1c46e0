import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { coordinatorFor, startInProcess } from '../../src/coordinator/in_process.js';
import { GdpError } from '../../src/shared/errors.js';
import { serializeSafetensors } from '../../src/shared/io/safetensors.js';
import { exportTorchState } from '../../src/shared/io/torch_state.js';
import { buildModel } from '../../src/shared/models/registry.js';
import { BatchNorm2d } from '../../src/shared/nn/layers.js';
import { applyModelUpdate } from '../../src/shared/train/apply_update.js';
import { stateChecksum } from '../../src/shared/train/model_state.js';
import { planMelt, planNarrowing } from '../../src/shared/pruning/melt.js';
import { layerWidths } from '../../src/shared/io/model_file.js';
import { channelStructure } from '../../src/shared/pruning/groups.js';
import { pruningUpdate } from '../../src/shared/pruning/updates.js';
import { Rng } from '../../src/shared/rng.js';
import * as tf from '@tensorflow/tfjs-core';
import { TINY, noLog, setup, tinyConfig, tinyData } from './helpers.js';

/** A TINY model with weights unlike a fresh build's (another seed, moved BN statistics). */
function trainedLike(seed: number) {
  const model = buildModel(TINY, { numClasses: 10, seed });
  const rng = new Rng(seed);
  for (const [, m] of model.namedModules()) {
    if (m instanceof BatchNorm2d) m.runningMean.set(tf.tensor1d(Float32Array.from({ length: m.channels }, () => rng.normal())));
  }
  return model;
}

/** A TINY model pruned and melted to conv1 [1,4], conv2 [4,6]: the form of a run's `pruned.safetensors`. */
function meltedLike(seed: number) {
  const src = trainedLike(seed);
  applyModelUpdate(src, pruningUpdate({ kind: 'gate', layers: ['bn1', 'bn2'] }));
  (src as unknown as { bn1: BatchNorm2d }).bn1.mask!.set(tf.tensor1d([1, 0, 1, 1, 0, 1]));
  applyModelUpdate(src, pruningUpdate(planMelt(src, channelStructure(src, [8, 8, 1]))));
  return src;
}

const errCode = (code: string, pattern: RegExp) => (e: unknown) => e instanceof GdpError && e.code === code && pattern.test(e.message);

describe('a run starts from model.weights (or base.checkpoint_path)', () => {
  let dir: string;
  before(async () => {
    await setup();
    dir = mkdtempSync(join(tmpdir(), 'gdp-weights-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('plain weights reach the coordinator and every worker', async () => {
    const src = trainedLike(41);
    const file = join(dir, 'plain.safetensors');
    writeFileSync(file, serializeSafetensors(exportTorchState(src)));
    const run = await startInProcess(tinyConfig({ model: { name: TINY, num_class: 10, weights: file } }), { workers: 2, loadData: tinyData, log: noLog });
    try {
      const want = stateChecksum(src);
      assert.equal(stateChecksum(run.coordinator.model), want);
      for (const w of run.workers) assert.equal(stateChecksum(w.replica!.model), want);
      assert.notEqual(stateChecksum(buildModel(TINY, { numClasses: 10, seed: 3 })), want, 'the config seed alone builds other weights');
      // Training goes on from there with every replica identical.
      await run.coordinator.step(Int32Array.from([0, 1, 2, 3, 4, 5]), 'all', { lr: 0.1, momentum: 0.9, weightDecay: 0, nesterov: false });
      await run.coordinator.verifyChecksums();
    } finally {
      await run.close();
      src.dispose();
    }
  });

  it('a gated checkpoint (the paper\'s GBN form, with masks) starts a gated run; workers replay the gating', async () => {
    const src = trainedLike(42);
    applyModelUpdate(src, pruningUpdate({ kind: 'gate', layers: ['bn1', 'bn2'] }));
    (src as unknown as { bn1: BatchNorm2d }).bn1.mask!.set(tf.tensor1d([1, 0, 1, 1, 0, 1]));
    const file = join(dir, 'gated.safetensors');
    writeFileSync(file, serializeSafetensors(exportTorchState(src)));
    const config = tinyConfig({ base: { task_name: 'tiny', seed: 3, checkpoint_path: file } });
    const run = await startInProcess(config, { workers: 2, loadData: tinyData, log: noLog });
    try {
      assert.equal(stateChecksum(run.coordinator.model), stateChecksum(src));
      for (const w of run.workers) assert.equal(stateChecksum(w.replica!.model), stateChecksum(src));
      assert.deepEqual(
        run.coordinator.updates.map((u) => (u.kind === 'custom' ? u.handler : u.kind)),
        ['gdp.prune.gate'],
      );
    } finally {
      await run.close();
      src.dispose();
    }
  });

  it('a pruned (melted) file starts a run at its widths: every replica narrows the same way, then takes its values', async () => {
    const src = meltedLike(45);
    const file = join(dir, 'pruned.safetensors');
    writeFileSync(file, serializeSafetensors(exportTorchState(src)));
    const lines: string[] = [];
    const config = tinyConfig({ model: { name: TINY, num_class: 10, weights: file } });
    const run = await startInProcess(config, { workers: 2, loadData: tinyData, log: (l) => lines.push(l) });
    try {
      // Two paths to the same network: masks then melt (src), and narrowing to the file's widths then its values.
      const want = stateChecksum(src);
      assert.equal(stateChecksum(run.coordinator.model), want);
      for (const w of run.workers) assert.equal(stateChecksum(w.replica!.model), want);
      assert.deepEqual(layerWidths(run.coordinator.model), layerWidths(src));
      assert.deepEqual(
        run.coordinator.updates.map((u) => (u.kind === 'custom' ? u.handler : u.kind)),
        ['gdp.prune.melt'],
      );
      assert.ok(lines.some((l) => /starting from .*pruned\.safetensors \(pruned form\)/.test(l)), lines.join('\n'));
      await run.coordinator.step(Int32Array.from([0, 1, 2, 3, 4, 5]), 'all', { lr: 0.1, momentum: 0.9, weightDecay: 0, nesterov: false });
      await run.coordinator.verifyChecksums();
    } finally {
      await run.close();
      src.dispose();
    }
  });

  it('a file wider than the config\'s network is not a pruned form of it; a narrower group keeps its first channels', () => {
    const model = buildModel(TINY, { numClasses: 10, seed: 1 });
    try {
      const s = channelStructure(model, [8, 8, 1]);
      const w = layerWidths(model);
      assert.throws(() => planNarrowing(s, { ...w, conv1: [1, 8] }, 'f.safetensors'), errCode('SHAPE_MISMATCH', /f\.safetensors: channel group 'bn1' has 8 channels, wider than the model's 6/));
      assert.equal(planNarrowing(s, w, 'f.safetensors'), undefined, 'full widths need no narrowing');
      const r = planNarrowing(s, { ...w, conv2: [6, 2] }, 'f.safetensors')!;
      assert.deepEqual(r.groups, { bn2: [0, 1] });
      assert.deepEqual(r.ungate, []);
    } finally {
      model.dispose();
    }
  });

  it('bad starting weights stop the run at start with the file and the reason', () => {
    assert.throws(() => coordinatorFor(tinyConfig({ model: { name: TINY, num_class: 10, weights: join(dir, 'absent.safetensors') } }), noLog), errCode('FILE_NOT_FOUND', /absent\.safetensors/));

    const melted = join(dir, 'melted.safetensors');
    const m = meltedLike(43);
    writeFileSync(melted, serializeSafetensors(exportTorchState(m)));
    m.dispose();

    const other = join(dir, 'other.safetensors');
    writeFileSync(other, serializeSafetensors(exportTorchState(buildModel(TINY, { numClasses: 7, seed: 1 }))));
    assert.throws(() => coordinatorFor(tinyConfig({ model: { name: TINY, num_class: 10, weights: other } }), noLog), errCode('SHAPE_MISMATCH', /other\.safetensors: .*linear\.weight.*\[7,6\]|7 classes/));

    assert.throws(
      () => coordinatorFor(tinyConfig({ base: { task_name: 'tiny', checkpoint_path: other }, model: { name: TINY, num_class: 10, weights: melted } }), noLog),
      errCode('BAD_CONFIG', /model\.weights .* base\.checkpoint_path/),
    );
  });
});
