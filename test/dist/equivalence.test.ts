import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { shardRanges } from '../../src/coordinator/collectives.js';
import { startInProcess } from '../../src/coordinator/in_process.js';
import { GdpError } from '../../src/shared/errors.js';
import { archSpec, buildModel } from '../../src/shared/models/registry.js';
import { Rng } from '../../src/shared/rng.js';
import { Replica } from '../../src/shared/train/replica.js';
import { maxAbsDiff, noLog, numTensors, setup, tinyConfig, tinyData } from './helpers.js';

before(setup);

const K = 4;
const SGD = { lr: 0.1, momentum: 0.9, weightDecay: 5e-4, nesterov: false };

function batches(size: number, batch: number, seed: number): Int32Array[] {
  const order = Int32Array.from({ length: size }, (_, i) => i);
  new Rng(seed).shuffle(order);
  return Array.from({ length: K }, (_, s) => order.slice(s * batch, (s + 1) * batch));
}

async function equivalence(bucketMib?: number): Promise<void> {
  const config = bucketMib === undefined ? tinyConfig() : tinyConfig({ dist: { bucket_mib: bucketMib } });
  const data = await tinyData();
  const steps = batches(data.train.size, 9, 11); // 9 samples: shards of 4 and 5

  // Reference: one replica, gradient sums of each shard accumulated in shard order, then averaged.
  const ref = new Replica(buildModel(config.model.name, { numClasses: 10, seed: config.base.seed }), archSpec(config.model.name).inputShape);
  for (const idx of steps) {
    const layout = ref.layout('all');
    const sum = new Float32Array(layout.size);
    for (const [s, e] of shardRanges(idx.length, 2)) {
      const { grad } = ref.gradients(await data.train.load(idx.subarray(s, e), { augment: true, seed: 0 }), layout);
      for (let i = 0; i < sum.length; i++) sum[i] += grad[i];
    }
    for (let i = 0; i < sum.length; i++) sum[i] /= idx.length;
    ref.applyGradient(layout, sum, SGD);
  }

  const run = await startInProcess(config, { workers: 2, loadData: tinyData, log: noLog });
  try {
    const tensorsBefore = numTensors();
    for (const idx of steps) await run.coordinator.step(idx, 'all', SGD);
    await run.coordinator.verifyChecksums();
    assert.equal(numTensors(), tensorsBefore, 'no tensor leak across steps');
    const layout = ref.layout('all');
    const got = run.coordinator.replica.readParams(layout);
    const diff = maxAbsDiff(got, ref.readParams(layout));
    assert.ok(diff <= 1e-5, `max abs diff ${diff}`);
    for (const w of run.workers) assert.equal(w.replica!.checksum('parameters'), run.coordinator.replica.checksum('parameters'));
    // The run moved the weights (so the comparison is not between two untouched models).
    const init = new Replica(buildModel(config.model.name, { numClasses: 10, seed: config.base.seed }), archSpec(config.model.name).inputShape);
    assert.ok(maxAbsDiff(got, init.readParams(layout)) > 1e-3);
    init.model.dispose();
  } finally {
    await run.close();
    ref.model.dispose();
  }
}

test('2 workers end with the weights of 1 process accumulating the same shards', () => equivalence());
// Buckets of ~26 values: averaged buckets stream back while later ones still arrive, in either worker's order.
test('the same with the gradient in many buckets', () => equivalence(0.0001));

test('a corrupted replica is detected and named: that worker is dropped, the others go on', async () => {
  const config = tinyConfig({ dist: { checksum_every: 1000, bucket_mib: 0.0001 } });
  const lines: string[] = [];
  const run = await startInProcess(config, { workers: 3, loadData: tinyData, log: (l) => lines.push(l) });
  try {
    const idx = Int32Array.from({ length: 6 }, (_, i) => i);
    await run.coordinator.step(idx, 'all', SGD);
    await run.coordinator.verifyChecksums();
    // Worker w1 silently drifts: one extra update only it applies.
    const r = run.workers[1].replica!;
    const layout = r.layout('all');
    r.applyGradient(layout, new Float32Array(layout.size).fill(1e-3), SGD);
    await run.coordinator.verifyChecksums();
    assert.deepEqual(run.coordinator.workerIds, ['w0', 'w2']);
    assert.ok(lines.some((l) => /REPLICA_DIVERGED: .*worker w1 has checksum/.test(l)), lines.join('\n'));
    await run.coordinator.step(idx, 'all', SGD);
    await run.coordinator.verifyChecksums();
    // When every worker disagrees, the coordinator's replica is the suspect: the run stops.
    for (const w of [run.workers[0], run.workers[2]]) w.replica!.applyGradient(layout, new Float32Array(layout.size).fill(1e-3), SGD);
    await assert.rejects(run.coordinator.verifyChecksums(), (e: unknown) => e instanceof GdpError && e.code === 'REPLICA_DIVERGED' && /worker w0 .*worker w2/.test(e.message));
  } finally {
    await run.close();
  }
});

test('shards are contiguous and differ in size by at most 1', () => {
  for (const [n, k] of [[9, 2], [10, 3], [2, 4], [128, 5]]) {
    const r = shardRanges(n, k);
    assert.equal(r.length, k);
    assert.equal(r[0][0], 0);
    assert.equal(r[k - 1][1], n);
    for (let i = 1; i < k; i++) assert.equal(r[i][0], r[i - 1][1]);
    const sizes = r.map(([s, e]) => e - s);
    assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1);
  }
});
