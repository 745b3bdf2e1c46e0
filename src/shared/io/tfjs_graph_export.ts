import * as tf from '@tensorflow/tfjs';
import { GraphModel, permuteFlattenRows } from '../models/graph_model.js';
import { BatchNorm2d, Conv2d, DepthwiseConv2d, Linear } from '../nn/layers.js';
import { bnWeights } from './tfjs_export.js';
import { topologyLayers } from './tfjs_graph.js';

/**
 * The TF.js layers model of an imported ('graph') gdp model, pruned, masked or melted: the topology it was imported
 * from, layer names, classes and options unchanged (fused activations, SeparableConv2D, the output softmax, Dropout),
 * with `filters` set to the current widths, and its weights in TF.js names and layouts. Gated BNs export with
 * g * mask folded in; every BatchNormalization exports with center and scale and every Dense with a bias, since
 * training may have moved them from 0 and 1. Dense kernels after a spatial Flatten go back to Keras' (h, w, c) rows.
 */
export async function graphArtifacts(model: GraphModel): Promise<tf.io.ModelArtifacts> {
  const topology = structuredClone(model.topology) as Record<string, unknown>;
  const configs = new Map(
    (topologyLayers(topology) ?? []).map((l) => [String((l.config as { name?: unknown } | undefined)?.name), l.config as Record<string, unknown>]),
  );
  const weights: tf.NamedTensorMap = {};
  const owned: tf.Tensor[] = [];
  const put = (name: string, t: tf.Tensor, fresh = false) => {
    weights[name] = t;
    if (fresh) owned.push(t);
  };
  try {
    for (const n of model.graph.nodes) {
      const cfg = configs.get(n.name);
      const k = n.op.kind;
      if (k === 'conv2d' || k === 'separable') {
        const conv = model.part(n.name, Conv2d);
        if (cfg) cfg.filters = conv.outChannels;
        if (k === 'separable') put(`${n.name}/depthwise_kernel`, model.part(`${n.name}_depthwise`, DepthwiseConv2d).weight.value);
        put(`${n.name}/${k === 'conv2d' ? 'kernel' : 'pointwise_kernel'}`, conv.weight.value);
        if (conv.bias) put(`${n.name}/bias`, conv.bias.value);
      } else if (k === 'depthwise') {
        const dw = model.part(n.name, DepthwiseConv2d);
        put(`${n.name}/depthwise_kernel`, dw.weight.value);
        if (dw.bias) put(`${n.name}/bias`, dw.bias.value);
      } else if (k === 'batchnorm') {
        if (cfg) Object.assign(cfg, { center: true, scale: true });
        const [gamma, beta, mean, variance] = bnWeights(model.part(n.name, BatchNorm2d));
        put(`${n.name}/gamma`, gamma, true);
        put(`${n.name}/beta`, beta, true);
        put(`${n.name}/moving_mean`, mean, true);
        put(`${n.name}/moving_variance`, variance, true);
      } else if (k === 'dense') {
        if (cfg) cfg.use_bias = true;
        const d = model.part(n.name, Linear);
        const hw = model.denseAfterFlatten.get(n.name);
        put(`${n.name}/kernel`, hw ? permuteFlattenRows(d.weight.value, hw, false) : d.weight.value, hw !== undefined);
        put(`${n.name}/bias`, d.bias.value);
      }
    }
    const { data, specs } = await tf.io.encodeWeights(weights);
    return {
      modelTopology: topology,
      format: 'layers-model',
      generatedBy: `TensorFlow.js tfjs-layers v${tf.version.tfjs}`,
      weightSpecs: specs,
      weightData: data,
    };
  } finally {
    tf.dispose(owned);
  }
}

/** Writes an imported ('graph') model as a TF.js layers model through `handler` (e.g. tfjsDirWriter). */
export async function exportGraphTfjs(model: GraphModel, handler: tf.io.IOHandler): Promise<tf.io.SaveResult> {
  return handler.save!(await graphArtifacts(model));
}
