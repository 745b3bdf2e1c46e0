import * as tf from '@tensorflow/tfjs-core';
import { GdpError } from '../errors.js';
import { BatchNorm2d } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import type { JsonValue, ModelUpdate } from '../protocol/model_update.js';
import { float32FromWire } from '../protocol/tensor.js';

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

function moduleAt(model: Module, path: string): Module {
  for (const [p, m] of model.namedModules()) if (p === path) return m;
  throw new GdpError('BAD_UPDATE', `model update names module '${path}', which the model does not have`);
}

function bnAt(model: Module, path: string): BatchNorm2d {
  const m = moduleAt(model, path);
  if (!(m instanceof BatchNorm2d)) throw new GdpError('BAD_UPDATE', `model update: '${path}' is not a BatchNorm2d`);
  return m;
}

/**
 * Applies one update to a model's tensors (the wire form is modelUpdateSchema). Returns whether momentum must be
 * dropped. Replica.applyUpdate is the caller: it re-reads parameters afterwards, which also drops momentum of
 * parameters whose shape changed. Throws BAD_UPDATE (unknown module, not a BN, not gated, wrong mask length,
 * non-float32 tensor) or UNKNOWN_UPDATE_HANDLER.
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
