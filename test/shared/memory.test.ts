import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { initBackend } from '../../src/shared/backend.js';
import { GdpError } from '../../src/shared/errors.js';
import { archSpec, buildModel } from '../../src/shared/models/registry.js';
import type { CifarResNet } from '../../src/shared/models/resnet_cifar.js';
import type { BatchNorm2d, Conv2d } from '../../src/shared/nn/layers.js';
import {
  activationsPerSample,
  backendMemoryLimit,
  checkShardFits,
  estimatePeakBytes,
  largestBatchWithin,
  WASM_HEAP_LIMIT,
} from '../../src/shared/train/memory.js';
import { REPO_ROOT } from '../io/fixture.js';

await initBackend('cpu');

const tooLarge =
  (...mention: string[]) =>
  (e: unknown) =>
    e instanceof GdpError && e.code === 'BATCH_TOO_LARGE' && mention.every((m) => e.message.includes(m));

test('the estimate bounds the wasm heap a pass really takes, without being far above it', async () => {
  for (const kind of ['train', 'forward']) {
    // A fresh process: the wasm heap only grows, so its size after one pass is that pass's peak.
    const { stdout } = await promisify(execFile)(process.execPath, [join(REPO_ROOT, 'dist', 'bench', 'memory.js'), 'mnist.resnet20', '48', kind]);
    const r = JSON.parse(stdout) as { heapAfter: number; estimate: number };
    assert.ok(r.estimate >= r.heapAfter, `${kind}: estimate ${r.estimate} under the measured heap ${r.heapAfter}`);
    assert.ok(r.estimate <= 2 * r.heapAfter, `${kind}: estimate ${r.estimate} over twice the measured heap ${r.heapAfter}`);
  }
});

test('wasm has a 4 GiB heap; a shard over it is BATCH_TOO_LARGE naming batch, shard and limit; cpu and tensorflow are not checked', () => {
  assert.equal(backendMemoryLimit('wasm'), 4 * 2 ** 30 - 65536);
  assert.equal(backendMemoryLimit('cpu'), undefined);
  assert.equal(backendMemoryLimit('tensorflow'), undefined);
  const model = buildModel('mnist.resnet20', { seed: 0 });
  try {
    const info = { model, inputShape: archSpec('mnist.resnet20').inputShape, arch: 'mnist.resnet20' };
    const fits = largestBatchWithin(model, info.inputShape, 'train', WASM_HEAP_LIMIT);
    assert.ok(fits > 128 && fits < 4096, `largest training shard ${fits}`);
    // The boundary the error reports is the boundary the check applies.
    assert.doesNotThrow(() => checkShardFits(info, fits, 'wasm'));
    assert.throws(() => checkShardFits(info, fits + 1, 'wasm'), tooLarge(`${fits + 1} samples`, `at most ${fits} samples`));
    assert.throws(
      () => checkShardFits(info, 4096, 'wasm', 'train', { batch: 'data.batch_size 4096', workers: 1, total: 4096, advice: 'more workers' }),
      tooLarge('data.batch_size 4096 on 1 worker', 'shards of 4096 samples', 'limit of 4.00 GiB', 'more workers', `at least ${Math.ceil(4096 / fits)} workers`),
    );
    assert.doesNotThrow(() => checkShardFits(info, 100000, 'cpu'));
    // A forward pass keeps less than a training step: more fits.
    assert.ok(largestBatchWithin(model, info.inputShape, 'forward', WASM_HEAP_LIMIT) > fits);
  } finally {
    model.dispose();
  }
});

test('the estimate follows the traced widths: a pruned network fits larger shards', () => {
  const spec = archSpec('mnist.resnet20');
  const full = buildModel('mnist.resnet20', { seed: 0 });
  const pruned = buildModel('mnist.resnet20', { seed: 0 }) as CifarResNet;
  try {
    const before = activationsPerSample(pruned, spec.inputShape);
    const b = pruned.layers[0].layers[0] as unknown as { conv1: Conv2d; bn1: BatchNorm2d; conv2: Conv2d };
    b.conv1.keepOutputChannels([0, 1, 2, 3]);
    b.bn1.keepChannels([0, 1, 2, 3]);
    b.conv2.keepInputChannels([0, 1, 2, 3]);
    // conv1, bn1 and the ReLU after them each lose 12 of 16 channels of a 28x28 map.
    assert.equal(before - activationsPerSample(pruned, spec.inputShape), 3 * 12 * 28 * 28);
    assert.ok(estimatePeakBytes(pruned, spec.inputShape, 256, 'train') < estimatePeakBytes(full, spec.inputShape, 256, 'train'));
  } finally {
    full.dispose();
    pruned.dispose();
  }
});
