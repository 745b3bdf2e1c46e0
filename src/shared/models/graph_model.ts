import * as tf from '@tensorflow/tfjs-core';
import { GdpError } from '../errors.js';
import { parseLayersTopology, type ImportedGraph, type ImportedNode, type ImportedOp } from '../io/tfjs_graph.js';
import { BatchNorm2d, Conv2d, DepthwiseConv2d, GlobalAvgPool, Linear, ReLU, ReLU6 } from '../nn/layers.js';
import { Module, type Layer, type Ops } from '../nn/module.js';
import { GlobalMaxPool, Pool2d, Rescale, ZeroPad2d } from '../nn/tf_layers.js';
import type { Rng } from '../rng.js';

/** The architecture name of models built from an imported TF.js layers topology (`model.graph`). */
export const GRAPH_ARCH = 'graph';

/** One computation step of a node: a child layer, or a flatten (gdp's channel-major one, see `Ops.flatten`). */
type Step = Layer | 'flatten';

/** TF's 'same' padding of one spatial dimension: [before, after] (the larger half after). */
function samePad(n: number, k: number, s: number, d: number): [number, number] {
  const total = Math.max((Math.ceil(n / s) - 1) * s + d * (k - 1) + 1 - n, 0);
  return [Math.floor(total / 2), total - Math.floor(total / 2)];
}

/**
 * A gdp model built from a TF.js (Keras) layers topology: one child per Keras layer with weights or computation,
 * named as the Keras layer, so channel groups, FLOPs, melting and the safetensors names follow from tracing like
 * any built-in architecture. What Keras fuses gdp spells out in extra children: `<name>_act` (a conv's or Dense's
 * ReLU/ReLU6), `<name>_pad` (the asymmetric part of 'same' padding; the symmetric part is the conv's own padding),
 * `<name>_depthwise` (a SeparableConv2D's depthwise half; `<name>` is its pointwise 1x1 conv with the bias).
 * A softmax on the output is left out (gdp trains on logits) and noted in `softmax`; Dropout is the identity.
 * Keras flattens NHWC as (h, w, c), gdp as (c, h, w): a Dense reading a spatial Flatten has its kernel rows
 * permuted at import and export (`denseAfterFlatten`).
 */
export class GraphModel extends Module {
  readonly graph: Omit<ImportedGraph, 'weights'>;
  /** One image, HWC. */
  readonly inputShape: [number, number, number];
  readonly numClasses: number;
  /** Whether the Keras model ends in a softmax, which gdp leaves out. */
  readonly softmax: boolean;
  /** Dense layers that read a Flatten of an HxW map (through Dropout/Activation): [H, W] by Dense name. */
  readonly denseAfterFlatten = new Map<string, [number, number]>();
  private readonly steps = new Map<string, Step[]>();

