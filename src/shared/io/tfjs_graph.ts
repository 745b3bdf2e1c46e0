import * as tf from '@tensorflow/tfjs';
import { GdpError } from '../errors.js';
import { toOp, unsupported, type Cfg, type ImportedOp, type Padding } from './tfjs_layer_config.js';

/**
 * A TF.js (Keras 2 style) layers-model topology read into a neutral, validated graph: what gdp's importer builds a
 * model from. Every layer gdp cannot honour stops the import here, before anything runs, with UNSUPPORTED_LAYER
 * naming the layer, its class and the option (tfjs_layer_config.ts reads each layer's config into an op; this file
 * wires the ops into a graph, infers shapes and checks weights).
 *
 * Layouts are TF.js': activations NHWC; Conv2D kernels [kh, kw, in, out]; depthwise kernels [kh, kw, in, 1];
 * Dense kernels [in, out]. Shapes below leave out the batch axis: [h, w, c] for images, [f] after Flatten or a
 * global pooling.
 */

export type { ImportedOp } from './tfjs_layer_config.js';

export interface ImportedNode {
  /** The Keras layer name, kept as the gdp module name. */
  name: string;
  className: string;
  op: ImportedOp;
  /** Names of the nodes feeding this one, in call order. */
  inputs: string[];
  /** Output shape without the batch axis: [h, w, c] or [f]. */
  shape: number[];
}

export interface ImportedGraph {
  name: string;
  /** Nodes in topological order; the first is the input. */
  nodes: ImportedNode[];
  output: string;
  /** Weights by TF.js name (`layer/kernel`, `layer/gamma`, ...), float32, TF.js layouts. */
  weights: Map<string, { shape: number[]; data: Float32Array }>;
}

/**
 * The layer entries ({class_name, config, inbound_nodes}) of a layers-model topology, Sequential (old list form or
 * `config.layers`) or functional, as stored (not copies); undefined when there is no such list.
 */
export function topologyLayers(topology: unknown): Cfg[] | undefined {
  const t = ((topology as Cfg | null)?.model_config ?? topology) as Cfg | null;
  const config = t && typeof t === 'object' ? (t.config as Cfg | unknown[] | undefined) : undefined;
  const layers = Array.isArray(config) ? config : config?.layers;
  return Array.isArray(layers) ? (layers as Cfg[]) : undefined;
}

/** The names of the layers feeding a functional layer: Keras 2's nested lists, or Keras 3's `args` form. */
function inboundNames(layer: Cfg, name: string): string[] {
  const nodes = layer.inbound_nodes;
  if (!Array.isArray(nodes)) return [];
  if (nodes.length > 1) throw unsupported(name, String(layer.class_name), `a shared layer called ${nodes.length} times`);
  if (nodes.length === 0) return [];
  const node = nodes[0] as unknown;
  const out: string[] = [];
  const visit = (v: unknown) => {
    if (Array.isArray(v) && typeof v[0] === 'string' && typeof v[1] === 'number') out.push(v[0]);
    else if (Array.isArray(v)) v.forEach(visit);
    else if (v && typeof v === 'object') {
      const h = (v as { config?: { keras_history?: unknown } }).config?.keras_history;
      if (Array.isArray(h) && typeof h[0] === 'string') out.push(h[0]);
      else if ('args' in v) visit((v as { args: unknown }).args);
    }
  };
  visit(node);
  return out;
}

function conv2dOut(n: number, k: number, s: number, d: number, p: Padding): number {
  return p === 'same' ? Math.ceil(n / s) : Math.floor((n - d * (k - 1) - 1) / s) + 1;
}

