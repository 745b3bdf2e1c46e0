import type { Normalisation } from '../shared/data/transforms.js';
import { modelCost } from '../shared/graph/flops.js';
import { saveModelFile } from '../shared/io/model_file.js';
import { readImportedModel } from '../shared/io/keras_files.js';
import { GRAPH_ARCH, modelFromImport } from '../shared/models/graph_model.js';
import { Rng } from '../shared/rng.js';

export interface ImportSummary {
  name: string;
  layers: number;
  numClasses: number;
  /** One image, HWC. */
  inputShape: [number, number, number];
  macs: number;
  params: number;
  /** Whether the model's output softmax was left out (gdp trains on logits; export restores it). */
  softmax: boolean;
  /** The input normalisation the file records (a gdp export's), kept in the model file as `input_mean`/`input_std`. */
  normalisation?: Normalisation;
}

/**
 * `gdp-model import --tfjs / --keras`: reads a TF.js layers model (model.json and shards) or a Keras file (.keras,
 * legacy .h5; see keras_files.ts), builds the gdp 'graph' model of it
 * with the same layer names and weights, and writes it as a gdp safetensors file whose metadata carries the
 * topology (`graph`), so every gdp-model command and a config's `model.weights` load it. An input normalisation
 * the file records (a gdp-model export's) goes into the model file too, as training writes it.
 * @throws GdpError BAD_TFJS_MODEL, BAD_KERAS_FILE, FILE_NOT_FOUND, UNSUPPORTED_LAYER (before anything runs).
 */
export async function importTfjsFile(path: string, out: string): Promise<ImportSummary> {
  const { topology, graph, norm } = await readImportedModel(path);
  const model = modelFromImport(topology, graph, new Rng(0), path);
  try {
    const cost = modelCost(model, model.inputShape);
    await saveModelFile(out, model, { arch: GRAPH_ARCH, numClasses: model.numClasses, norm });
    return {
      name: graph.name,
      layers: graph.nodes.length,
      numClasses: model.numClasses,
      inputShape: model.inputShape,
      macs: cost.macs,
      params: cost.params,
      softmax: model.softmax,
      ...(norm && { normalisation: norm }),
    };
  } finally {
    model.dispose();
  }
}