  /**
   * @param topology the `modelTopology` of a TF.js layers model.json (Sequential or functional), kept as given.
   * @throws GdpError BAD_TFJS_MODEL, UNSUPPORTED_LAYER (also for non-square kernels, strides or dilations).
   */
  constructor(
    readonly topology: unknown,
    rng: Rng,
    source = 'model.graph',
  ) {
    super();
    this.graph = parseLayersTopology(topology, source);
    const nodes = this.graph.nodes;
    const byName = new Map(nodes.map((n) => [n.name, n]));
    const input = nodes[0].shape;
    this.inputShape = [input[0], input[1], input[2]];
    const out = byName.get(this.graph.output)!;
    if (out.shape.length !== 1) throw new GdpError('UNSUPPORTED_LAYER', `${source}: the output '${out.name}' is [${out.shape}], not a vector of class scores`);
    this.numClasses = out.shape[0];
    let softmax = false;
    const names = new Set<string>();
    const child = <L extends Layer>(name: string, l: L): L => {
      if (name.includes('.')) throw new GdpError('BAD_TFJS_MODEL', `${source}: layer name '${name}' has a dot (gdp paths are dotted)`);
      if (names.has(name)) throw new GdpError('BAD_TFJS_MODEL', `${source}: gdp's module name '${name}' is taken by another layer`);
      names.add(name);
      return this.addChild(name, l);
    };
    for (const n of nodes) {
      const inShape = n.inputs.length ? byName.get(n.inputs[0])!.shape : n.shape;
      const steps: Step[] = [];
      const op = n.op;
      if (op.kind === 'conv2d' || op.kind === 'depthwise' || op.kind === 'separable') {
        const [k, s, d] = squareConv(n, op);
        let padding = 0;
        if (op.padding === 'same') {
          const [ph, pw] = [samePad(inShape[0], k, s, d), samePad(inShape[1], k, s, d)];
          if (ph[0] === ph[1] && pw[0] === pw[1] && ph[0] === pw[0]) padding = ph[0];
          else steps.push(child(`${n.name}_pad`, new ZeroPad2d([ph, pw])));
        }
        const c = inShape[2];
        const opts = { stride: s, padding, dilation: d };
        if (op.kind === 'conv2d') steps.push(child(n.name, new Conv2d(c, op.filters, k, rng, { ...opts, bias: op.useBias })));
        else if (op.kind === 'depthwise') steps.push(child(n.name, new DepthwiseConv2d(c, k, rng, { ...opts, bias: op.useBias })));
        else {
          steps.push(child(`${n.name}_depthwise`, new DepthwiseConv2d(c, k, rng, opts)));
          steps.push(child(n.name, new Conv2d(c, op.filters, 1, rng, { bias: op.useBias })));
        }
      } else if (op.kind === 'batchnorm') steps.push(child(n.name, new BatchNorm2d(inShape[2], op.epsilon)));
      else if (op.kind === 'maxpool' || op.kind === 'avgpool')
        steps.push(child(n.name, new Pool2d(op.kind === 'maxpool' ? 'max' : 'avg', op.pool, op.strides, op.padding)));
      else if (op.kind === 'global_avgpool') steps.push(child(n.name, new GlobalAvgPool()), 'flatten');
      else if (op.kind === 'global_maxpool') steps.push(child(n.name, new GlobalMaxPool()), 'flatten');
      else if (op.kind === 'zeropad') steps.push(child(n.name, new ZeroPad2d(op.pad)));
      else if (op.kind === 'flatten') steps.push('flatten');
      else if (op.kind === 'rescaling') steps.push(child(n.name, new Rescale(op.scale, op.offset)));
      else if (op.kind === 'dense') {
        steps.push(child(n.name, new Linear(inShape[0], op.units, rng)));
        const hw = flattenedMap(byName, n);
        if (hw) this.denseAfterFlatten.set(n.name, hw);
      }
      const fn = op.kind === 'activation' ? op.fn : 'activation' in op ? op.activation : 'linear';
      // A fused activation gets its own child; an Activation/ReLU layer is that child, under its own name.
      const actName = op.kind === 'activation' ? n.name : `${n.name}_act`;
      if (fn === 'relu') steps.push(child(actName, new ReLU()));
      else if (fn === 'relu6') steps.push(child(actName, new ReLU6()));
      else if (fn === 'softmax') softmax = true;
      this.steps.set(n.name, steps);
    }
    this.softmax = softmax;
  }

  apply<T>(x: T, F: Ops<T>): T {
    const values = new Map<string, T>();
    for (const n of this.graph.nodes) {
      const ins = n.inputs.map((i) => values.get(i) as T);
      let y: T;
      if (n.op.kind === 'input') y = x;
      else if (n.op.kind === 'add') y = ins.slice(1).reduce((a: T, b: T) => F.add(a, b), ins[0]);
      else if (n.op.kind === 'concat') y = F.concat(ins);
      else y = ins[0];
      for (const s of this.steps.get(n.name)!) y = s === 'flatten' ? F.flatten(y) : s.apply<T>(y, F);
      values.set(n.name, y);
    }
    return values.get(this.graph.output) as T;
  }

  /** The gdp module `name` (a Keras layer name, or one with a suffix above); throws if there is none. */
  part<M extends Module>(name: string, cls: abstract new (...a: never[]) => M): M {
    const m = this.children().find(([n]) => n === name)?.[1];
    if (!(m instanceof cls)) throw new GdpError('BAD_TFJS_MODEL', `no ${cls.name} named '${name}' in the graph model`);
    return m;
  }
}

/** Kernel, stride and dilation of a conv node as single numbers; gdp's convolutions are square. */
function squareConv(n: ImportedNode, op: Extract<ImportedOp, { kernel: unknown }>): [number, number, number] {
  const refuse = (what: string, v: readonly number[]) =>
    new GdpError('UNSUPPORTED_LAYER', `layer '${n.name}' (${n.className}): ${what} [${v}] (gdp takes square ones)`);
  if (op.kernel[0] !== op.kernel[1]) throw refuse('kernel_size', op.kernel);
  if (op.strides[0] !== op.strides[1]) throw refuse('strides', op.strides);
  if (op.dilation[0] !== op.dilation[1]) throw refuse('dilation_rate', op.dilation);
  if (op.dilation[0] > 1 && op.strides[0] > 1)
    throw new GdpError('UNSUPPORTED_LAYER', `layer '${n.name}' (${n.className}): dilation with strides > 1 (TF refuses it too)`);
  return [op.kernel[0], op.strides[0], op.dilation[0]];
}

