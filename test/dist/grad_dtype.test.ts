import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { startInProcess } from '../../src/coordinator/in_process.js';
import { Rng } from '../../src/shared/rng.js';
import { maxAbsDiff, noLog, numTensors, setup, tinyConfig, tinyData } from './helpers.js';

before(setup);

const SGD = { lr: 0.1, momentum: 0.9, weightDecay: 5e-4, nesterov: false };

/** Parameters after `steps` steps of 2 in-process workers with this gradient dtype; replicas must agree. */
async function run(dtype: 'float32' | 'float16', steps: number): Promise<Float32Array> {
  const config = tinyConfig({ dist: { checksum_every: 1, bucket_mib: 0.0001, heartbeat_ms: 200, grad_dtype: dtype } });
  const data = await tinyData();
  const rng = new Rng(21);
  const cluster = await startInProcess(config, { workers: 2, loadData: tinyData, log: noLog });
  try {
    const tensors = numTensors();
    for (let s = 0; s < steps; s++) {
      const idx = Int32Array.from({ length: 9 }, () => rng.int(data.train.size));
      await cluster.coordinator.step(idx, 'all', SGD);
    }
    // checksum_every: 1 compared every replica after every step already; once more, explicitly.
    await cluster.coordinator.verifyChecksums();
    for (const w of cluster.workers) assert.equal(w.replica!.checksum('parameters'), cluster.coordinator.replica.checksum('parameters'), `${dtype}: worker replica differs`);
    assert.equal(numTensors(), tensors, `${dtype}: tensors leaked`);
    const r = cluster.coordinator.replica;
    return r.readParams(r.layout('all'));
  } finally {
    await cluster.close();
  }
}

test('float16 gradient buckets: replicas stay identical and the weights stay within half-precision rounding of float32', async () => {
  const steps = 5;
  const f32 = await run('float32', steps);
  const f16 = await run('float16', steps);
  const scale = f32.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const diff = maxAbsDiff(f16, f32);
  // Each gradient sum is rounded to 11 significant bits (relative 2^-11 ~ 5e-4) per step; over a few steps of
  // lr 0.1 the weights move by far less than their scale, so the gap stays a small fraction of it.
  assert.ok(diff > 0, 'float16 made no difference: was it used?');
  assert.ok(diff < 2e-3 * scale, `max |w16 - w32| = ${diff} for weights up to ${scale}`);
});
