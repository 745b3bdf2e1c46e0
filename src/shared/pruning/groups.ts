import { trace, type Graph, type GraphNode } from '../graph/trace.js';
import { AvgPool2d, BatchNorm2d, Conv2d, DepthwiseConv2d, Dropout, GlobalAvgPool, Linear, MaxPool2d, ReLU, ReLU6 } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import { GlobalMaxPool, Pool2d, ZeroPad2d } from '../nn/tf_layers.js';

/**
 * Where a consumer reads a group when the group is not its whole input: channel c of the group is the consumer's
 * input features offset + c*area .. offset + c*area + area - 1. A concatenation puts a space at an offset; a
 * flatten of an HxW map spreads each channel over area = H*W features (channel-major, as PyTorch flattens NCHW).
 */
export interface ConsumerSlice {
  offset: number;
  area: number;
}

/**
 * A channel group: one channel space of the traced graph after residual additions have merged spaces. Pruning
 * channel i of a group removes output channel i of every producer, channel i of every BN and depthwise
 * convolution, and the input features of channel i of every consumer, so the group is the unit of every pruning
 * decision.
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
  /** Depthwise convolutions on this space: their input and output channels both are the group's channels. */
  depthwise: string[];
  /** Convolutions and linear layers that read this space. */
  consumers: string[];
  /** For consumers that read more than this space, or read it flattened: where (absent: the whole input). */
  slices: Record<string, ConsumerSlice>;
  /** False when removing a channel would change the network's function (see `blockReason`). */
  prunable: boolean;
  blockReason?: string;
}

/** One group's run of channels inside a node's output, in feature order. */
export interface NodeSegment {
  group: number;
  width: number;
  /** Features per channel: 1 for a feature map, H*W after a flatten. */
  area: number;
}

/** The traced graph with its channel spaces: the plain data every pruning step works from. */
export interface ChannelStructure {
  graph: Graph;
  groups: ChannelGroup[];
  /** Index into `groups` of each node's output space (its first segment's, for a concatenation). */
  groupOfNode: number[];
  /** Each node's output as runs of group channels, in feature order (one run except after a concatenation). */
  segmentsOfNode: NodeSegment[][];
}

/** A run of one space's channels in a node's output while the spaces are still being merged. */
interface Segment {
  space: number;
  width: number;
  area: number;
  /** Masked channels are exactly zero here: downstream of a gated BN of the space, through zero-preserving layers. */
  zero: boolean;
}

