import { GdpError } from '../errors.js';
import type { Layer, Module, Ops } from '../nn/module.js';

/** One node of a traced forward pass: a leaf layer, an addition, a flatten, or the input. */
export interface GraphNode {
  id: number;
  kind: 'input' | 'layer' | 'add' | 'relu' | 'flatten';
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
      if (s.length === 3 && (s[0] !== 1 || s[1] !== 1)) {
        // Flattening a spatial map would tie one channel to several features; the supported models pool first.
        throw new Error(`flatten of a ${s[0]}x${s[1]} map is not supported: pool to 1x1 first`);
      }
      return push({ kind: 'flatten', path: '', inputs: [x.node], shape: [s[s.length - 1]], inShape: [...s] });
    },
  };
  const out = model.apply<Sym>({ node: 0 }, ops);
  return { nodes, output: out.node };
}
