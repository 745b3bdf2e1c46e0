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
import { planMelt } from '../../src/shared/pruning/melt.js';
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

  it('bad starting weights stop the run at start with the file and the reason', () => {
    assert.throws(() => coordinatorFor(tinyConfig({ model: { name: TINY, num_class: 10, weights: join(dir, 'absent.safetensors') } }), noLog), errCode('FILE_NOT_FOUND', /absent\.safetensors/));

    // A melted (narrower) network: the workers would build other shapes from the config.
    const src = trainedLike(43);
    applyModelUpdate(src, pruningUpdate({ kind: 'gate', layers: ['bn1', 'bn2'] }));
    (src as unknown as { bn1: BatchNorm2d }).bn1.mask!.set(tf.tensor1d([1, 0, 1, 1, 0, 1]));
    applyModelUpdate(src, pruningUpdate(planMelt(src, channelStructure(src, [8, 8, 1]))));
    const melted = join(dir, 'melted.safetensors');
    writeFileSync(melted, serializeSafetensors(exportTorchState(src)));
    src.dispose();
    assert.throws(() => coordinatorFor(tinyConfig({ model: { name: TINY, num_class: 10, weights: melted } }), noLog), errCode('SHAPE_MISMATCH', /melted\.safetensors: layer conv1 is \[1,4\]/));

    const other = join(dir, 'other.safetensors');
    writeFileSync(other, serializeSafetensors(exportTorchState(buildModel(TINY, { numClasses: 7, seed: 1 }))));
    assert.throws(() => coordinatorFor(tinyConfig({ model: { name: TINY, num_class: 10, weights: other } }), noLog), errCode('SHAPE_MISMATCH', /other\.safetensors: .*linear\.weight.*\[7,6\]|7 classes/));

    assert.throws(
      () => coordinatorFor(tinyConfig({ base: { task_name: 'tiny', checkpoint_path: other }, model: { name: TINY, num_class: 10, weights: melted } }), noLog),
      errCode('BAD_CONFIG', /model\.weights .* base\.checkpoint_path/),
    );
  });
});
