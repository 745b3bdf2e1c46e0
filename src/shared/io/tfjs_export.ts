import * as tf from '@tensorflow/tfjs';
import { GdpError } from '../errors.js';
import { trace } from '../graph/trace.js';
import { AvgPool2d, BatchNorm2d, Conv2d, DepthwiseConv2d, Dropout, GlobalAvgPool, Linear, MaxPool2d, ReLU, ReLU6 } from '../nn/layers.js';
import type { Module } from '../nn/module.js';

/** tfjs layer names allow no dots; PyTorch paths map one to one. */
const layerName = (path: string): string => path.replace(/\./g, '_');

/**
 * Per-channel scale and shift of a BN, then its running mean and variance (Keras' gamma, beta, moving_mean,
 * moving_variance order): a gated one exports with g * mask folded in, as melting would. Fresh tensors.
 */
export function bnWeights(bn: BatchNorm2d): tf.Tensor[] {
  return tf.tidy(() => {
    const gm = bn.gate && bn.mask ? tf.mul(bn.gate.value, bn.mask.value) : tf.onesLike(bn.weight.value);
    return [tf.mul(bn.weight.value, gm), tf.mul(bn.bias.value, gm), bn.runningMean.value.clone(), bn.runningVar.value.clone()];
  });
}

/**
 * Rebuilds a gdp model as a stock tfjs-layers functional model (NHWC input), following the traced dataflow graph
 * so any architecture the tracer handles exports without per-model code. PyTorch pads symmetrically, which
 * 'same' padding does not reproduce for strided layers: padding becomes an explicit ZeroPadding2D.
 */
export function toLayersModel(model: Module, inputShape: readonly number[], name = 'gdp'): tf.LayersModel {
  const g = trace(model, inputShape);
  const input = tf.input({ shape: [...inputShape], name: 'input' });
  const out = new Map<number, tf.SymbolicTensor>([[0, input]]);
  // Nodes whose values cannot be negative: there, zero padding is -inf padding for a max pool.
  const nonNegative = new Set<number>();
  const weights: [tf.layers.Layer, tf.Tensor[]][] = [];
  const apply = (l: tf.layers.Layer, x: tf.SymbolicTensor | tf.SymbolicTensor[]) => l.apply(x) as tf.SymbolicTensor;
  const pad = (x: tf.SymbolicTensor, p: number, n: string) =>
    p > 0
      ? apply(
          tf.layers.zeroPadding2d({
            padding: [
              [p, p],
              [p, p],
            ],
            name: `${n}_pad`,
          }),
          x,
        )
      : x;

  for (const node of g.nodes.slice(1)) {
    const x = out.get(node.inputs[0])!;
    const n = layerName(node.path);
    let y: tf.SymbolicTensor;
    if (node.kind === 'add') {
      y = apply(
        tf.layers.add({}),
        node.inputs.map((i) => out.get(i)!),
      );
    } else if (node.kind === 'relu') {
      y = apply(tf.layers.reLU({}), x);
      nonNegative.add(node.id);
    } else if (node.kind === 'concat') {
      y = apply(
        tf.layers.concatenate({ axis: -1 }),
        node.inputs.map((i) => out.get(i)!),
      );
    } else if (node.kind === 'flatten') {
      // Keras flattens NHWC as h, w, c; gdp's Linear weights expect PyTorch's c, h, w, so a spatial map is permuted first.
      const spatial = x.shape.length === 4 && (x.shape[1] ?? 1) * (x.shape[2] ?? 1) > 1;
      const chw = spatial ? apply(tf.layers.permute({ dims: [3, 1, 2] }), x) : x;
      y = x.shape.length > 2 ? apply(tf.layers.flatten({}), chw) : x;
    } else {
      const m = node.layer;
      if (m instanceof Conv2d) {
        const conv = tf.layers.conv2d({
          filters: m.outChannels,
          kernelSize: m.kernel,
          strides: m.stride,
          dilationRate: m.dilation,
          padding: 'valid',
          useBias: !!m.bias,
          name: n,
        });
        y = apply(conv, pad(x, m.padding, n));
        weights.push([conv, m.bias ? [m.weight.value, m.bias.value] : [m.weight.value]]);
      } else if (m instanceof DepthwiseConv2d) {
        const dw = tf.layers.depthwiseConv2d({
          kernelSize: m.kernel,
          strides: m.stride,
          dilationRate: m.dilation,
          padding: 'valid',
          depthMultiplier: 1,
          useBias: !!m.bias,
          name: n,
        });
        y = apply(dw, pad(x, m.padding, n));
        weights.push([dw, m.bias ? [m.weight.value, m.bias.value] : [m.weight.value]]);
      } else if (m instanceof ReLU6) {
        y = apply(tf.layers.reLU({ maxValue: 6, name: n }), x);
        nonNegative.add(node.id);
      } else if (m instanceof Dropout) {
        y = x;
        if (nonNegative.has(node.inputs[0])) nonNegative.add(node.id);
      } else if (m instanceof BatchNorm2d) {
        const bn = tf.layers.batchNormalization({ axis: -1, epsilon: m.eps, name: n });
        y = apply(bn, x);
        weights.push([bn, bnWeights(m)]);
      } else if (m instanceof ReLU) {
        y = apply(tf.layers.reLU({ name: n }), x);
        nonNegative.add(node.id);
      } else if (m instanceof MaxPool2d) {
        if (m.padding > 0 && !nonNegative.has(node.inputs[0])) {
          throw new GdpError('UNSUPPORTED_EXPORT', `${node.path}: a padded max pool exports only after a ReLU (zero padding must not win the max)`);
        }
        y = apply(tf.layers.maxPooling2d({ poolSize: m.kernel, strides: m.stride, padding: 'valid', name: n }), pad(x, m.padding, n));
        if (nonNegative.has(node.inputs[0])) nonNegative.add(node.id);
      } else if (m instanceof AvgPool2d) {
        y = m.kernel === 1 && m.stride === 1 ? x : apply(tf.layers.averagePooling2d({ poolSize: m.kernel, strides: m.stride, padding: 'valid', name: n }), x);
        if (nonNegative.has(node.inputs[0])) nonNegative.add(node.id);
      } else if (m instanceof GlobalAvgPool) {
        y = apply(tf.layers.globalAveragePooling2d({ name: n }), x);
      } else if (m instanceof Linear) {
        const dense = tf.layers.dense({ units: m.outFeatures, name: n });
        y = apply(dense, x);
        weights.push([dense, [m.weight.value, m.bias.value]]);
      } else {
        throw new GdpError('UNSUPPORTED_EXPORT', `${node.path}: no TF.js layer for ${m?.constructor.name ?? 'this node'}`);
      }
    }
    out.set(node.id, y);
  }
  const result = tf.model({ inputs: input, outputs: out.get(g.output)!, name });
  for (const [layer, ws] of weights) {
    layer.setWeights(ws);
    // bnWeights made fresh tensors; setWeights copied them into variables.
    if (layer.getClassName() === 'BatchNormalization') tf.dispose(ws);
  }
  return result;
}

/** Writes `model` as a TF.js layers model directory (model.json + weights.bin). */
export async function exportTfjs(model: Module, inputShape: readonly number[], handler: tf.io.IOHandler): Promise<tf.io.SaveResult> {
  const layers = toLayersModel(model, inputShape);
  try {
    return await layers.save(handler);
  } finally {
    layers.dispose();
  }
}
