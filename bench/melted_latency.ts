import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { modelCost } from '../src/shared/graph/flops.js';
import { parseSafetensors } from '../src/shared/io/safetensors.js';
import { loadTorchState } from '../src/shared/io/torch_state.js';
import { archSpec, buildModel } from '../src/shared/models/registry.js';
import type { Module } from '../src/shared/nn/module.js';
import { melt } from '../src/shared/pruning/melt.js';
import { Rng } from '../src/shared/rng.js';

/** The paper's reference weights, next to the repository (see the folder's README). */
export const FIXTURES = fileURLToPath(new URL('../../../shared/fixtures/pytorch-resnet56/', import.meta.url));
const FILES = ['resnet56_cifar10_baseline.safetensors', 'resnet56_cifar10_gbn70.safetensors', 'input_a.f32', 'logits_gbn70_a.f32'];
const ARCH = 'cifar.resnet56';

export interface NetLatency {
  /** Median ms of one eval-mode forward pass (output read back), per batch size. */
  ms: Record<number, number>;
  macs: number;
  params: number;
}

export interface MeltedLatency {
  baseline: NetLatency;
  melted: NetLatency;
  /** Largest |logit| difference between the melted net and PyTorch's gated one on the fixture's 8 images. */
  meltMaxDiff: number;
}

function load(file: string): Module {
  const model = buildModel(ARCH, { seed: 0 });
  // A plain Uint8Array copy: parseSafetensors reads each tensor through `buf.slice(...).buffer`, which for a Node
  // Buffer (whose slice is a view) is the whole file from offset 0, so every tensor would get the first bytes.
  const { tensors } = parseSafetensors(new Uint8Array(readFileSync(FIXTURES + file)), file);
  loadTorchState(model, tensors, archSpec(ARCH).inputShape, file);
  return model.eval();
}

/** A little-endian float32 file of the fixtures (copied: file buffers need not be 4-byte aligned). */
function floats(file: string): Float32Array {
  return new Float32Array(new Uint8Array(readFileSync(FIXTURES + file)).buffer);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function forwardOnceMs(model: Module, x: tf.Tensor): number {
  const t0 = performance.now();
  const y = model.run(x);
  y.dataSync();
  y.dispose();
  return performance.now() - t0;
}

/** Median ms of each model on `x`, runs interleaved so that load from other processes hits every model alike. */
function interleavedMs(models: Module[], x: tf.Tensor, runs: number): number[] {
  for (const m of models) forwardOnceMs(m, x); // warm-up: kernel set-up and buffers for this shape
  const times = models.map(() => [] as number[]);
  for (let r = 0; r < runs; r++) models.forEach((m, i) => times[i].push(forwardOnceMs(m, x)));
  return times.map(median);
}

function logits(model: Module, x: tf.Tensor): Float32Array {
  const y = model.run(x);
  const v = y.dataSync() as Float32Array;
  y.dispose();
  return v;
}

/**
 * Inference latency of the paper's trained ResNet-56 and of its 70%-FLOPs-pruned form melted by the pruning
 * engine into a physically smaller network, at each batch size. Null when the fixtures folder is missing.
 */
export function meltedLatency(batches: number[], runs: (batch: number) => number): MeltedLatency | null {
  if (!FILES.every((f) => existsSync(FIXTURES + f))) return null;
  const shape = archSpec(ARCH).inputShape;
  const baseline = load('resnet56_cifar10_baseline.safetensors');
  const pruned = load('resnet56_cifar10_gbn70.safetensors');
  melt(pruned, shape);
  const images = tf.tidy(() => tf.tensor(floats('input_a.f32'), [8, shape[2], shape[0], shape[1]]).transpose([0, 2, 3, 1]));
  const melted = logits(pruned, images);
  images.dispose();
  const meltMaxDiff = floats('logits_gbn70_a.f32').reduce((m, v, i) => Math.max(m, Math.abs(v - melted[i])), 0);
  const rng = new Rng(5);
  const result: MeltedLatency = {
    baseline: { ms: {}, ...costOf(baseline, shape) },
    melted: { ms: {}, ...costOf(pruned, shape) },
    meltMaxDiff,
  };
  for (const b of batches) {
    const x = tf.tensor(
      new Float32Array(b * shape[0] * shape[1] * shape[2]).map(() => rng.normal()),
      [b, ...shape],
    );
    [result.baseline.ms[b], result.melted.ms[b]] = interleavedMs([baseline, pruned], x, runs(b));
    x.dispose();
  }
  baseline.dispose();
  pruned.dispose();
  return result;
}

function costOf(model: Module, shape: readonly number[]): { macs: number; params: number } {
  const c = modelCost(model, shape);
  return { macs: c.macs, params: c.params };
}
