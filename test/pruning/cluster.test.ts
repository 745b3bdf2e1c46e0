import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startInProcess } from '../../src/coordinator/in_process.js';
import { finetuneStage } from '../../src/coordinator/finetune.js';
import type { PruneEvent } from '../../src/coordinator/prune_events.js';
import { pruneStage } from '../../src/coordinator/pruner.js';
import { RunFiles } from '../../src/coordinator/run_files.js';
import { getStage } from '../../src/coordinator/stages.js';
import { configSchema, type Config } from '../../src/shared/config/schema.js';
import { modelCost } from '../../src/shared/graph/flops.js';
import { ARCHITECTURES } from '../../src/shared/models/registry.js';
import { CifarResNet } from '../../src/shared/models/resnet_cifar.js';
import { trace } from '../../src/shared/graph/trace.js';
import { cpu } from './helpers.js';
import { syntheticDataset } from './local_cluster.js';

const ARCH = 'test.resnet8';
ARCHITECTURES[ARCH] = { inputShape: [8, 8, 1], defaultClasses: 10, build: (c, rng) => new CifarResNet(8, c, 1, rng) };

const TICK_TOCK = { sparse_lambda: 1e-3, lr_min: 1e-3, lr_max: 1e-2, tock_epoch: 1, T: 2, p: 0.25, finetune_epoch: 1 };

/** A prune-and-finetune job on ResNet-8 with checksums after every step; `gbn` overrides the gbn section. */
function clusterConfig(dir: string, gbn: Record<string, unknown> = {}): Config {
  return configSchema.parse({
    base: { task_name: 'c', seed: 4, log_dir: dir },
    model: { name: ARCH, num_class: 10 },
    train: { max_epoch: 0, momentum: 0.9, weight_decay: 5e-4, max_steps_per_epoch: 1 },
    data: { type: 'mnist', batch_size: 4, test_batch_size: 8 },
    loss: { criterion: 'softmax' },
    gbn: { ...TICK_TOCK, tick_batches: 1, target_flops: 0.5, save_points: [0.7], ...gbn },
    dist: { checksum_every: 1 },
    stages: ['prune', 'finetune'],
  });
}

// The real coordinator with two in-process workers (same messages as separate processes): every mask decision and
// the melt travel as custom model updates, and the coordinator's checksums prove each worker replayed them exactly.
describe('pruning over the coordinator and two workers', () => {
  let dir: string;
  before(async () => {
    await cpu();
    dir = mkdtempSync(join(tmpdir(), 'gdp-prune-cluster-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('prune then finetune: workers stay identical to the coordinator through gating, masks and the melt', async () => {
    const config = clusterConfig(dir);
    const data = { train: syntheticDataset(16, [8, 8, 1], 1), test: syntheticDataset(8, [8, 8, 1], 2) };
    const run = await startInProcess(config, { workers: 2, loadData: async () => data });
    try {
      // Importing the pruner registered both stages (getStage throws INTERNAL otherwise).
      getStage('prune');
      getStage('finetune');
      const lines: string[] = [];
      const ctx = { cluster: run.coordinator, config, trainSize: 16, testSize: 8, files: new RunFiles(config), log: (l: string) => lines.push(l) };
      const r = await pruneStage(ctx);
      assert.equal(r.stoppedBy, 'target_flops');
      await run.coordinator.verifyChecksums();
      for (const w of run.workers) assert.equal(w.replica!.checksum('parameters'), run.coordinator.replica.checksum('parameters'));
      for (const w of run.workers) assert.equal(modelCost(w.replica!.model, [8, 8, 1]).macs, r.final.macs, 'workers melted too');
      trace(run.coordinator.model, [8, 8, 1]);
      const handlers = run.coordinator.updates.map((u) => (u.kind === 'custom' ? u.handler : u.kind));
      assert.ok(handlers.includes('gdp.prune.mask') && handlers.includes('gdp.prune.melt'));
      const events = JSON.parse(readFileSync(join(dir, 'c', 'prune_log.json'), 'utf8')) as PruneEvent[];
      assert.ok(events.some((e) => e.type === 'checkpoint' && e.savePoint === 0.7));

      await finetuneStage(ctx);
      await run.coordinator.verifyChecksums();
      for (const w of run.workers) assert.equal(w.replica!.checksum('parameters'), run.coordinator.replica.checksum('parameters'));
    } finally {
      await run.close();
    }
  });

  it("the paper's Tick switches: workers stay identical through Ticks that train all but the convs and decay the frozen ones", async () => {
    const config = clusterConfig(join(dir, 'paper'), { tick_trains: 'all_but_conv', tick_decay_frozen: true, prune_count: 'lagged', min_filters: 3 });
    const data = { train: syntheticDataset(16, [8, 8, 1], 1), test: syntheticDataset(8, [8, 8, 1], 2) };
    const run = await startInProcess(config, { workers: 2, loadData: async () => data });
    try {
      const ctx = { cluster: run.coordinator, config, trainSize: 16, testSize: 8, files: new RunFiles(config), log: () => {} };
      const r = await pruneStage(ctx);
      assert.ok(r.ticks >= 2, `${r.ticks} Ticks`);
      // checksum_every 1: every step compared the replicas; this compares the end state once more.
      await run.coordinator.verifyChecksums();
      for (const w of run.workers) assert.equal(w.replica!.checksum('parameters'), run.coordinator.replica.checksum('parameters'));
    } finally {
      await run.close();
    }
  });
});
