import { GdpError } from '../errors.js';
import type { Layer, Module, Ops } from '../nn/module.js';

/** One node of a traced forward pass: a leaf layer, an addition, a channel concatenation, a flatten, or the input. */
export interface GraphNode {
  id: number;
  kind: 'input' | 'layer' | 'add' | 'relu' | 'flatten' | 'concat';
  /** Dotted module path for layers ('' otherwise). */
  path: string;
  layer?: Layer;
  inputs: number[];
  /** Output shape without the batch dimension: [H, W, C] or [F]. */
  shape: number[];
  /** Input shape of a layer node. */
  inShape: number[];
}

/** A symbolic value while tracing: which node produced it. */
export interface Sym {
  node: number;
}

export interface Graph {
  nodes: GraphNode[];
  output: number;
}

/**
 * Runs the model's own `apply` on symbols instead of tensors. The result is the dataflow graph that pruning
 * (channel groups), FLOPs counting and surgery are derived from, so none of them is written per architecture.
 */
export function trace(model: Module, inputShape: readonly number[]): Graph {
  const nodes: GraphNode[] = [{ id: 0, kind: 'input', path: '', inputs: [], shape: [...inputShape], inShape: [] }];
  const paths = new Map<Module, string>();
  for (const [p, m] of model.namedModules()) paths.set(m, p);
  const push = (n: Omit<GraphNode, 'id'>): Sym => {
    nodes.push({ ...n, id: nodes.length });
    return { node: nodes.length - 1 };
  };
  const ops: Ops<Sym> = {
    layer(m, x) {
      const inShape = nodes[x.node].shape;
      let shape: number[];
      try {
        shape = m.outShape(inShape);
      } catch (e) {
        if (e instanceof GdpError) throw new GdpError(e.code, `${paths.get(m) ?? '?'}: ${e.message}`);
        throw e;
      }
      return push({ kind: 'layer', path: paths.get(m) ?? '?', layer: m, inputs: [x.node], shape, inShape });
    },
    add(a, b) {
      const sa = nodes[a.node].shape;
      const sb = nodes[b.node].shape;
      if (sa.join() !== sb.join()) throw new Error(`traced add of mismatched shapes [${sa}] and [${sb}]`);
      return push({ kind: 'add', path: '', inputs: [a.node, b.node], shape: [...sa], inShape: [...sa] });
    },
    relu(x) {
      const s = nodes[x.node].shape;
      return push({ kind: 'relu', path: '', inputs: [x.node], shape: [...s], inShape: [...s] });
    },
    flatten(x) {
      const s = nodes[x.node].shape;
      return push({ kind: 'flatten', path: '', inputs: [x.node], shape: [s.reduce((a, b) => a * b, 1)], inShape: [...s] });
    },
    concat(xs) {
      if (xs.length === 0) throw new Error('traced concat of no inputs');
      const shapes = xs.map((x) => nodes[x.node].shape);
      const lead = shapes[0].slice(0, -1).join();
      const bad = shapes.find((s) => s.length !== shapes[0].length || s.slice(0, -1).join() !== lead);
      if (bad) throw new Error(`traced concat of mismatched shapes [${shapes[0]}] and [${bad}]`);
      const shape = [...shapes[0].slice(0, -1), shapes.reduce((a, s) => a + s[s.length - 1], 0)];
      return push({ kind: 'concat', path: '', inputs: xs.map((x) => x.node), shape, inShape: [...shapes[0]] });
    },
  };
  const out = model.apply<Sym>({ node: 0 }, ops);
  return { nodes, output: out.node };
}
