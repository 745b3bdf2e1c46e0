import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { shardRanges } from '../../src/coordinator/collectives.js';
import { startInProcess } from '../../src/coordinator/in_process.js';
import { archSpec, buildModel } from '../../src/shared/models/registry.js';
import { Replica } from '../../src/shared/train/replica.js';
import { numTensors, setup, tinyData } from './helpers.js';
import { batches, ringConfig } from './ring_helpers.js';

before(setup);

const N = 3;
const STEPS = 20;
const SGD = { lr: 0.1, momentum: 0.9, weightDecay: 5e-4, nesterov: false };

/** ||a - b|| / ||b||. */
function relDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let d = 0;
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i] - b[i]) ** 2;
    n += b[i] ** 2;
  }
  return Math.sqrt(d / n);
}

interface Trace {
  firstGrad: Float32Array;
  losses: number[];
  checksum: string;
  workerChecksums: string[];
}

async function cluster(allreduce: 'star' | 'ring', steps: Int32Array[]): Promise<Trace> {
  const lines: string[] = [];
  const run = await startInProcess(ringConfig(allreduce), { workers: N, loadData: tinyData, log: (l) => lines.push(l) });
  try {
    const tensorsBefore = numTensors();
    const losses: number[] = [];
    let firstGrad: Float32Array | undefined;
    for (const idx of steps) {
      const r = await run.coordinator.step(idx, 'all', SGD);
      firstGrad ??= r.avgGrad.slice();
      losses.push(r.stats.lossSum / r.stats.count);
    }
    await run.coordinator.verifyChecksums();
    assert.equal(numTensors(), tensorsBefore, 'no tensor leak across steps');
    if (allreduce === 'ring') assert.ok(lines.some((l) => /^ring 1 formed for step 1: w0 -> w1 -> w2$/.test(l)), lines.join('\n'));
    else assert.ok(!lines.some((l) => /ring/.test(l)), lines.join('\n'));
    return {
      firstGrad: firstGrad!,
      losses,
      checksum: run.coordinator.replica.checksum('parameters'),
      workerChecksums: run.workers.map((w) => w.replica!.checksum('parameters')),
    };
  } finally {
    await run.close();
  }
}

/** One replica computing each step's shards in order, summing their gradient sums and dividing once. */
async function oneProcess(steps: Int32Array[]): Promise<Trace> {
  const config = ringConfig('star');
  const data = await tinyData();
  const ref = new Replica(buildModel(config.model.name, { numClasses: 10, seed: config.base.seed }), archSpec(config.model.name).inputShape);
  const losses: number[] = [];
  let firstGrad: Float32Array | undefined;
  try {
    for (const [k, idx] of steps.entries()) {
      const layout = ref.layout('all');
      const sum = new Float32Array(layout.size);
      let loss = 0;
      for (const [s, e] of shardRanges(idx.length, N)) {
        const shard = idx.subarray(s, e);
        // The cluster's augmentation seed is per sample; the tiny data set does not augment.
        const { grad, stats } = ref.gradients(await data.train.load(shard, { augment: true, seed: k }), layout);
        for (let i = 0; i < sum.length; i++) sum[i] += grad[i];
        loss += stats.lossSum;
      }
      for (let i = 0; i < sum.length; i++) sum[i] /= idx.length;
      firstGrad ??= sum.slice();
      losses.push(loss / idx.length);
      ref.applyGradient(layout, sum, SGD);
    }
    return { firstGrad: firstGrad!, losses, checksum: ref.checksum('parameters'), workerChecksums: [] };
  } finally {
    ref.model.dispose();
  }
}

test('ring, star and one process: the same averaged gradient at step 1 (1e-6) and the same losses over 20 steps (1e-4)', async () => {
  const data = await tinyData();
  const steps = batches(data.train.size, 10, STEPS); // shards of 3, 3 and 4
  const ring = await cluster('ring', steps);
  const star = await cluster('star', steps);
  const one = await oneProcess(steps);
  for (const [name, t] of [['star', star], ['one process', one]] as const) {
    const g = relDiff(ring.firstGrad, t.firstGrad);
    assert.ok(g <= 1e-6, `step-1 gradient, ring against ${name}: relative difference ${g}`);
    ring.losses.forEach((l, k) => assert.ok(Math.abs(l - t.losses[k]) <= 1e-4 * Math.abs(t.losses[k]), `step ${k + 1} loss: ring ${l}, ${name} ${t.losses[k]}`));
  }
  // The training moved: the losses are not all the same number.
  assert.ok(Math.abs(ring.losses[0] - ring.losses[STEPS - 1]) > 1e-3, ring.losses.join(' '));
  // Every ring replica holds the coordinator's bits.
  for (const c of ring.workerChecksums) assert.equal(c, ring.checksum);
});

test('a ring run gives the same bits run after run', async () => {
  const data = await tinyData();
  const steps = batches(data.train.size, 10, 6, 5);
  const a = await cluster('ring', steps);
  const b = await cluster('ring', steps);
  assert.equal(a.checksum, b.checksum);
  assert.deepEqual(a.workerChecksums, b.workerChecksums);
  assert.deepEqual(new Uint32Array(a.firstGrad.buffer), new Uint32Array(b.firstGrad.buffer));
  assert.deepEqual(a.losses, b.losses);
});

test("'auto' keeps the star for 1 worker and takes the ring from 2 on", async () => {
  for (const workers of [1, 2]) {
    const lines: string[] = [];
    const run = await startInProcess(ringConfig('auto'), { workers, loadData: tinyData, log: (l) => lines.push(l) });
    try {
      await run.coordinator.step(Int32Array.from({ length: 6 }, (_, i) => i), 'all', SGD);
      assert.equal(lines.some((l) => /^ring 1 formed for step 1/.test(l)), workers >= 2, `${workers} workers:\n${lines.join('\n')}`);
    } finally {
      await run.close();
    }
  }
});

test('a ring without samples for every worker: idle workers receive the average like followers', async () => {
  // 3 workers: one idle at step 1; 5 workers: three idle, sharing one request number and each bucket's one frame.
  for (const [workers, ring1] of [
    [N, 'w1 -> w2'],
    [5, 'w2 -> w4'],
  ] as const) {
    const lines: string[] = [];
    const run = await startInProcess(ringConfig('ring'), { workers, loadData: tinyData, log: (l) => lines.push(l) });
    try {
      // 2 samples: the first workers have no shard (shardRanges), the ring has 2 ranks.
      await run.coordinator.step(Int32Array.from([4, 9]), 'all', SGD);
      await run.coordinator.step(Int32Array.from({ length: workers }, (_, i) => i + 1), 'all', SGD);
      await run.coordinator.verifyChecksums();
      assert.ok(lines.some((l) => l === `ring 1 formed for step 1: ${ring1}`), lines.join('\n'));
      assert.ok(lines.some((l) => /^ring 2 formed for step 2: w0 -> w1 -> /.test(l)), lines.join('\n'));
      for (const w of run.workers) assert.equal(w.replica!.checksum('parameters'), run.coordinator.replica.checksum('parameters'));
    } finally {
      await run.close();
    }
  }
});
