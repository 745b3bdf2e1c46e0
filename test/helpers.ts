import * as tf from '@tensorflow/tfjs-core';
import type { z } from 'zod';
import { initBackend, type BackendChoice } from '../src/shared/backend.js';
import type { configSchema } from '../src/shared/config/schema.js';
import type { Module } from '../src/shared/nn/module.js';
import { toWire, type NamedTensor } from '../src/shared/protocol/tensor.js';
import { batchNorms } from '../src/shared/pruning/gates.js';

/** Activates a backend once per test file. */
export async function useBackend(name: BackendChoice): Promise<void> {
  await initBackend(name);
  if (tf.getBackend() !== name) throw new Error(`wanted backend ${name}, active ${tf.getBackend()}`);
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

export function randomArray(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = (((s >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

/** A config as written (defaults not filled in yet), for tests that build one by hand. */
export type ConfigInput = z.input<typeof configSchema>;

/**
 * Converts every BN to a GBN in place (the paper's `GatedBatchNorm2d.transform`); returns the paths converted now.
 * A run gates through a replayable 'gate' update (pruner.ts); tests gate a lone model directly.
 */
export function addGates(model: Module): string[] {
  const done: string[] = [];
  for (const [p, bn] of batchNorms(model)) {
    if (bn.gated) continue;
    bn.addGate();
    done.push(p);
  }
  return done;
}

/** Whether the model has BNs and every one is gated. */
export function isGated(model: Module): boolean {
  const bns = [...batchNorms(model).values()];
  return bns.length > 0 && bns.every((b) => b.gated);
}

/** Named Float32Arrays as wire tensors (for a hand-built 'mask' model update). */
export function namedTensors(entries: Iterable<[string, Float32Array] | [string, Float32Array, readonly number[]]>): NamedTensor[] {
  return [...entries].map(([name, a, shape]) => ({ name, tensor: toWire(a, shape ?? [a.length]) }));
}
