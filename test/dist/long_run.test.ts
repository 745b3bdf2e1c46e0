import assert from 'node:assert/strict';
import { test } from 'node:test';
import v8 from 'node:v8';
import vm from 'node:vm';
import { startInProcess } from '../../src/coordinator/in_process.js';
import { Rng } from '../../src/shared/rng.js';
import { useBackend } from '../helpers.js';
import { noLog, numTensors, tinyConfig, tinyData } from './helpers.js';

// A full collection before each heap reading, so that the bound is about what stays reachable.
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

function memory(): { heap: number; buffers: number } {
  gc();
  gc();
  const m = process.memoryUsage();
  return { heap: m.heapUsed, buffers: m.arrayBuffers };
}

test('a long run through the cluster: tensors flat over 200 steps on wasm, coordinator memory bounded', async () => {
  await useBackend('wasm');
  // Realistic buckets (one per vector) and checksums at the default pace, as in a training run.
  const config = tinyConfig({ dist: { checksum_every: 50, bucket_mib: 16, heartbeat_ms: 200 } });
  const data = await tinyData();
  const rng = new Rng(8);
  const cluster = await startInProcess(config, { workers: 2, loadData: tinyData, log: noLog });
  const sgd = { lr: 0.05, momentum: 0.9, weightDecay: 5e-4, nesterov: false };
  const step = () => cluster.coordinator.step(Int32Array.from({ length: 12 }, () => rng.int(data.train.size)), 'all', sgd);
  try {
    // Warm-up: kernels set up, first allocations, lazily built tables.
    for (let s = 0; s < 20; s++) await step();
    await cluster.coordinator.evaluate(Int32Array.from({ length: 32 }, (_, i) => i));
    const tensors = numTensors();
    const before = memory();
    for (let s = 0; s < 200; s++) {
      await step();
      if (s % 50 === 49) await cluster.coordinator.evaluate(Int32Array.from({ length: 32 }, (_, i) => i));
    }
    await cluster.coordinator.verifyChecksums();
    assert.equal(numTensors(), tensors, 'tensors grew over 200 steps (coordinator and workers share this engine)');
    const after = memory();
    // Gradients, buckets and frames live in ArrayBuffers: every step moves several of them (2 workers x gradient
    // up, average down), so keeping any per step would show here. Measured growth: 0.
    const buffers = after.buffers - before.buffers;
    assert.ok(buffers < 256 * 1024, `array buffers grew by ${(buffers / 1024).toFixed(0)} KiB over 200 steps`);
    // The JS heap also holds V8's optimised code, which still grows a little after warm-up (~1 MiB here, measured
    // with heap snapshots: code objects, no per-step JS objects); per-step messages or promises would add more.
    const heap = after.heap - before.heap;
    assert.ok(heap < 4 * 1024 * 1024, `JS heap grew by ${(heap / 1024).toFixed(0)} KiB over 200 steps`);
  } finally {
    await cluster.close();
  }
});
