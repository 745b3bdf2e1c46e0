import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs-core';
import { formatPruneEvent, runFinetune, runPrune, savePointName, triangularLr, type PruneEvent, type PruneRunOptions } from '../../src/coordinator/pruner.js';
import { configSchema } from '../../src/shared/config/schema.js';
import { modelCost } from '../../src/shared/graph/flops.js';
import { parseSafetensors } from '../../src/shared/io/safetensors.js';
import { loadTorchState } from '../../src/shared/io/torch_state.js';
import { CifarResNet } from '../../src/shared/models/resnet_cifar.js';
import { Rng } from '../../src/shared/rng.js';
import { effectiveCost } from '../../src/shared/pruning/cost.js';
import { channelStructure } from '../../src/shared/pruning/groups.js';
import { Replica } from '../../src/shared/train/replica.js';
import { LocalCluster, syntheticDataset } from './local_cluster.js';
import { cpu } from './helpers.js';

const SHAPE: [number, number, number] = [8, 8, 1];

function options(dir: string, gbn: Record<string, unknown>, log: PruneEvent[]): PruneRunOptions {
  const cfg = configSchema.parse({
    base: { task_name: 't' },
    model: { name: 'mnist.resnet20', num_class: 10 },
    train: { max_epoch: 0, momentum: 0.9, weight_decay: 5e-4 },
    data: { type: 'mnist', batch_size: 4, test_batch_size: 8 },
    loss: { criterion: 'softmax' },
    gbn: { sparse_lambda: 1e-3, lr_min: 1e-3, lr_max: 1e-2, tock_epoch: 1, T: 2, p: 0.2, finetune_epoch: 1, tick_batches: 1, ...gbn },
  });
  return {
    gbn: cfg.gbn!,
    sgd: { momentum: cfg.train.momentum, weightDecay: cfg.train.weight_decay, nesterov: cfg.train.nesterov },
    batchSize: cfg.data.batch_size,
    trainSize: 16,
    inputShape: SHAPE,
    seed: 3,
    checkpointDir: dir,
    maxStepsPerEpoch: 1,
    log: (e) => {
      log.push(e);
      if (process.env.GDP_TEST_VERBOSE) console.log(formatPruneEvent(e));
    },
  };
}

/** ResNet-8 (one block per stage, shortcuts included): the smallest net with every kind of group, cheap on cpu. */
function tinyResNet(seed: number): CifarResNet {
  return new CifarResNet(8, 10, 1, new Rng(seed));
}

function cluster(seed = 1): LocalCluster {
  const model = tinyResNet(seed);
  return new LocalCluster(new Replica(model, SHAPE), syntheticDataset(16, SHAPE, 1), syntheticDataset(8, SHAPE, 2));
}

describe('Tick-Tock pruner', () => {
  let dir: string;
  before(async () => {
    await cpu();
    dir = mkdtempSync(join(tmpdir(), 'gdp-prune-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('the triangular lr follows the paper: lr_min -> lr_max at half -> lr_min at the last step', () => {
    assert.equal(triangularLr(0, 10, 1, 3), 1);
    assert.equal(triangularLr(5, 10, 1, 3), 3);
    assert.equal(triangularLr(10, 10, 1, 3), 1);
    assert.equal(triangularLr(2.5, 10, 1, 3), 2);
  });

  it('saves a checkpoint exactly when the FLOPs ratio first falls under each save point, stops at target_flops, melts', async () => {
    const log: PruneEvent[] = [];
    const c = cluster();
    const o = options(dir, { save_points: [0.9, 0.6, 0.35], target_flops: 0.35, max_ticks: 12 }, log);
    const tensors = tf.memory().numTensors;
    const r = await runPrune(c, o);
    const ticks = log.filter((e): e is Extract<PruneEvent, { type: 'tick' }> => e.type === 'tick');
    const saved = log.filter((e): e is Extract<PruneEvent, { type: 'checkpoint' }> => e.type === 'checkpoint');
    assert.equal(r.stoppedBy, 'target_flops');
    assert.ok(ticks.at(-1)!.flopsRatio <= 0.35 && ticks.slice(0, -1).every((t) => t.flopsRatio > 0.35));
    assert.deepEqual(saved.map((e) => e.savePoint), [0.9, 0.6, 0.35]);
    for (const e of saved) {
      const first = ticks.find((t) => t.flopsRatio <= e.savePoint)!;
      assert.equal(e.tick, first.tick, `save point ${e.savePoint}`);
      assert.equal(e.path, join(dir, savePointName(e.savePoint)));
      const file = parseSafetensors(new Uint8Array(readFileSync(e.path)), e.path);
      assert.equal(file.metadata.tick, String(first.tick));
      // The checkpoint holds the masks of that Tick: reloaded, it costs what the log said.
      const m = tinyResNet(0);
      loadTorchState(m, file.tensors, SHAPE, e.path);
      const reloaded = effectiveCost(m, channelStructure(m, SHAPE)).macs / modelCost(m, SHAPE).macs;
      assert.ok(Math.abs(reloaded - first.flopsRatio) < 1e-12);
      m.dispose();
    }
    assert.deepEqual(readdirSync(dir).sort(), ['gbn_35.safetensors', 'gbn_60.safetensors', 'gbn_90.safetensors'], 'no temporary files left');
    // Ticks 2, 4, ... are followed by a Tock; one more runs before the first Tick.
    const tocks = log.filter((e) => e.type === 'tock').length;
    assert.equal(tocks, 1 + Math.floor((ticks.length - 1) / 2));
    assert.equal(r.final.macs / r.baseline.macs, ticks.at(-1)!.flopsRatio, 'the melt removes exactly the masked channels');
    assert.ok(![...c.replica.model.namedSlots()].some(([n]) => n.endsWith('.g')), 'no gates after the melt');
    const kinds = c.updates.map((u) => (u.kind === 'custom' ? u.handler : u.kind));
    assert.equal(kinds[0], 'gdp.prune.gate');
    assert.equal(kinds.filter((k) => k === 'gdp.prune.mask').length, ticks.length);
    assert.equal(kinds.at(-2), 'gdp.prune.melt');

    await runFinetune(c, o);
    assert.equal(log.filter((e) => e.type === 'finetune').length, 1);
    assert.ok(tf.memory().numTensors <= tensors, `tensors: ${tensors} -> ${tf.memory().numTensors}`);
  });

  it('replicas fed the broadcast updates end identical (l1 criterion, max_ticks)', async () => {
    const log: PruneEvent[] = [];
    const a = cluster(5);
    const r = await runPrune(a, options(join(dir, 'l1'), { criterion: 'l1', tock_epoch: 0, max_ticks: 2 }, log));
    assert.equal(r.ticks, 2);
    assert.equal(r.stoppedBy, 'max_ticks');
    // A second replica that replays only the broadcast pruning records has the same architecture.
    const b = tinyResNet(5);
    const rb = new Replica(b, SHAPE);
    const { applyPruningUpdate } = await import('../../src/shared/pruning/updates.js');
    for (const u of a.updates) if (u.kind === 'custom') applyPruningUpdate(b, u);
    rb.pullFromDevice();
    assert.equal(modelCost(b, SHAPE).macs, r.final.macs);
    assert.ok(existsSync(join(dir, 'l1')));
  });
});
