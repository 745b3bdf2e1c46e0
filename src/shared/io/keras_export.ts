import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { strToU8, zipSync } from 'fflate';
import * as tf from '@tensorflow/tfjs';
import type { Group } from 'h5wasm/node';
import { GdpError } from '../errors.js';
import type { Normalisation } from '../data/transforms.js';
import type { GraphModel } from '../models/graph_model.js';
import { loadHdf5, withHdf5File, writeFloats } from './hdf5.js';
import { toKeras3Config } from './keras_config.js';
import { exportedInputMetadata } from './model_file.js';
import { keras3LayerPaths } from './keras_files.js';
import { isKerasFile } from './keras_suffixes.js';
import { expectedWeights, parseLayersTopology, topologyLayers, type ImportedNode } from './tfjs_graph.js';
import { graphArtifacts } from './tfjs_graph_export.js';

/** What exportGraphKeras writes besides the model. */
export interface KerasExportOptions {
  /** Notes on the conversion (graphArtifacts'). */
  log?: (line: string) => void;
  /** The input normalisation the weights were trained with, recorded as the file's `gdp` entry (exportedInputMetadata). */
  norm?: Normalisation;
}

/**
 * Writes an imported ('graph') gdp model as a Keras file, in the layouts keras_files.ts reads (see there):
 * `.keras` (Keras 3: zip of config.json, metadata.json, model.weights.h5) or legacy `.h5` / `.hdf5` (Keras 2:
 * `model_config` + `model_weights`). Topology and weights are those of the TF.js export (graphArtifacts: current
 * widths, original layer options, gates folded; `o.log` as there). `o.norm` goes where each format keeps entries
 * Keras itself ignores when loading: metadata.json's `gdp` key (Keras 3 writes keras_version and date_saved there and
 * reads only config.json and the weights), or the `.h5` root attribute `gdp` (JSON, beside `model_config`); either
 * holds exportedInputMetadata's `{ input: { layout, pixels, mean, std } }`, as model.json's userDefinedMetadata.gdp.
 * gdp reads these files back with the same outputs (tested); loading them with Python Keras was not tested (no Keras
 * where gdp is developed).
 * @returns the bytes written, and with `o.norm` where the file records it (`metadata.json gdp.input`).
 * @throws GdpError UNSUPPORTED_EXPORT for another suffix; file system errors as thrown by Node.
 */
