import { createHash } from 'node:crypto';
import * as tf from '@tensorflow/tfjs-core';
import { GdpError } from '../errors.js';
import type { Module } from '../nn/module.js';
import type { FlatLayout } from '../train/replica.js';

export interface TensorEntry {
  name: string;
  shape: number[];
}

/** Every slot of the model (parameters and buffers) in model order. */
export function slotEntries(model: Module): TensorEntry[] {
  return [...model.namedSlots()].map(([name, s]) => ({ name, shape: [...s.value.shape] }));
}

export function layoutOf(entries: readonly TensorEntry[]): FlatLayout {
  const offsets: number[] = [];
  let size = 0;
  for (const e of entries) {
    offsets.push(size);
    size += e.shape.reduce((a, b) => a * b, 1);
  }
  return { names: entries.map((e) => e.name), shapes: entries.map((e) => e.shape), offsets, size };
}

export function slotValues(model: Module): Float32Array[] {
  return [...model.namedSlots()].map(([, s]) => s.value.dataSync() as Float32Array);
}

/** Overwrites every slot from a flat vector laid out by `entries`, which must match the model exactly. */
export function loadSlots(model: Module, entries: readonly TensorEntry[], flat: Float32Array): void {
  const slots = [...model.namedSlots()];
  if (slots.length !== entries.length) throw new GdpError('BAD_STATE', `state has ${entries.length} tensors, the model ${slots.length}`);
  const layout = layoutOf(entries);
  slots.forEach(([name, s], i) => {
    const e = entries[i];
    if (e.name !== name || e.shape.join('x') !== s.value.shape.join('x')) {
      throw new GdpError('BAD_STATE', `state tensor ${i} is '${e.name}' [${e.shape}], the model has '${name}' [${s.value.shape}]`);
    }
    const n = e.shape.reduce((a, b) => a * b, 1);
    s.set(tf.tensor(flat.slice(layout.offsets[i], layout.offsets[i] + n), e.shape));
  });
}

/**
 * SHA-256 over every slot, parameters and buffers: equal on replicas holding the same state. Between BN
 * synchronisations each worker's running statistics are its own, so checks at those times leave them out.
 */
export function stateChecksum(model: Module, opts: { runningStats: boolean } = { runningStats: true }): string {
  const h = createHash('sha256');
  for (const [name, s] of model.namedSlots()) {
    if (!opts.runningStats && isRunningStat(name)) continue;
    const v = s.value.dataSync() as Float32Array;
    h.update(name);
    h.update(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
  }
  return h.digest('hex').slice(0, 16);
}

/** Names of the BatchNorm running statistics, which workers update locally and the coordinator averages. */
export function isRunningStat(name: string): boolean {
  return name.endsWith('running_mean') || name.endsWith('running_var');
}
