import { createHash } from 'node:crypto';
import { GdpError } from '../errors.js';
import type { Module } from '../nn/module.js';
import type { ModelUpdate } from '../protocol/model_update.js';

/** The flat layout of a parameter set: names in model order with shapes and offsets into one float32 vector. */
export interface FlatLayout {
  names: string[];
  shapes: number[][];
  offsets: number[];
  size: number;
}

/** A named part of a flat vector: its name and shape (the layout entries a welcome message carries). */
export interface TensorEntry {
  name: string;
  shape: number[];
}

/**
 * One tensor of a replica's state: a slot (parameter or buffer) or a momentum buffer, by name. `shape` is compared
 * with the model's where the source states it (a welcome does; a resume point gives values only).
 */
export interface StateTensor {
  name: string;
  shape?: readonly number[];
  values: Float32Array;
}

/**
 * What one replica holds, enough to make another identical: the model-update log (replayed on a freshly built model
 * it rebuilds the architecture: gates, masks, melts), then every slot and every SGD momentum buffer.
 */
export interface ReplicaState {
  updates: readonly ModelUpdate[];
  slots: readonly StateTensor[];
  momentum: readonly StateTensor[];
}

/**
 * What a checksum covers. `parameters`: every trainable parameter (the host copies SGD updates). `state`: every
 * slot, parameters and buffers. `state-without-running-stats`: every slot but the BN running statistics, which
 * each worker updates on its own shards between synchronisations.
 */
export type ChecksumScope = 'parameters' | 'state' | 'state-without-running-stats';

const elements = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** Offsets of `entries` laid end to end in one float32 vector, in order. */
export function layoutOf(entries: readonly TensorEntry[]): FlatLayout {
  const offsets: number[] = [];
  let size = 0;
  for (const e of entries) {
    offsets.push(size);
    size += elements(e.shape);
  }
  return { names: entries.map((e) => e.name), shapes: entries.map((e) => e.shape), offsets, size };
}

/**
 * The values of `part`'s entries, laid out as `part`, taken by name from `values` laid out as `whole` (e.g. the
 * gates' gradient out of a step that trained more). Throws BAD_LAYOUT when `whole` lacks an entry of `part` or
 * gives it another shape, or `values` is not `whole`'s size.
 */
export function selectLayout(whole: FlatLayout, values: Float32Array, part: FlatLayout): Float32Array {
  if (values.length !== whole.size) throw new GdpError('BAD_LAYOUT', `${values.length} values for a layout of ${whole.size}`);
  const at = new Map(whole.names.map((n, i) => [n, i]));
  const out = new Float32Array(part.size);
  part.names.forEach((name, j) => {
    const i = at.get(name);
    if (i === undefined || whole.shapes[i].join('x') !== part.shapes[j].join('x')) {
      throw new GdpError('BAD_LAYOUT', `'${name}' [${part.shapes[j]}] is not in the step's layout with that shape`);
    }
    out.set(values.subarray(whole.offsets[i], whole.offsets[i] + elements(part.shapes[j])), part.offsets[j]);
  });
  return out;
}

/** The tensors as layout entries and one flat vector (a copy), in order: how a state travels in buckets. */
export function flattenState(tensors: readonly StateTensor[]): { entries: TensorEntry[]; flat: Float32Array } {
  const entries = tensors.map((t) => ({ name: t.name, shape: [...(t.shape ?? [t.values.length])] }));
  const flat = new Float32Array(layoutOf(entries).size);
  let at = 0;
  for (const t of tensors) {
    flat.set(t.values, at);
    at += t.values.length;
  }
  return { entries, flat };
}

/**
 * The tensors `entries` lay out in `flat`, starting at element `start`: views into `flat`. Throws BAD_STATE when
 * `flat` is too short for them.
 */
export function unflattenState(entries: readonly TensorEntry[], flat: Float32Array, start = 0): StateTensor[] {
  const layout = layoutOf(entries);
  if (start + layout.size > flat.length) throw new GdpError('BAD_STATE', `state of ${layout.size} values does not fit the ${flat.length - start} received`);
  return entries.map((e, i) => ({
    name: e.name,
    shape: e.shape,
    values: flat.subarray(start + layout.offsets[i], start + layout.offsets[i] + elements(e.shape)),
  }));
}

/**
 * SHA-256 (first 16 hex digits) over the model's slots in model order, names and float32 bytes: equal on replicas
 * holding the same state. For a bare model; a replica's own checksum is Replica.checksum(scope).
 */
export function stateChecksum(model: Module, scope: Exclude<ChecksumScope, 'parameters'> = 'state'): string {
  const h = createHash('sha256');
  for (const [name, s] of model.namedSlots()) {
    if (scope === 'state-without-running-stats' && isRunningStat(name)) continue;
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