export async function exportGraphKeras(model: GraphModel, out: string, o: KerasExportOptions = {}): Promise<{ bytes: number; inputAt?: string }> {
  const keras3 = out.toLowerCase().endsWith('.keras');
  if (!isKerasFile(out)) throw new GdpError('UNSUPPORTED_EXPORT', `${out}: a Keras file ends in .keras (Keras 3) or .h5 / .hdf5 (legacy Keras 2)`);
  const artifacts = await graphArtifacts(model, o.log);
  const gdp = o.norm && exportedInputMetadata(o.norm);
  const topology = artifacts.modelTopology as Record<string, unknown>;
  const named = tf.io.decodeWeights(tf.io.CompositeArrayBuffer.join(artifacts.weightData as ArrayBuffer), artifacts.weightSpecs!);
  // The exported topology's graph: its shapes are the current (melted) widths.
  const g = parseLayersTopology(topology, out);
  const byName = new Map(g.nodes.map((n) => [n.name, n]));
  // Per layer in topology order, its exported weights in Keras' variable order (expectedWeights').
  const layers = (topologyLayers(topology) ?? []).map((l) => {
    const node = byName.get(String((l.config as { name?: unknown }).name))!;
    const inShape = node.inputs.length ? byName.get(node.inputs[0])!.shape : node.shape;
    const weights = expectedWeights(node, inShape).map(([name]) => ({ name, shape: named[name].shape, data: named[name].dataSync() as Float32Array }));
    return { node, className: String(l.class_name), weights };
  });
  tf.dispose(Object.values(named));
  await loadHdf5();
  const dir = mkdtempSync(join(tmpdir(), 'gdp-keras-out-'));
  try {
    const h5 = join(dir, 'model.weights.h5');
    if (keras3) {
      withHdf5File(h5, 'w', (f) => writeKeras3Weights(f, layers, String((topology.config as { name?: unknown }).name ?? 'model')));
      const config = toKeras3Config(topology, g.nodes);
      const metadata = { keras_version: '3.0.0', date_saved: new Date().toISOString(), generated_by: 'gdp-model export', ...(gdp && { gdp }) };
      const zip = zipSync(
        {
          'metadata.json': strToU8(JSON.stringify(metadata)),
          'config.json': strToU8(JSON.stringify(config)),
          'model.weights.h5': new Uint8Array(readFileSync(h5)),
        },
        { level: 0 },
      );
      writeFileSync(out, zip);
      return { bytes: zip.length, ...(gdp && { inputAt: 'metadata.json gdp.input' }) };
    }
    withHdf5File(h5, 'w', (f) => {
      writeKeras2File(f, topology, layers);
      if (gdp) f.create_attribute('gdp', JSON.stringify(gdp));
    });
    const bytes = readFileSync(h5);
    writeFileSync(out, bytes);
    return { bytes: bytes.length, ...(gdp && { inputAt: "root attribute 'gdp' (JSON), its input" }) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

type LayerWeights = { node: ImportedNode; className: string; weights: { name: string; shape: number[]; data: Float32Array }[] };

/** Keras 3's weights layout: `layers/<snake class>[_k]/vars/<i>`, the vars group naming its layer (as Keras 3.10+ writes). */
function writeKeras3Weights(f: Group, layers: LayerWeights[], modelName: string): void {
  f.create_group('vars').create_attribute('name', modelName);
  const paths = keras3LayerPaths(layers.map((l) => ({ className: l.className, name: l.node.name })));
  const root = f.create_group('layers');
  for (const l of layers) {
    const vars = root.create_group(paths.get(l.node.name)!.slice('layers/'.length)).create_group('vars');
    vars.create_attribute('name', l.node.name);
    l.weights.forEach((w, i) => writeFloats(vars, String(i), w.data, w.shape));
  }
}

/** A fixed-length string array attribute, as h5py stores lists of bytes (`S<n>`). */
function bytesListAttr(g: Group, name: string, values: string[]): void {
  const n = Math.max(1, ...values.map((v) => Buffer.byteLength(v)));
  g.create_attribute(name, values, [values.length], `S${n}`);
}

/** Keras 2's whole-model `.h5` layout: `model_config`, and `model_weights/<layer>/<layer>/<weight>:0` datasets. */
function writeKeras2File(f: Group, topology: Record<string, unknown>, layers: LayerWeights[]): void {
  f.create_attribute('model_config', JSON.stringify({ class_name: topology.class_name, config: topology.config }));
  f.create_attribute('keras_version', String(topology.keras_version ?? '2.15.0'));
  f.create_attribute('backend', 'tensorflow');
  const mw = f.create_group('model_weights');
  bytesListAttr(
    mw,
    'layer_names',
    layers.map((l) => l.node.name),
  );
  mw.create_attribute('backend', 'tensorflow');
  mw.create_attribute('keras_version', String(topology.keras_version ?? '2.15.0'));
  for (const l of [...layers].sort((a, b) => (a.node.name < b.node.name ? -1 : 1))) {
    const g = mw.create_group(l.node.name);
    // Weight names as Keras 2 gives them: `<layer>/<weight>:0`, a dataset `<weight>:0` in the subgroup `<layer>`.
    bytesListAttr(
      g,
      'weight_names',
      l.weights.map((w) => `${w.name}:0`),
    );
    if (!l.weights.length) continue;
    const sub = g.create_group(l.node.name);
    for (const w of l.weights) writeFloats(sub, `${w.name.slice(l.node.name.length + 1)}:0`, w.data, w.shape);
  }
}