/** The output shape of `op` on inputs of `shapes`; throws BAD_TFJS_MODEL (or UNSUPPORTED_LAYER) where they do not fit. */
function outShape(node: Omit<ImportedNode, 'shape'>, shapes: number[][]): number[] {
  const { op, name, className: cls } = node;
  const bad = (msg: string) => new GdpError('BAD_TFJS_MODEL', `layer '${name}' (${cls}): ${msg}`);
  const [x] = shapes;
  const image = () => {
    if (x.length !== 3) throw bad(`expects an image input [h, w, c], gets [${x}]`);
    return x as [number, number, number];
  };
  switch (op.kind) {
    case 'input':
      return x;
    case 'conv2d':
    case 'depthwise':
    case 'separable': {
      const [h, w, c] = image();
      const oh = conv2dOut(h, op.kernel[0], op.strides[0], op.dilation[0], op.padding);
      const ow = conv2dOut(w, op.kernel[1], op.strides[1], op.dilation[1], op.padding);
      if (oh < 1 || ow < 1) throw bad(`a ${op.kernel} kernel does not fit a ${h}x${w} input`);
      return [oh, ow, op.kind === 'depthwise' ? c : op.filters];
    }
    case 'maxpool':
    case 'avgpool': {
      const [h, w, c] = image();
      return [conv2dOut(h, op.pool[0], op.strides[0], 1, op.padding), conv2dOut(w, op.pool[1], op.strides[1], 1, op.padding), c];
    }
    case 'global_avgpool':
    case 'global_maxpool':
      return [image()[2]];
    case 'zeropad': {
      const [h, w, c] = image();
      return [h + op.pad[0][0] + op.pad[0][1], w + op.pad[1][0] + op.pad[1][1], c];
    }
    case 'flatten':
      return [x.reduce((a, b) => a * b, 1)];
    case 'dense':
      if (x.length !== 1) throw unsupported(name, cls, `a Dense layer on a [${x}] input (gdp takes Dense after Flatten or global pooling)`);
      return [op.units];
    case 'add':
      if (shapes.length < 2 || shapes.some((s) => s.join('x') !== x.join('x'))) throw bad(`adds inputs of shapes ${shapes.map((s) => `[${s}]`).join(', ')}`);
      return x;
    case 'concat': {
      if (shapes.length < 2 || shapes.some((s) => s.length !== 3 || s[0] !== x[0] || s[1] !== x[1]))
        throw bad(`concatenates inputs of shapes ${shapes.map((s) => `[${s}]`).join(', ')}`);
      return [x[0], x[1], shapes.reduce((a, s) => a + s[2], 0)];
    }
    case 'batchnorm':
      if (x.length !== 3) throw unsupported(name, cls, `BatchNormalization on a [${x}] input (gdp takes it on images)`);
      return x;
    default:
      return x;
  }
}

/** The weights a layer must have, by TF.js name, with their shapes, given its input shape. */
export function expectedWeights(n: ImportedNode, inShape: number[]): [string, number[]][] {
  const { op, name } = n;
  const c = inShape[inShape.length - 1];
  const bias = (units: number): [string, number[]][] => ('useBias' in op && op.useBias ? [[`${name}/bias`, [units]]] : []);
  switch (op.kind) {
    case 'conv2d':
      return [[`${name}/kernel`, [...op.kernel, c, op.filters]], ...bias(op.filters)];
    case 'depthwise':
      return [[`${name}/depthwise_kernel`, [...op.kernel, c, 1]], ...bias(c)];
    case 'separable':
      return [[`${name}/depthwise_kernel`, [...op.kernel, c, 1]], [`${name}/pointwise_kernel`, [1, 1, c, op.filters]], ...bias(op.filters)];
    case 'batchnorm':
      return [
        ...(op.scale ? [[`${name}/gamma`, [c]] as [string, number[]]] : []),
        ...(op.center ? [[`${name}/beta`, [c]] as [string, number[]]] : []),
        [`${name}/moving_mean`, [c]],
        [`${name}/moving_variance`, [c]],
      ];
    case 'dense':
      return [[`${name}/kernel`, [c, op.units]], ...bias(op.units)];
    default:
      return [];
  }
}

/**
 * Reads a TF.js layers model (the `modelTopology` of model.json, Sequential or functional, and its decoded weights)
 * into an ImportedGraph. Throws BAD_TFJS_MODEL for a malformed topology or missing/misshapen weights, and
 * UNSUPPORTED_LAYER (layer name, class, option) for anything gdp cannot compute exactly: other layer classes, a
 * depth multiplier other than 1, channels_first, activations other than linear/relu/relu6 (softmax only on the
 * output), shared layers, more than one input or output.
 */
export function readLayersTopology(topology: unknown, weights: tf.NamedTensorMap, source: string): ImportedGraph {
  const { name, nodes, output } = parseLayersTopology(topology, source);
  const byName = new Map(nodes.map((n) => [n.name, n]));
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const n of nodes) {
    const inShape = n.inputs.length ? byName.get(n.inputs[0])!.shape : n.shape;
    for (const [wname, shape] of expectedWeights(n, inShape)) {
      const w = weights[wname];
      if (!w) throw new GdpError('BAD_TFJS_MODEL', `${source}: layer '${n.name}' (${n.className}) lacks weight '${wname}'`);
      if (w.shape.join('x') !== shape.join('x'))
        throw new GdpError('BAD_TFJS_MODEL', `${source}: weight '${wname}' has shape [${w.shape}], layer '${n.name}' needs [${shape}]`);
      out.set(wname, { shape, data: Float32Array.from(w.dataSync()) });
    }
  }
  return { name, nodes, output, weights: out };
}

