import * as tf from '@tensorflow/tfjs';
import { GraphModel, permuteFlattenRows } from '../models/graph_model.js';
import { BatchNorm2d, Conv2d, DepthwiseConv2d, Linear } from '../nn/layers.js';
import { bnWeights } from './tfjs_export.js';
import { topologyLayers } from './tfjs_graph.js';

/**
 * The TF.js layers model of an imported ('graph') gdp model, pruned, masked or melted: the topology it was imported
 * from, layer names, classes and options unchanged (fused activations, SeparableConv2D, the output softmax, Dropout,
 * `use_bias`, `center`, `scale`), with `filters` set to the current widths, and its weights in TF.js names and
 * layouts. Gated BNs export with g * mask folded in. gdp trains a BatchNormalization's gamma and beta and a Dense
 * bias even where the original left them out (`scale`/`center`/`use_bias` false), and gating folds g into gamma:
 * such a layer keeps its option off while the value is exactly what the option implies (gamma 1, beta 0, bias 0),
 * and otherwise exports with it on, with a line to `log` naming the layer and why. Dense kernels after a spatial
 * Flatten go back to Keras' (h, w, c) rows.
 */
export async function graphArtifacts(model: GraphModel, log: (line: string) => void = () => {}): Promise<tf.io.ModelArtifacts> {
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
        const [gamma, beta, mean, variance] = bnWeights(model.part(n.name, BatchNorm2d));
        owned.push(gamma, beta);
        const scale = keepOption(n.name, n.op.scale, gamma, 1, 'scale', 'gamma', log);
        const center = keepOption(n.name, n.op.center, beta, 0, 'center', 'beta', log);
        if (cfg) Object.assign(cfg, { center, scale });
        if (scale) put(`${n.name}/gamma`, gamma);
        if (center) put(`${n.name}/beta`, beta);
        put(`${n.name}/moving_mean`, mean, true);
        put(`${n.name}/moving_variance`, variance, true);
      } else if (k === 'dense') {
        const d = model.part(n.name, Linear);
        const useBias = keepOption(n.name, n.op.useBias, d.bias.value, 0, 'use_bias', 'bias', log);
        if (cfg) cfg.use_bias = useBias;
        const hw = model.denseAfterFlatten.get(n.name);
        put(`${n.name}/kernel`, hw ? permuteFlattenRows(d.weight.value, hw, false) : d.weight.value, hw !== undefined);
        if (useBias) put(`${n.name}/bias`, d.bias.value);
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

/**
 * Whether a layer option that makes a weight (`use_bias`, `center`, `scale`) is on in the export: on when it was on
 * in the original, or when the weight is no longer exactly `neutral` (training or gating moved it; logged).
 */
function keepOption(layer: string, original: boolean, w: tf.Tensor, neutral: number, option: string, weight: string, log: (line: string) => void): boolean {
  if (original) return true;
  const moved = (w.dataSync() as Float32Array).filter((v) => v !== neutral).length;
  if (moved === 0) return false;
  const why = weight === 'gamma' ? 'training or a folded gate moved it' : 'training moved it';
  log(`${layer}: exported with ${option} true (the original had it false): ${moved} of ${w.size} ${weight} values are not ${neutral}, ${why}`);
  return true;
}

/** Writes an imported ('graph') model as a TF.js layers model through `handler` (e.g. tfjsDirWriter); see graphArtifacts for `log`. */
export async function exportGraphTfjs(model: GraphModel, handler: tf.io.IOHandler, log?: (line: string) => void): Promise<tf.io.SaveResult> {
  return handler.save!(await graphArtifacts(model, log));
}
