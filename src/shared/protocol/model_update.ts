import * as tf from '@tensorflow/tfjs-core';
import { z } from 'zod';
import { GdpError } from '../errors.js';
import { BatchNorm2d } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import { float32FromWire, namedTensorSchema, toWire, type NamedTensor } from './tensor.js';

/**
 * A model update is replayable data: the coordinator broadcasts it, every replica (the coordinator's own too)
 * applies it with identical results, and a worker joining later replays the whole log. Built-in kinds cover the
 * Gate Decorator's needs; `custom` carries whatever record the pruning engine defines to a registered handler.
 */
const jsonSchema = z.json();
export type JsonValue = z.infer<typeof jsonSchema>;

export const modelUpdateSchema = z.discriminatedUnion('kind', [
  /** Sets the `bn_mask` of gated BNs, by module path. */
  z.object({ kind: z.literal('mask'), masks: z.array(namedTensorSchema) }),
  /** Converts the named BNs to GBNs (BatchNorm2d.addGate). */
  z.object({ kind: z.literal('gate'), layers: z.array(z.string()) }),
  /** Folds gates into the named BNs (BatchNorm2d.removeGate, the paper's melt). */
  z.object({ kind: z.literal('ungate'), layers: z.array(z.string()) }),
  /** Drops SGD momentum everywhere (the paper builds a fresh optimizer per stage). */
  z.object({ kind: z.literal('reset_momentum') }),
  /** An architecture change or anything else the pruning engine defines: a handler name, a JSON record, tensors. */
  z.object({ kind: z.literal('custom'), handler: z.string().min(1), record: jsonSchema, tensors: z.array(namedTensorSchema) }),
]);
export type ModelUpdate = z.infer<typeof modelUpdateSchema>;

/** A custom update's handler: changes `model` in place, deterministically from its inputs. */
export type UpdateHandler = (model: Module, record: JsonValue, tensors: Map<string, tf.Tensor>) => void;

const handlers = new Map<string, UpdateHandler>();

/**
 * Registers the handler for `custom` updates named `name`. Must run in every process that holds a replica (the
 * coordinator and each worker), so pruning code registers at module load and both CLIs import that module.
 */
export function registerUpdateHandler(name: string, fn: UpdateHandler): void {
  handlers.set(name, fn);
}

export function hasUpdateHandler(name: string): boolean {
  return handlers.has(name);
}

function moduleAt(model: Module, path: string): Module {
  for (const [p, m] of model.namedModules()) if (p === path) return m;
  throw new GdpError('BAD_UPDATE', `model update names module '${path}', which the model does not have`);
}

function bnAt(model: Module, path: string): BatchNorm2d {
  const m = moduleAt(model, path);
  if (!(m instanceof BatchNorm2d)) throw new GdpError('BAD_UPDATE', `model update: '${path}' is not a BatchNorm2d`);
  return m;
}

/** Helper for builders: named Float32Arrays as wire tensors. */
export function namedTensors(entries: Iterable<[string, Float32Array] | [string, Float32Array, readonly number[]]>): NamedTensor[] {
  return [...entries].map(([name, a, shape]) => ({ name, tensor: toWire(a, shape ?? [a.length]) }));
}

/**
 * Applies one update to a model. Returns true when momentum must be dropped. The caller re-reads parameters
 * (Replica.pullFromDevice) afterwards, which also drops momentum of parameters whose shape changed.
 */
export function applyModelUpdate(model: Module, u: ModelUpdate): { resetMomentum: boolean } {
  switch (u.kind) {
    case 'mask':
      for (const { name, tensor } of u.masks) {
        const bn = bnAt(model, name);
        if (!bn.mask) throw new GdpError('BAD_UPDATE', `mask update: '${name}' is not gated`);
        const v = float32FromWire(tensor, `mask for '${name}'`);
        if (v.length !== bn.channels) throw new GdpError('BAD_UPDATE', `mask for '${name}' has ${v.length} values, the layer ${bn.channels} channels`);
        bn.mask.set(tf.tensor1d(v));
      }
      return { resetMomentum: false };
    case 'gate':
      for (const path of u.layers) bnAt(model, path).addGate();
      return { resetMomentum: false };
    case 'ungate':
      for (const path of u.layers) bnAt(model, path).removeGate();
      return { resetMomentum: false };
    case 'reset_momentum':
      return { resetMomentum: true };
    case 'custom': {
      const fn = handlers.get(u.handler);
      if (!fn) throw new GdpError('UNKNOWN_UPDATE_HANDLER', `no handler registered for model update '${u.handler}' in this process`);
      const tensors = new Map<string, tf.Tensor>();
      try {
        for (const { name, tensor } of u.tensors) tensors.set(name, tf.tensor(float32FromWire(tensor, `update tensor '${name}'`), tensor.shape));
        fn(model, u.record, tensors);
      } finally {
        for (const t of tensors.values()) t.dispose();
      }
      return { resetMomentum: false };
    }
  }
}

/** The update log as JSON text (binary tensor data as base64), e.g. for safetensors metadata. */
export function encodeUpdateLog(updates: readonly ModelUpdate[]): string {
  return JSON.stringify(updates, (_k, v: unknown) => (v instanceof Uint8Array ? { base64: Buffer.from(v).toString('base64') } : v));
}

/** Reads back what encodeUpdateLog wrote, validated like updates from the network. */
export function decodeUpdateLog(text: string, source: string): ModelUpdate[] {
  let raw: unknown;
  try {
    raw = JSON.parse(text, (_k, v: unknown) => {
      const b = v as { base64?: unknown } | null;
      return typeof b === 'object' && b !== null && typeof b.base64 === 'string' && Object.keys(b).length === 1 ? new Uint8Array(Buffer.from(b.base64, 'base64')) : v;
    });
  } catch (err) {
    throw new GdpError('BAD_UPDATE', `${source}: the model-update log is not valid JSON (${(err as Error).message})`);
  }
  const r = z.array(modelUpdateSchema).safeParse(raw);
  if (!r.success) throw new GdpError('BAD_UPDATE', `${source}: invalid model-update log: ${r.error.issues[0].path.join('.')}: ${r.error.issues[0].message}`);
  return r.data;
}
