import * as tf from '@tensorflow/tfjs-core';
import { GdpError } from '../errors.js';
import { BatchNorm2d } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import type { ChannelGroup } from './groups.js';

/** Every BatchNorm2d of the model by module path. */
export function batchNorms(model: Module): Map<string, BatchNorm2d> {
  const out = new Map<string, BatchNorm2d>();
  for (const [p, m] of model.namedModules()) if (m instanceof BatchNorm2d) out.set(p, m);
  return out;
}

export function bnAt(model: Module, path: string, what = 'pruning'): BatchNorm2d {
  const bn = batchNorms(model).get(path);
  if (!bn) throw new GdpError('UNKNOWN_LAYER', `${what}: the model has no BatchNorm2d at '${path}'`);
  return bn;
}

/**
 * The mask shared by a group's BNs (1 = alive). Its members must agree: a channel alive in one BN and masked in
 * another would be half-pruned, which no melt can reproduce.
 */
export function groupMask(model: Module, g: ChannelGroup): Float32Array {
  let mask: Float32Array | undefined;
  let first = '';
  for (const p of g.bns) {
    const bn = bnAt(model, p);
    if (!bn.mask) throw new GdpError('NOT_GATED', `group '${g.id}': BN '${p}' has no gate (gate the model first)`);
    const m = bn.mask.value.dataSync() as Float32Array;
    if (!mask) {
      mask = m;
      first = p;
    } else {
      const bad = m.findIndex((v, i) => (v !== 0) !== (mask![i] !== 0));
      if (bad >= 0) throw new GdpError('INCONSISTENT_MASK', `group '${g.id}': channel ${bad} is masked differently in '${first}' and '${p}'`);
    }
  }
  if (!mask) throw new GdpError('NOT_GATED', `group '${g.id}' has no BN`);
  return mask;
}

/** Indices of the channels a group keeps. */
export function aliveChannels(model: Module, g: ChannelGroup): number[] {
  const m = groupMask(model, g);
  const out: number[] = [];
  m.forEach((v, i) => {
    if (v !== 0) out.push(i);
  });
  return out;
}

/** Sets channels `pruned` of every member BN's mask to 0 (masks only ever lose channels). */
export function maskChannels(bn: BatchNorm2d, pruned: readonly number[], where: string): void {
  if (!bn.mask) throw new GdpError('NOT_GATED', `${where}: BN is not gated`);
  const m = (bn.mask.value.dataSync() as Float32Array).slice();
  for (const c of pruned) {
    if (!Number.isInteger(c) || c < 0 || c >= m.length) throw new GdpError('BAD_DECISION', `${where}: channel ${c} is outside 0..${m.length - 1}`);
    m[c] = 0;
  }
  bn.mask.set(tf.tensor1d(m));
}
