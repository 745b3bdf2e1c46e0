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
 * Throws SHAPE_MISMATCH when widths do not chain (a layer's input channels, the two sides of an addition, the
 * inputs of a concatenation: a weights file with inconsistent widths gets here), INTERNAL for a concatenation of
 * nothing (a model's `apply` is wrong).
 */
export function trace(model: Module, inputShape: readonly number[]): Graph {
  const nodes: GraphNode[] = [{ id: 0, kind: 'input', path: '', inputs: [], shape: [...inputShape], inShape: [] }];
  const paths = new Map<Module, string>();
  for (const [p, m] of model.namedModules()) paths.set(m, p);
  const push = (n: Omit<GraphNode, 'id'>): Sym => {
    nodes.push({ ...n, id: nodes.length });
    return { node: nodes.length - 1 };
  };
  // Where a value comes from, for error messages: the nearest layer upstream (the input when there is none).
  const origin = (id: number): string => {
    for (let n = nodes[id]; ; n = nodes[n.inputs[0]]) {
      if (n.kind === 'layer') return `after '${n.path}'`;
      if (n.kind === 'input') return 'the model input';
    }
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
      if (sa.join() !== sb.join()) throw new GdpError('SHAPE_MISMATCH', `an addition of shapes [${sa}] (${origin(a.node)}) and [${sb}] (${origin(b.node)})`);
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
      if (xs.length === 0) throw new GdpError('INTERNAL', 'a model concatenates no inputs');
      const shapes = xs.map((x) => nodes[x.node].shape);
      const lead = shapes[0].slice(0, -1).join();
      const bad = shapes.findIndex((s) => s.length !== shapes[0].length || s.slice(0, -1).join() !== lead);
      if (bad >= 0) {
        throw new GdpError(
          'SHAPE_MISMATCH',
          `a concatenation of shapes [${shapes[0]}] (${origin(xs[0].node)}) and [${shapes[bad]}] (${origin(xs[bad].node)}), which differ before the channel axis`,
        );
      }
      const shape = [...shapes[0].slice(0, -1), shapes.reduce((a, s) => a + s[s.length - 1], 0)];
      return push({ kind: 'concat', path: '', inputs: xs.map((x) => x.node), shape, inShape: [...shapes[0]] });
    },
  };
  const out = model.apply<Sym>({ node: 0 }, ops);
  return { nodes, output: out.node };
}
