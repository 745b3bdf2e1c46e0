import { Conv2d, DepthwiseConv2d, Linear } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import { trace, type Graph } from './trace.js';

export interface LayerCost {
  path: string;
  kind: 'conv' | 'linear';
  macs: number;
}

export interface ModelCost {
  /** Multiply-accumulates of convolutions and linear layers for one image. */
  macs: number;
  /** Trainable parameters plus frozen BN weights, as PyTorch counts `parameters()`. */
  params: number;
  layers: LayerCost[];
}

/** MACs per layer from a traced graph: for any widths, pruned or melted. A depthwise conv costs Ho*Wo*C*k*k (PyTorch's grouped count). */
export function layerCosts(g: Graph): LayerCost[] {
  const out: LayerCost[] = [];
  for (const n of g.nodes) {
    if (n.kind !== 'layer' || !n.layer) continue;
    if (n.layer instanceof Conv2d) {
      const [ho, wo, co] = n.shape;
      const k = n.layer.kernel;
      out.push({ path: n.path, kind: 'conv', macs: ho * wo * co * n.layer.inChannels * k * k });
    } else if (n.layer instanceof DepthwiseConv2d) {
      const [ho, wo, c] = n.shape;
      const k = n.layer.kernel;
      out.push({ path: n.path, kind: 'conv', macs: ho * wo * c * k * k });
    } else if (n.layer instanceof Linear) {
      out.push({ path: n.path, kind: 'linear', macs: n.layer.inFeatures * n.layer.outFeatures });
    }
  }
  return out;
}

/** Parameter count in PyTorch's sense: every weight and bias, gates excluded (a melted model has none). */
export function countParams(model: Module): number {
  let p = 0;
  for (const [name, s] of model.namedSlots()) {
    if (name.endsWith('running_mean') || name.endsWith('running_var') || name.endsWith('bn_mask') || name.endsWith('.g')) continue;
    p += s.value.size;
  }
  return p;
}

export function modelCost(model: Module, inputShape: readonly number[]): ModelCost {
  const layers = layerCosts(trace(model, inputShape));
  return { macs: layers.reduce((a, l) => a + l.macs, 0), params: countParams(model), layers };
}