/**
 * The graph of a layers-model topology without weights (what a gdp 'graph' architecture is built from); the same
 * checks and errors as readLayersTopology, weights aside.
 */
export function parseLayersTopology(topology: unknown, source: string): Omit<ImportedGraph, 'weights'> {
  const fail = (msg: string) => new GdpError('BAD_TFJS_MODEL', `${source}: ${msg}`);
  const t = (topology as Cfg | null)?.model_config ?? topology;
  if (!t || typeof t !== 'object') throw fail('no model topology');
  const cls = (t as Cfg).class_name;
  const config = (t as Cfg).config as Cfg | unknown[] | undefined;
  const layers = topologyLayers(topology);
  if (!layers?.length) throw fail(`a ${String(cls)} with no layers`);
  const modelName = String((!Array.isArray(config) && (config as Cfg | undefined)?.name) || 'imported');
  const sequential = cls === 'Sequential';
  if (!sequential && cls !== 'Model' && cls !== 'Functional') throw fail(`model class '${String(cls)}' (a layers model is Sequential, Model or Functional)`);

  const nodes: ImportedNode[] = [];
  const byName = new Map<string, ImportedNode>();
  const add = (n: Omit<ImportedNode, 'shape'>, shapes: number[][]) => {
    if (byName.has(n.name)) throw fail(`two layers are named '${n.name}'`);
    const node = { ...n, shape: outShape(n, shapes) };
    nodes.push(node);
    byName.set(n.name, node);
  };
  const batchShape = (c: Cfg, name: string): number[] => {
    const s = (c.batch_input_shape ?? c.batch_shape) as unknown;
    if (!Array.isArray(s) || s.length !== 4 || !s.slice(1).every((v) => Number.isInteger(v) && v > 0)) {
      throw fail(`layer '${name}': input shape ${JSON.stringify(s)} is not [batch, height, width, channels] with known sizes`);
    }
    return s.slice(1) as number[];
  };

  layers.forEach((l, i) => {
    const lc = (l.config ?? {}) as Cfg;
    const name = String(lc.name ?? l.name ?? `layer_${i}`);
    const className = String(l.class_name);
    const op = toOp(className, name, lc);
    if (op.kind === 'input') {
      if (nodes.length) throw unsupported(name, className, 'a second input (gdp models take one image input)');
      add({ name, className, op, inputs: [] }, [batchShape(lc, name)]);
      return;
    }
    let inputs: string[];
    if (sequential) {
      if (!nodes.length) add({ name: 'input', className: 'InputLayer', op: { kind: 'input' }, inputs: [] }, [batchShape(lc, name)]);
      inputs = [nodes[nodes.length - 1].name];
    } else {
      inputs = inboundNames(l, name);
      if (!inputs.length) throw fail(`layer '${name}' has no inbound node`);
      const missing = inputs.find((n) => !byName.has(n));
      if (missing) throw fail(`layer '${name}' reads '${missing}', which is not defined before it`);
    }
    if ((op.kind === 'add' || op.kind === 'concat') !== inputs.length > 1) throw fail(`layer '${name}' (${className}) has ${inputs.length} input(s)`);
    add(
      { name, className, op, inputs },
      inputs.map((n) => byName.get(n)!.shape),
    );
  });

  let output = nodes[nodes.length - 1].name;
  if (!sequential) {
    const outs = (config as Cfg).output_layers as unknown[] | undefined;
    if (Array.isArray(outs)) {
      const names = inboundNames({ inbound_nodes: [outs] }, 'output');
      if (names.length !== 1) throw unsupported(modelName, cls as string, `${names.length} outputs (gdp models have one)`);
      output = names[0];
    }
  }
  const readers = new Set(nodes.flatMap((n) => n.inputs));
  const dangling = nodes.find((n) => n.name !== output && !readers.has(n.name));
  if (dangling) throw unsupported(dangling.name, dangling.className, 'its output is not used by the model output');
  for (const n of nodes) {
    if ('activation' in n.op && n.op.activation === 'softmax' && n.name !== output) throw unsupported(n.name, n.className, 'softmax before the output');
    if (n.op.kind === 'activation' && n.op.fn === 'softmax' && n.name !== output) throw unsupported(n.name, n.className, 'softmax before the output');
  }

  return { name: modelName, nodes, output };
}
