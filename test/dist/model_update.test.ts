import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { startInProcess } from '../../src/coordinator/in_process.js';
import { GdpError } from '../../src/shared/errors.js';
import { BatchNorm2d, Conv2d } from '../../src/shared/nn/layers.js';
import type { Module } from '../../src/shared/nn/module.js';
import { stateChecksum } from '../../src/shared/train/model_state.js';
import { namedTensors } from '../helpers.js';
import { registerUpdateHandler } from '../../src/shared/train/apply_update.js';
import { addStats, emptyStats } from '../../src/shared/train/replica.js';
import { connectWorker, noLog, numTensors, setup, tinyConfig, tinyData } from './helpers.js';

before(setup);

const SGD = { lr: 0.05, momentum: 0.9, weightDecay: 5e-4, nesterov: false };

function mod<T>(model: Module, path: string): T {
  for (const [p, m] of model.namedModules()) if (p === path) return m as T;
  throw new Error(`no module ${path}`);
}

// A small architecture change of the kind the pruning engine defines: keep some output channels of a conv/BN
// pair and the matching input channels of the next conv.
registerUpdateHandler('test.keep_channels', (model, record) => {
  const r = record as { conv: string; bn: string; next: string; keep: number[] };
  mod<Conv2d>(model, r.conv).keepOutputChannels(r.keep);
  mod<BatchNorm2d>(model, r.bn).keepChannels(r.keep);
  mod<Conv2d>(model, r.next).keepInputChannels(r.keep);
});

function batch(step: number): Int32Array {
  return Int32Array.from({ length: 8 }, (_, i) => (step * 8 + i) % 256);
}

test('an architecture change mid-run: every replica continues on the new shapes, identical; a late joiner replays it', async () => {
  const run = await startInProcess(tinyConfig(), { workers: 2, loadData: tinyData, log: noLog });
  const c = run.coordinator;
  try {
    await c.step(batch(0), 'all', SGD);
    await c.step(batch(1), 'all', SGD);
    const before = c.replica.layout('all').size;
    await c.broadcastModelUpdate({ kind: 'custom', handler: 'test.keep_channels', record: { conv: 'conv1', bn: 'bn1', next: 'conv2', keep: [0, 2, 3, 5] }, tensors: [] });
    const after = c.replica.layout('all').size;
    assert.equal(before - after, 2 * (9 + 2) + 2 * 9 * 6, 'two conv1 filters, their BN pairs and conv2 inputs are gone');
    for (const w of run.workers) assert.deepEqual(w.replica!.layout('all').shapes, c.replica.layout('all').shapes);
    const tensors = numTensors();
    await c.step(batch(2), 'all', SGD);
    await c.step(batch(3), 'all', SGD);
    assert.equal(numTensors(), tensors);
    await c.verifyChecksums();

    const late = connectWorker(c, 'late');
    await c.waitForWorkers(3, 30000);
    await c.step(batch(4), 'all', SGD);
    await c.verifyChecksums();
    assert.equal(late.session.replica!.checksum('parameters'), c.replica.checksum('parameters'));
    assert.deepEqual(c.workerIds.length, 3);
  } finally {
    await run.close();
  }
});

