import { countParams } from '../graph/flops.js';
import { BatchNorm2d, Conv2d, DepthwiseConv2d, Linear } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import { batchNorms, groupMask } from './gates.js';
import type { ChannelStructure } from './groups.js';

export interface EffectiveCost {
  /** Multiply-accumulates of conv and linear layers for one image, counting alive channels only. */
  macs: number;
  /** Parameters the melted network will have (PyTorch's count: gates, masks and running stats excluded). */
  params: number;
  /** Alive channels per group, in `structure.groups` order. */
  alive: number[];
}

/**
 * What the network costs once melted, computed on the masked network: a conv costs Ho*Wo*aliveOut*aliveIn*k*k, a
 * depthwise conv Ho*Wo*alive*k*k.
 * Only prunable groups lose channels (melt removes nothing else), so this equals `modelCost` after `melt`.
 */
export function effectiveCost(model: Module, s: ChannelStructure): EffectiveCost {
  const bns = batchNorms(model);
  const alive = s.groups.map((g) => {
    // Ungated BNs have no mask: the group is whole (a plain network costs what modelCost says).
    if (!g.prunable || !bns.get(g.bns[0])?.gated) return g.width;
    let n = 0;
    for (const v of groupMask(model, g)) if (v !== 0) n++;
    return n;
  });
  const aliveAt = (node: number) => alive[s.groupOfNode[node]];
  // Input width of a consumer: alive channels of every group it reads, times the features each spreads over.
  const aliveIn = (node: number) => s.segmentsOfNode[node].reduce((a, seg) => a + alive[seg.group] * seg.area, 0);
  let macs = 0;
  let params = countParams(model);
  const seen = new Set<Module>();
  for (const n of s.graph.nodes) {
    const l = n.layer;
    if (!l) continue;
    const first = !seen.has(l);
    seen.add(l);
    if (l instanceof Conv2d) {
      const [ho, wo] = n.shape;
      const cout = aliveAt(n.id);
      const cin = aliveIn(n.inputs[0]);
      macs += ho * wo * cout * cin * l.kernel * l.kernel;
      if (first) params -= (l.outChannels * l.inChannels - cout * cin) * l.kernel * l.kernel + (l.bias ? l.outChannels - cout : 0);
    } else if (l instanceof DepthwiseConv2d) {
      const [ho, wo] = n.shape;
      const c = aliveIn(n.id);
      macs += ho * wo * c * l.kernel * l.kernel;
      if (first) params -= (l.channels - c) * (l.kernel * l.kernel + (l.bias ? 1 : 0));
    } else if (l instanceof Linear) {
      const cin = aliveIn(n.inputs[0]);
      macs += cin * l.outFeatures;
      if (first) params -= (l.inFeatures - cin) * l.outFeatures;
    } else if (l instanceof BatchNorm2d && first) {
      params -= 2 * (l.channels - aliveIn(n.id));
    }
  }
  return { macs, params, alive };
}
