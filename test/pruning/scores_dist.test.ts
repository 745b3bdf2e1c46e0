import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startInProcess } from '../../src/coordinator/in_process.js';
import type { PruneEvent } from '../../src/coordinator/prune_events.js';
import { pruneRunOptions, type PruneCluster } from '../../src/coordinator/prune_options.js';
import { runPrune } from '../../src/coordinator/pruner.js';
import { RunFiles } from '../../src/coordinator/run_files.js';
import { configSchema, type Config } from '../../src/shared/config/schema.js';
import { ARCHITECTURES, archSpec, buildModel } from '../../src/shared/models/registry.js';
import { CifarResNet } from '../../src/shared/models/resnet_cifar.js';
import { batchNorms } from '../../src/shared/pruning/gates.js';
import { GateScoreAccumulator } from '../../src/shared/pruning/importance.js';
import { pruningUpdate } from '../../src/shared/pruning/updates.js';
import type { ModelUpdate } from '../../src/shared/protocol/model_update.js';
import { BatchSampler } from '../../src/shared/train/batch_sampler.js';
import { Replica } from '../../src/shared/train/replica.js';
import { useBackend } from '../helpers.js';
import { LocalCluster, syntheticDataset } from './local_cluster.js';

const ARCH = 'test.resnet8.scores';
const SHAPE: [number, number, number] = [8, 8, 1];
ARCHITECTURES[ARCH] = { inputShape: SHAPE, defaultClasses: 10, build: (c, rng) => new CifarResNet(8, c, 1, rng) };

const data = () => ({ train: syntheticDataset(48, SHAPE, 1), test: syntheticDataset(16, SHAPE, 2) });

function config(logDir: string, task: string): Config {
  return configSchema.parse({
    base: { task_name: task, seed: 5, log_dir: logDir },
    model: { name: ARCH, num_class: 10 },
    train: { max_epoch: 0, momentum: 0.9, weight_decay: 5e-4, max_steps_per_epoch: 2 },
    // 11 samples per global batch: shards of 5 and 6, so the split is uneven and BN statistics differ per shard.
    data: { type: 'mnist', batch_size: 11, test_batch_size: 8 },
    loss: { criterion: 'softmax' },
    gbn: { sparse_lambda: 1e-3, lr_min: 1e-2, lr_max: 5e-2, tock_epoch: 1, T: 2, p: 0.2, finetune_epoch: 0, tick_batches: 3, max_ticks: 3 },
    dist: { checksum_every: 1 },
    stages: ['prune'],
  });
}

/** The reference: one process, one replica, accumulating the 2 shards of every batch as the 2 workers do. */
function oneProcess(c: Config): LocalCluster {
  const d = data();
  const replica = new Replica(buildModel(ARCH, { numClasses: 10, seed: c.base.seed }), archSpec(ARCH).inputShape);
  return new LocalCluster(replica, d.train, d.test, 2);
}

/** Gates every BN, then runs `batches` Tick steps (gates only, lr_min) and returns the accumulated |g * dL/dg|. */
async function tickScores(cluster: PruneCluster, batches: number, seed: number): Promise<Map<string, Float64Array>> {
  const layers = [...batchNorms(cluster.replica.model)].map(([p]) => p);
  await cluster.broadcastModelUpdate(pruningUpdate({ kind: 'gate', layers }));
  const layout = cluster.replica.layout('gates');
  const acc = new GateScoreAccumulator(layout);
  const sampler = new BatchSampler(48, 11, seed);
  for (let b = 0; b < batches; b++) {
    const gates = cluster.replica.readParams(layout);
    const r = await cluster.step(sampler.next(), 'gates', { lr: 1e-2, momentum: 0.9, weightDecay: 5e-4, nesterov: false });
    acc.add(gates, r.avgGrad);
  }
  return acc.perBn();
}

/** Mask decisions of a run, in order: which channels of which group each Tick pruned. */
function decisions(updates: readonly ModelUpdate[]): string[] {
  return updates
    .filter((u) => u.kind === 'custom' && u.handler === 'gdp.prune.mask')
    .map((u) => JSON.stringify(u, (_k, v: unknown) => (v instanceof Uint8Array ? [...v] : v)));
}

describe('gate scores over 2 workers equal one process on the same batches', () => {
  let dir: string;
  before(async () => {
    // wasm with gdp's training kernels: the cpu backend's filter gradient would dominate the test's time.
    await useBackend('wasm');
    dir = mkdtempSync(join(tmpdir(), 'gdp-scores-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('per-channel Tick scores agree within float32 rounding', async () => {
    const c = config(dir, 'scores');
    const run = await startInProcess(c, { workers: 2, loadData: async () => data() });
    try {
      const dist = await tickScores(run.coordinator, 4, 9);
      const ref = await tickScores(oneProcess(c), 4, 9);
      assert.deepEqual([...dist.keys()], [...ref.keys()]);
      let channels = 0;
      const distinct = new Set<number>();
      for (const [bn, want] of ref) {
        const got = dist.get(bn)!;
        assert.equal(got.length, want.length, bn);
        for (let i = 0; i < want.length; i++) {
          const tol = 1e-5 * Math.max(Math.abs(want[i]), 1e-6);
          assert.ok(Math.abs(got[i] - want[i]) <= tol, `${bn}[${i}]: 2 workers ${got[i]}, one process ${want[i]}`);
          distinct.add(want[i]);
          channels++;
        }
      }
      // The scores are informative: nonzero and different across channels (not a comparison of two zero vectors).
      assert.ok(channels > 50 && distinct.size > channels * 0.9, `${distinct.size} distinct scores over ${channels} channels`);
      assert.ok(Math.max(...distinct) > 0);
      await run.coordinator.verifyChecksums();
    } finally {
      await run.close();
    }
  });

  it('a whole Tick-Tock run makes the same pruning decisions', async () => {
    const c = config(dir, 'decisions');
    const run = await startInProcess(c, { workers: 2, loadData: async () => data() });
    try {
      const ticks = (events: PruneEvent[]) => events.filter((e) => e.type === 'tick').map((e) => (e.type === 'tick' ? e.filtersLeft : 0));
      const distEvents: PruneEvent[] = [];
      const ctx = { cluster: run.coordinator, config: c, trainSize: 48, testSize: 16, files: new RunFiles(c), log: () => {} };
      await runPrune(run.coordinator, { ...pruneRunOptions(ctx), log: (e) => distEvents.push(e) });
      const ref = oneProcess(c);
      const refEvents: PruneEvent[] = [];
      await runPrune(ref, { ...pruneRunOptions({ ...ctx, cluster: ref }), log: (e) => refEvents.push(e) });
      assert.equal(ticks(distEvents).length, 3);
      assert.deepEqual(ticks(distEvents), ticks(refEvents));
      const d = decisions(run.coordinator.updates);
      assert.equal(d.length, 3, 'one mask decision per Tick');
      assert.deepEqual(d, decisions(ref.updates));
    } finally {
      await run.close();
    }
  });
});