test('gate conversion, masks and gate-only steps with the L1 term stay identical on every replica', async () => {
  const run = await startInProcess(tinyConfig(), { workers: 2, loadData: tinyData, log: noLog });
  const c = run.coordinator;
  try {
    await c.step(batch(0), 'all', SGD);
    await c.broadcastModelUpdate({ kind: 'gate', layers: ['bn1', 'bn2'] });
    assert.deepEqual(c.replica.layout('gates').names, ['bn1.g', 'bn2.g']);
    await c.broadcastModelUpdate({ kind: 'mask', masks: namedTensors([['bn1', Float32Array.of(1, 0, 1, 1, 0, 1)]]) });
    const gatesBefore = c.replica.readParams(c.replica.layout('gates'));
    const r = await c.step(batch(1), 'gates', { ...SGD, gateL1: 1e-3 });
    assert.equal(r.layout.size, 12);
    assert.notDeepEqual(c.replica.readParams(c.replica.layout('gates')), gatesBefore);
    await c.step(batch(2), 'all', SGD);
    await c.verifyChecksums();
    await c.broadcastModelUpdate({ kind: 'reset_momentum' });
    await c.broadcastModelUpdate({ kind: 'ungate', layers: ['bn1', 'bn2'] });
    await c.step(batch(3), 'all', SGD);
    await c.verifyChecksums();
    // A bad update fails on the coordinator before anything is sent.
    await assert.rejects(c.broadcastModelUpdate({ kind: 'custom', handler: 'nobody', record: null, tensors: [] }), (e: unknown) => e instanceof GdpError && e.code === 'UNKNOWN_UPDATE_HANDLER');
    await c.step(batch(4), 'all', SGD);
    await c.verifyChecksums();
  } finally {
    await run.close();
  }
});

test('BN statistics are averaged into every replica; sharded evaluation equals one replica evaluating', async () => {
  const run = await startInProcess(tinyConfig(), { workers: 3, loadData: tinyData, log: noLog });
  const c = run.coordinator;
  try {
    for (let s = 0; s < 3; s++) await c.step(batch(s), 'all', SGD);
    const running = (m: Module) => m.slot('bn1.running_mean').value.dataSync() as Float32Array;
    const perWorker = run.workers.map((w) => Float32Array.from(running(w.replica!.model)));
    assert.notDeepEqual(perWorker[0], perWorker[1], 'workers saw different shards');
    await c.syncBatchNormStats();
    // Shards of 8 over 3 workers are 2, 3, 3 samples by rank (join order), 3 steps each: the weights of the average.
    const seen = run.workers.map((_, i) => 3 * [2, 3, 3][c.workerIds.indexOf(`w${i}`)]);
    const expected = perWorker[0].map((_, j) => Math.fround(perWorker.reduce((a, v, i) => a + seen[i] * v[j], 0) / 24));
    const got = running(c.model);
    for (let j = 0; j < got.length; j++) assert.ok(Math.abs(got[j] - expected[j]) <= 1e-6);
    for (const w of run.workers) assert.equal(stateChecksum(w.replica!.model), stateChecksum(c.model));

    const idx = Int32Array.from({ length: 40 }, (_, i) => i);
    const sharded = await c.evaluate(idx);
    const data = await tinyData();
    let single = emptyStats();
    for (let s = 0; s < 40; s += 16) single = addStats(single, c.replica.evaluate(await data.test.load(idx.subarray(s, s + 16), { augment: false, seed: 0 })));
    assert.equal(sharded.count, 40);
    assert.equal(sharded.correct1, single.correct1);
    assert.equal(sharded.correct5, single.correct5);
    assert.ok(Math.abs(sharded.lossSum - single.lossSum) <= 1e-3);
  } finally {
    await run.close();
  }
});

test("a worker's event loop turns between the batches of an evaluation, so its heartbeats go out during a long one", async () => {
  // In-process workers share this event loop: a check-phase counter advances only when a worker yields.
  const run = await startInProcess(tinyConfig({ data: { type: 'mnist', batch_size: 8, test_batch_size: 4 } }), { workers: 1, loadData: tinyData, log: noLog });
  try {
    let turns = 0;
    let counting = true;
    const count = () => {
      turns++;
      if (counting) setImmediate(count);
    };
    const idx = Int32Array.from({ length: 64 }, (_, i) => i);
    setImmediate(count);
    const stats = await run.coordinator.evaluate(idx);
    counting = false;
    assert.equal(stats.count, 64);
    // 16 batches of 4: at least one turn between each two (before: none while the shard was evaluated).
    assert.ok(turns >= 15, `${turns} event-loop turns during an evaluation of 16 batches`);
  } finally {
    await run.close();
  }
});