/** Layers that act per channel and keep zero at zero, so their output lies in their input's channel space. */
function passesChannels(n: GraphNode): boolean {
  if (n.kind === 'relu') return true;
  const l = n.layer;
  return (
    l instanceof ReLU ||
    l instanceof ReLU6 ||
    l instanceof Dropout ||
    l instanceof MaxPool2d ||
    l instanceof AvgPool2d ||
    l instanceof GlobalAvgPool ||
    l instanceof Pool2d ||
    l instanceof GlobalMaxPool ||
    l instanceof ZeroPad2d
  );
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

const sameSplit = (a: Segment[], b: Segment[]): boolean => a.length === b.length && a.every((s, i) => s.width === b[i].width && s.area === b[i].area);

/**
 * Derives the channel groups of `model` from its traced dataflow: every conv/linear output (and the input) starts
 * a space; per-channel layers (BN, ReLU, ReLU6, pooling, depthwise convolutions) pass it on; `add` merges its
 * inputs' spaces (residual coupling); `concat` lays its inputs' spaces side by side at offsets; `flatten` spreads
 * each channel over H*W features; a layer applied at several places merges the spaces it touches. Whatever this
 * cannot map (an unknown layer, a BN or depthwise convolution over a concatenation, an addition of differently
 * concatenated values) keeps all its channels, with the reason recorded. Nothing here knows any architecture.
 */
export function channelStructure(model: Module, inputShape: readonly number[]): ChannelStructure {
  const graph = trace(model, inputShape);
  const { nodes } = graph;
  const uf = new UnionFind();
  const segs: Segment[][] = [];
  // Why a space must keep all its channels; resolved to groups once every merge is known.
  const reasons: [number, string][] = [];
  const block = (ss: readonly Segment[], why: string) => {
    for (const s of ss) reasons.push([s.space, why]);
  };
  const fresh = (n: GraphNode): Segment[] => [{ space: uf.make(), width: n.shape[n.shape.length - 1], area: 1, zero: false }];
  const firstUse = new Map<Module, GraphNode>();
  const unionAll = (a: Segment[], b: Segment[], why: string) => {
    if (!sameSplit(a, b)) block([...a, ...b], why);
    else a.forEach((s, i) => uf.union(s.space, b[i].space));
  };

  for (const n of nodes) {
    const ins = n.inputs.map((i) => segs[i]);
    const l = n.layer;
    let out: Segment[];
    if (n.kind === 'input') out = fresh(n);
    else if (n.kind === 'add') {
      for (const s of ins.slice(1)) unionAll(ins[0], s, 'an addition joins values concatenated from differently split spaces');
      out = ins[0].map((s, i) => ({ ...s, zero: ins.every((x) => x[i]?.zero === true) }));
    } else if (n.kind === 'concat') out = ins.flat().map((s) => ({ ...s }));
    else if (n.kind === 'flatten') {
      const area = n.inShape.length === 3 ? n.inShape[0] * n.inShape[1] : 1;
      out = ins[0].map((s) => ({ ...s, area: s.area * area }));
    } else if (passesChannels(n)) out = ins[0].map((s) => ({ ...s }));
    else if (l instanceof BatchNorm2d) {
      if (ins[0].length > 1) block(ins[0], `'${n.path}' normalises a concatenation (one gate vector over several groups)`);
      out = ins[0].map((s) => ({ ...s, zero: true }));
    } else if (l instanceof DepthwiseConv2d) {
      if (ins[0].length > 1) block(ins[0], `'${n.path}' filters a concatenation`);
      // A bias makes a zero channel nonzero: the space is zero again only after its next gated BN.
      out = ins[0].map((s) => ({ ...s, zero: s.zero && !l.bias }));
    } else {
      out = fresh(n);
      if (!(l instanceof Conv2d) && !(l instanceof Linear)) {
        // An unknown layer may mix channels: neither its input nor its output can lose channels.
        block([...ins[0], ...out], `'${n.path}' is a layer pruning does not know`);
      }
    }
    segs.push(out);
    if (l) {
      const prev = firstUse.get(l);
      if (prev) {
        unionAll(segs[prev.id], out, `'${n.path}' is applied to differently split values`);
        unionAll(segs[prev.inputs[0]], ins[0], `'${n.path}' is applied to differently split values`);
      } else firstUse.set(l, n);
    }
  }
  block(segs[0], 'it is the network input');
  block(segs[graph.output], 'it is the network output');
  // The two above come first, so a blocked input or output says so.
  reasons.unshift(...reasons.splice(reasons.length - segs[0].length - segs[graph.output].length));

  const rootIndex = new Map<number, number>();
  const groups: ChannelGroup[] = [];
  const groupOfNode: number[] = [];
  const segmentsOfNode: NodeSegment[][] = [];
  const pushUnique = (a: string[], p: string) => {
    if (!a.includes(p)) a.push(p);
  };
  const groupOf = (n: GraphNode, s: Segment): number => {
    const root = uf.find(s.space);
    let gi = rootIndex.get(root);
    if (gi === undefined) {
      gi = groups.length;
      rootIndex.set(root, gi);
      const id = n.layer instanceof BatchNorm2d ? n.path : `@${n.path || 'input'}`;
      groups.push({ id, width: s.width, bns: [], areas: [], producers: [], depthwise: [], consumers: [], slices: {}, prunable: true });
    }
    return gi;
  };
  for (const n of nodes) {
    const mine = segs[n.id].map((s) => ({ group: groupOf(n, s), width: s.width, area: s.area }));
    segmentsOfNode.push(mine);
    groupOfNode.push(mine[0].group);
    const g = groups[mine[0].group];
    const l = n.layer;
    if (l instanceof BatchNorm2d && mine.length === 1 && !g.bns.includes(n.path)) {
      if (!g.bns.length) g.id = n.path;
      g.bns.push(n.path);
      g.areas.push(n.shape.length === 3 ? n.shape[0] * n.shape[1] : 1);
    }
    if (l instanceof Conv2d) pushUnique(g.producers, n.path);
    if (l instanceof DepthwiseConv2d && mine.length === 1) pushUnique(g.depthwise, n.path);
    if (l instanceof Linear) block(segs[n.id], `'${n.path}' output is not a feature map`);
    if (l instanceof Conv2d || l instanceof Linear) {
      const input = segs[n.inputs[0]];
      const whole = input.length === 1 && input[0].area === 1;
      let offset = 0;
      for (const [i, s] of input.entries()) {
        const cg = groups[segmentsOfNode[n.inputs[0]][i].group];
        const slice = { offset, area: s.area };
        offset += s.width * s.area;
        if (!s.zero) block([s], `'${n.path}' reads it without a BN in between`);
        if (cg.consumers.includes(n.path)) {
          const had = cg.slices[n.path] ?? { offset: 0, area: 1 };
          if (had.offset !== slice.offset || had.area !== slice.area) block([s], `'${n.path}' reads it at two places`);
          continue;
        }
        cg.consumers.push(n.path);
        if (!whole) cg.slices[n.path] = slice;
      }
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
      g.blockReason = 'no BatchNorm after its convolution to carry a gate';
    }
  }
  return { graph, groups, groupOfNode, segmentsOfNode };
}

/** The groups pruning may cut, in graph order. */
export function prunableGroups(s: ChannelStructure): ChannelGroup[] {
  return s.groups.filter((g) => g.prunable);
}

/**
 * Why a model has nothing to prune, for the NOTHING_TO_PRUNE message: what Gate Decorator prunes, then each
 * unprunable group (at most `max`) with the convolutions that produce it and its recorded `blockReason`.
 */
export function whyNothingToPrune(s: ChannelStructure, max = 8): string {
  const listed = s.groups.slice(0, max).map((g) => {
    const from = g.producers.length ? ` from ${g.producers.map((p) => `'${p}'`).join(', ')}` : '';
    return `group '${g.id}' (${g.width} channels${from}): ${g.blockReason ?? 'prunable'}`;
  });
  const more = s.groups.length > max ? `; and ${s.groups.length - max} more` : '';
  return (
    'the model has no prunable channel group. Gate Decorator prunes the channels of BatchNorm layers (a gate scales each ' +
    'BN channel), so a convolution needs a BatchNorm right after it (activations and pooling may follow) to have its ' +
    `channels pruned. Groups found: ${listed.join('; ')}${more}`
  );
}
