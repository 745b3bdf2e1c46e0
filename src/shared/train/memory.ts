import { GdpError } from '../errors.js';
import { countParams } from '../graph/flops.js';
import { trace } from '../graph/trace.js';
import type { Module } from '../nn/module.js';

/**
 * The wasm backend's heap limit in bytes: TF.js' wasm build grows its memory up to 65535 pages of 64 KiB
 * (`getHeapMax()` in its emscripten glue: 4 GiB less one page); every tensor and kernel scratch lives there.
 */
export const WASM_HEAP_LIMIT = 65535 * 65536;

/**
 * Bytes one tensor backend may hold, or undefined where gdp knows no fixed limit: `cpu` (JavaScript arrays) and
 * `tensorflow` (native memory, as the machine has; a GPU's memory is not queried) are not checked.
 */
export function backendMemoryLimit(backend: string): number | undefined {
  return backend === 'wasm' ? WASM_HEAP_LIMIT : undefined;
}

/** What a batch computes: a training step (forward kept for backward, then gradients) or a forward pass only. */
export type PassKind = 'train' | 'forward';

/**
 * Calibration of the estimate (see `estimatePeakBytes`) against the wasm heap size after one pass in a fresh
 * process (`node dist/bench/memory.js ARCH BATCH KIND`; the heap only grows, so that is the pass's peak plus at
 * most the allocator's last growth step), measured 2026-11-30 for mnist.resnet20 (batch 16-512), cifar.resnet56
 * (16-128 training, 16-256 forward) and cifar.vgg16 (8-64). Per sample a training step took 7.2-8.0 heap bytes per
 * activation value (slope between batch sizes), a forward pass 4.5-5.2: about two
 * float32 values per activation (the value kept for backward and its gradient), one for a forward pass.
 * `perActivation`: heap bytes per activation value of the traced graph and sample; `perParam`: per parameter
 * (weights; for training also their gradients and the kernels' transposed copies); `fixed`: the heap the backend
 * starts with (16 MiB).
 */
export const MEMORY_CALIBRATION: Record<PassKind, { perActivation: number; perParam: number; fixed: number }> = {
  train: { perActivation: 8, perParam: 16, fixed: 16 * 2 ** 20 },
  forward: { perActivation: 5, perParam: 4, fixed: 16 * 2 ** 20 },
};

/**
 * Headroom over the calibrated formula. With it every measured peak above lies under its estimate, by 1.08x
 * (VGG-16 forward) to 1.36x (ResNet-56 forward at 256).
 */
export const MEMORY_MARGIN = 1.15;

/** Activation values of one sample: the sum over the traced graph's nodes (input included) of their output sizes. */
export function activationsPerSample(model: Module, inputShape: readonly number[]): number {
  return trace(model, inputShape).nodes.reduce((a, n) => a + n.shape.reduce((p, d) => p * d, 1), 0);
}

/**
 * Estimated peak bytes of the backend's memory for one pass over `batch` samples, margin included:
 * `MARGIN x (fixed + perParam x params + perActivation x batch x activationsPerSample)`. A training step keeps
 * every activation for the backward pass (TF.js' tape holds them until the gradients are done) and creates a
 * gradient of each, plus the parameters' gradients; a forward pass inside one tidy holds its activations too.
 */
export function estimatePeakBytes(model: Module, inputShape: readonly number[], batch: number, kind: PassKind): number {
  const c = MEMORY_CALIBRATION[kind];
  return MEMORY_MARGIN * (c.fixed + c.perParam * countParams(model) + c.perActivation * batch * activationsPerSample(model, inputShape));
}

/** The largest batch whose estimate stays within `limit` bytes (0 when even the model alone does not fit). */
export function largestBatchWithin(model: Module, inputShape: readonly number[], kind: PassKind, limit: number): number {
  const c = MEMORY_CALIBRATION[kind];
  const room = limit / MEMORY_MARGIN - c.fixed - c.perParam * countParams(model);
  return Math.max(0, Math.floor(room / (c.perActivation * activationsPerSample(model, inputShape))));
}

const gib = (b: number): string => `${(b / 2 ** 30).toFixed(2)} GiB`;

/** What the caller names in the error: the batch setting, how it splits, and what to change. */
export interface ShardContext {
  /** The setting the shard comes from, e.g. 'data.batch_size 4096' or '--batch-size 10000'. */
  batch: string;
  /** Processes the batch is split across (absent for gdp-model). */
  workers?: number;
  /** The whole batch before the split, to say how many workers it needs. */
  total?: number;
  /** What to change, besides a smaller batch (e.g. 'more workers'). */
  advice?: string;
}

/**
 * Throws unless a pass over `shardSize` samples fits `limit` bytes, by default the backend's memory limit (no check
 * where none is known). The worker calls it before computing a shard; gdp-coord and gdp-model call it at start-up.
 * @throws GdpError BATCH_TOO_LARGE naming the batch, the shard size, the estimate, the limit and the largest shard
 *   that fits.
 */
export function checkShardFits(
  model: { model: Module; inputShape: readonly number[]; arch?: string },
  shardSize: number,
  backend: string,
  kind: PassKind = 'train',
  context: ShardContext = { batch: `a batch of ${shardSize}` },
  limit: number | undefined = backendMemoryLimit(backend),
): void {
  if (limit === undefined) return;
  const need = estimatePeakBytes(model.model, model.inputShape, shardSize, kind);
  if (need <= limit) return;
  const fits = largestBatchWithin(model.model, model.inputShape, kind, limit);
  const workers = context.workers ?? 1;
  const what = kind === 'train' ? 'a training step' : 'a forward pass';
  const split = workers > 1 ? ` split over ${workers} workers` : workers === 1 && context.workers ? ' on 1 worker' : '';
  throw new GdpError(
    'BATCH_TOO_LARGE',
    `${context.batch}${split} makes shards of ${shardSize} samples; ${what} of ${model.arch ?? 'the model'} on a shard that size needs about ` +
      `${gib(need)}, over the ${backend} backend's memory limit of ${gib(limit)}. A shard of at most ${fits} samples fits: ` +
      `${context.advice ?? 'use a smaller batch'}${fits > 0 && context.total ? ` (this batch needs at least ${Math.ceil(context.total / fits)} workers)` : ''}`,
  );
}