/** [H, W] when the Dense node reads (through Dropout or Activation) a Flatten of an HxW map with H*W > 1. */
function flattenedMap(byName: Map<string, ImportedNode>, dense: ImportedNode): [number, number] | undefined {
  let n = byName.get(dense.inputs[0]);
  while (n && (n.op.kind === 'dropout' || n.op.kind === 'activation')) n = byName.get(n.inputs[0]);
  if (n?.op.kind !== 'flatten') return undefined;
  const s = byName.get(n.inputs[0])!.shape;
  return s.length === 3 && s[0] * s[1] > 1 ? [s[0], s[1]] : undefined;
}

/**
 * Dense kernel rows between Keras' (h, w, c) and gdp's (c, h, w) flatten orders: [H*W*C, U] <-> [C*H*W, U].
 * `toGdp` false gives the inverse.
 */
export function permuteFlattenRows(kernel: tf.Tensor, [h, w]: [number, number], toGdp: boolean): tf.Tensor {
  return tf.tidy(() => {
    const [rows, units] = kernel.shape;
    const c = rows / (h * w);
    return toGdp
      ? tf.reshape(tf.transpose(tf.reshape(kernel, [h, w, c, units]), [2, 0, 1, 3]), [rows, units])
      : tf.reshape(tf.transpose(tf.reshape(kernel, [c, h, w, units]), [1, 2, 0, 3]), [rows, units]);
  });
}

/**
 * Builds the model of an imported graph and loads its weights (TF.js layouts, which are gdp's: HWIO kernels,
 * [kh,kw,C,1] depthwise kernels, [in,out] Dense kernels; absent BN gamma/beta and Dense bias become 1 and 0).
 * @throws GdpError BAD_TFJS_MODEL, UNSUPPORTED_LAYER.
 */
export function modelFromImport(topology: unknown, g: ImportedGraph, rng: Rng, source: string): GraphModel {
  const m = new GraphModel(topology, rng, source);
  try {
    const w = (name: string) => {
      const t = g.weights.get(name);
      return t ? tf.tensor(t.data, t.shape) : undefined;
    };
    const set = (slot: { set(t: tf.Tensor): void } | undefined, t: tf.Tensor | undefined, fallback?: () => tf.Tensor) => {
      const v = t ?? fallback?.();
      if (slot && v) slot.set(v);
      else v?.dispose();
    };
    for (const n of m.graph.nodes) {
      const k = n.op.kind;
      if (k === 'conv2d' || k === 'depthwise') {
        const c = k === 'conv2d' ? m.part(n.name, Conv2d) : m.part(n.name, DepthwiseConv2d);
        set(c.weight, w(`${n.name}/${k === 'conv2d' ? 'kernel' : 'depthwise_kernel'}`));
        set(c.bias, w(`${n.name}/bias`));
      } else if (k === 'separable') {
        set(m.part(`${n.name}_depthwise`, DepthwiseConv2d).weight, w(`${n.name}/depthwise_kernel`));
        const pw = m.part(n.name, Conv2d);
        set(pw.weight, w(`${n.name}/pointwise_kernel`));
        set(pw.bias, w(`${n.name}/bias`));
      } else if (k === 'batchnorm') {
        const bn = m.part(n.name, BatchNorm2d);
        set(bn.weight, w(`${n.name}/gamma`), () => tf.ones([bn.channels]));
        set(bn.bias, w(`${n.name}/beta`), () => tf.zeros([bn.channels]));
        set(bn.runningMean, w(`${n.name}/moving_mean`));
        set(bn.runningVar, w(`${n.name}/moving_variance`));
      } else if (k === 'dense') {
        const d = m.part(n.name, Linear);
        const hw = m.denseAfterFlatten.get(n.name);
        const kernel = w(`${n.name}/kernel`)!;
        set(d.weight, hw ? permuteFlattenRows(kernel, hw, true) : kernel);
        if (hw) kernel.dispose();
        set(d.bias, w(`${n.name}/bias`), () => tf.zeros([d.outFeatures]));
      }
    }
  } catch (e) {
    m.dispose();
    throw e;
  }
  return m;
}
