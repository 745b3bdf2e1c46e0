import { trace, type Graph, type GraphNode } from '../graph/trace.js';
import { AvgPool2d, BatchNorm2d, Conv2d, GlobalAvgPool, Linear, MaxPool2d, ReLU } from '../nn/layers.js';
import type { Module } from '../nn/module.js';

/**
 * A channel group: one channel space of the traced graph after residual additions have merged spaces. Pruning
 * channel i of a group removes output channel i of every producer, channel i of every BN and input channel i of
 * every consumer, so the group is the unit of every pruning decision.
 */
export interface ChannelGroup {
  /** Stable name: the module path of the group's first BN in graph order (`@<path>` for a space without BN). */
  id: string;
  width: number;
  /** BNs on this space, graph order. Their gates and masks belong to the group. */
  bns: string[];
  /** Output H*W of each BN in `bns` (the paper's `area`, for flops_eta). */
  areas: number[];
  /** Convolutions whose output channels are this space. */
  producers: string[];
  /** Convolutions and linear layers that read this space. */
  consumers: string[];
  /** False when removing a channel would change the network's function (see `blockReason`). */
  prunable: boolean;
  blockReason?: string;
}

/** The traced graph with its channel spaces: the plain data every pruning step works from. */
export interface ChannelStructure {
  graph: Graph;
  groups: ChannelGroup[];
  /** Index into `groups` of each node's output space. */
  groupOfNode: number[];
}

/** Layers that act per channel, so their output lies in their input's channel space. */
function passesChannels(n: GraphNode): boolean {
  if (n.kind === 'relu' || n.kind === 'flatten') return true;
  const l = n.layer;
  return l instanceof BatchNorm2d || l instanceof ReLU || l instanceof MaxPool2d || l instanceof AvgPool2d || l instanceof GlobalAvgPool;
}

class UnionFind {
  private parent: number[] = [];
  make(): number {
    this.parent.push(this.parent.length);
    return this.parent.length - 1;
  }
  find(a: number): number {
    while (this.parent[a] !== a) a = this.parent[a] = this.parent[this.parent[a]];
    return a;
  }
  union(a: number, b: number): void {
    const ra = this.find(a);
    const rb = this.find(b);
    // The smaller root wins, so a space is named after its earliest member.
    if (ra !== rb) this.parent[Math.max(ra, rb)] = Math.min(ra, rb);
  }
}

/**
 * Derives the channel groups of `model` from its traced dataflow: every conv/linear output (and the input) starts
 * a space; per-channel layers pass it on; `add` merges its inputs' spaces (residual coupling); a layer applied at
 * several places merges the spaces it touches. Nothing here knows any architecture.
 */
export function channelStructure(model: Module, inputShape: readonly number[]): ChannelStructure {
  const graph = trace(model, inputShape);
  const { nodes } = graph;
  const uf = new UnionFind();
  const space: number[] = [];
  // Why a space must keep all its channels; resolved to groups once every merge is known.
  const reasons: [number, string][] = [];
  const firstUse = new Map<Module, GraphNode>();

  for (const n of nodes) {
    if (n.kind === 'input') space.push(uf.make());
    else if (n.kind === 'add') {
      space.push(space[n.inputs[0]]);
      for (const i of n.inputs.slice(1)) uf.union(space[n.inputs[0]], space[i]);
    } else if (passesChannels(n)) space.push(space[n.inputs[0]]);
    else {
      space.push(uf.make());
      if (!(n.layer instanceof Conv2d) && !(n.layer instanceof Linear)) {
        // An unknown layer may mix channels: neither its input nor its output can lose channels.
        reasons.push([space[n.id], `'${n.path}' is a layer pruning does not know`], [space[n.inputs[0]], `'${n.path}' is a layer pruning does not know`]);
      }
    }
    if (n.layer) {
      const prev = firstUse.get(n.layer);
      if (prev) {
        uf.union(space[prev.id], space[n.id]);
        uf.union(space[prev.inputs[0]], space[n.inputs[0]]);
      } else firstUse.set(n.layer, n);
    }
  }
  reasons.unshift([space[0], 'it is the network input'], [space[graph.output], 'it is the network output']);

  // A masked channel is exactly zero only downstream of a gated BN; a consumer reading a value that bypasses every
  // BN of the space (e.g. a raw conv output joined by an add) would see a nonzero channel disappear.
  const zeroWhenMasked: boolean[] = [];
  for (const n of nodes) {
    if (n.layer instanceof BatchNorm2d) zeroWhenMasked.push(true);
    else if (n.kind === 'add') zeroWhenMasked.push(n.inputs.every((i) => zeroWhenMasked[i]));
    else if (passesChannels(n)) zeroWhenMasked.push(zeroWhenMasked[n.inputs[0]]);
    else zeroWhenMasked.push(false);
  }

  const rootIndex = new Map<number, number>();
  const groups: ChannelGroup[] = [];
  const groupOfNode: number[] = [];
  const pushUnique = (a: string[], p: string) => {
    if (!a.includes(p)) a.push(p);
  };
  for (const n of nodes) {
    const root = uf.find(space[n.id]);
    let gi = rootIndex.get(root);
    if (gi === undefined) {
      gi = groups.length;
      rootIndex.set(root, gi);
      const id = n.layer instanceof BatchNorm2d ? n.path : `@${n.path || 'input'}`;
      groups.push({ id, width: n.shape[n.shape.length - 1], bns: [], areas: [], producers: [], consumers: [], prunable: true });
    }
    groupOfNode.push(gi);
    const g = groups[gi];
    if (n.layer instanceof BatchNorm2d && !g.bns.includes(n.path)) {
      if (!g.bns.length) g.id = n.path;
      g.bns.push(n.path);
      g.areas.push(n.shape.length === 3 ? n.shape[0] * n.shape[1] : 1);
    }
    if (n.layer instanceof Conv2d) pushUnique(g.producers, n.path);
    if (n.layer instanceof Linear) reasons.push([space[n.id], `'${n.path}' output is not a feature map`]);
    if (n.layer instanceof Conv2d || n.layer instanceof Linear) {
      pushUnique(groups[groupOfNode[n.inputs[0]]].consumers, n.path);
      if (!zeroWhenMasked[n.inputs[0]]) reasons.push([space[n.inputs[0]], `'${n.path}' reads it without a BN in between`]);
    }
  }
  for (const [sp, why] of reasons) {
    const g = groups[rootIndex.get(uf.find(sp))!];
    if (g.prunable) {
      g.prunable = false;
      g.blockReason = why;
    }
  }
  for (const g of groups) {
    if (g.prunable && !g.bns.length) {
      g.prunable = false;
      g.blockReason = 'it has no BN to carry a gate';
    }
  }
  return { graph, groups, groupOfNode };
}

/** The groups pruning may cut, in graph order. */
export function prunableGroups(s: ChannelStructure): ChannelGroup[] {
  return s.groups.filter((g) => g.prunable);
}
