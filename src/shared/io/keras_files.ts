import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { unzipSync } from 'fflate';
import type { Group } from 'h5wasm/node';
import type { Normalisation } from '../data/transforms.js';
import { GdpError } from '../errors.js';
import { childDataset, childGroup, loadHdf5, readFloats, stringAttr, stringListAttr, withHdf5File } from './hdf5.js';
import { toLayersTopology } from './keras_config.js';
import { isKerasFile } from './keras_suffixes.js';
import { exportedNormalisation } from './model_file.js';
import { readTfjsModel, readTfjsModelSync, type TfjsModel } from './tfjs_files.js';
import { expectedWeights, parseLayersTopology, type ImportedGraph, type ImportedNode } from './tfjs_graph.js';

/**
 * Keras model files into the importer's graph, the same one a TF.js model.json gives (see readLayersTopology):
 * - Keras 3 `.keras`: a zip of `config.json` (the model config, Keras 3 form), `metadata.json` and
 *   `model.weights.h5`, where each layer's variables are datasets `layers/<class in snake case>[_k]/vars/<i>`:
 *   layers in the model's own order (a Sequential's without its InputLayer), `_k` counting earlier layers of the
 *   same class, `<i>` the trainable then the non-trainable variables in creation order;
 * - Keras 2 `.h5` (`model.save('x.h5')`): the root attribute `model_config` (JSON, Keras 2 form) and each layer's
 *   weights under `model_weights/<layer>`, in the order of its `weight_names` attribute, as datasets named by them
 *   (`model_weights/conv/conv/kernel:0`).
 * Layer weights arrive in TF.js names (`conv/kernel`, `dw/depthwise_kernel`, `bn/gamma`); Keras' layouts are TF.js'.
 * The input normalisation gdp-model export records (metadata.json's `gdp` key, the `.h5` root attribute `gdp`; see
 * keras_export.ts) comes back as the model's `norm`; files without it (any Keras' own) have none.
 */

type Weights = ImportedGraph['weights'];
type Floats = { shape: number[]; data: Float32Array };

/** Keras' `to_snake_case` of a class name (Conv2D -> conv2d, BatchNormalization -> batch_normalization). */
export function snakeCase(name: string): string {
  return name
    .replace(/\W+/g, '')
    .replace(/(.)([A-Z][a-z]+)/g, '$1_$2')
    .replace(/([a-z])([A-Z])/g, '$1_$2')
    .toLowerCase();
}

/**
 * The weights group path of each layer in a Keras 3 weights file, by layer name: `layers/<snake class>[_k]`, layers
 * in `layers` order (the model's own list: a Sequential's without its InputLayer).
 */
export function keras3LayerPaths(layers: readonly { className: string; name: string }[]): Map<string, string> {
  const used = new Map<string, number>();
  const out = new Map<string, string>();
  for (const l of layers) {
    const base = snakeCase(l.className);
    const k = used.get(base);
    used.set(base, k === undefined ? 0 : k + 1);
    out.set(l.name, `layers/${k === undefined ? base : `${base}_${k + 1}`}`);
  }
  return out;
}

/**
 * Collects every layer's weights through `read` (the layer's datasets, in Keras' variable order) under their TF.js
 * names, checking count and shapes against what the layer needs.
 * @throws GdpError BAD_KERAS_FILE naming the file, the layer and the weight.
 */
function collectWeights(g: Omit<ImportedGraph, 'weights'>, source: string, read: (n: ImportedNode) => Floats[]): Weights {
  const byName = new Map(g.nodes.map((n) => [n.name, n]));
  const out: Weights = new Map();
  for (const n of g.nodes) {
    const want = expectedWeights(n, n.inputs.length ? byName.get(n.inputs[0])!.shape : n.shape);
    if (!want.length) continue;
    const got = read(n);
    if (got.length !== want.length)
      throw new GdpError(
        'BAD_KERAS_FILE',
        `${source}: layer '${n.name}' (${n.className}) has ${got.length} weights, it needs ${want.length} (${want.map(([w]) => w).join(', ')})`,
      );
    want.forEach(([name, shape], i) => {
      if (got[i].shape.join('x') !== shape.join('x'))
        throw new GdpError('BAD_KERAS_FILE', `${source}: weight '${name}' has shape [${got[i].shape}], layer '${n.name}' needs [${shape}]`);
      out.set(name, got[i]);
    });
  }
  return out;
}

function parseJson(bytes: Uint8Array, what: string): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new GdpError('BAD_KERAS_FILE', `${what} is not JSON: ${(e as Error).message}`);
  }
}

function readBytes(path: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new GdpError('FILE_NOT_FOUND', `cannot read ${path}: ${(e as Error).message}`);
  }
}

/** The members of a `.keras` zip archive, by name. */
function unzipKeras(path: string): Record<string, Uint8Array> {
  const bytes = readBytes(path);
  try {
    return unzipSync(bytes);
  } catch (e) {
    throw new GdpError('BAD_KERAS_FILE', `${path}: not a .keras zip archive (${(e as Error).message})`);
  }
}

/** The Keras 2 form topology of a `.keras` archive's config.json (no HDF5 needed). */
function keras3Topology(path: string, files: Record<string, Uint8Array>): { raw: Record<string, unknown>; topology: Record<string, unknown> } {
  if (!files['config.json'])
    throw new GdpError('BAD_KERAS_FILE', `${path}: the archive has no config.json (members: ${Object.keys(files).join(', ') || 'none'})`);
  const raw = parseJson(files['config.json'], `${path}: config.json`) as Record<string, unknown>;
  return { raw, topology: toLayersTopology(raw, `${path}: config.json`) };
}

/** Runs `fn` on an HDF5 file given as bytes (h5wasm's Node build opens files by path: a temporary copy). */
function withHdf5Bytes<T>(bytes: Uint8Array, fn: (f: Group) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'gdp-keras-'));
  try {
    const file = join(dir, 'model.weights.h5');
    writeFileSync(file, bytes);
    return withHdf5File(file, 'r', fn);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The normalisation in a `.keras` archive's metadata.json (its `gdp` key, keras_export.ts); none without it. */
function keras3Normalisation(path: string, files: Record<string, Uint8Array>, channels: number): Normalisation | undefined {
  if (!files['metadata.json']) return undefined;
  const meta = parseJson(files['metadata.json'], `${path}: metadata.json`);
  const gdp = meta && typeof meta === 'object' ? (meta as Record<string, unknown>).gdp : undefined;
  return exportedNormalisation(gdp, channels, `${path}: metadata.json gdp`, 'BAD_KERAS_FILE');
}

/** The normalisation in a Keras 2 `.h5`'s root attribute `gdp` (JSON, keras_export.ts); none without it. */
function keras2Normalisation(path: string, f: Group, channels: number): Normalisation | undefined {
  if (!('gdp' in f.attrs)) return undefined;
  const json = stringAttr(f, 'gdp');
  if (json === undefined) throw new GdpError('BAD_KERAS_FILE', `${path}: root attribute 'gdp' is not a string (gdp writes JSON there)`);
  const gdp = parseJson(new TextEncoder().encode(json), `${path}: root attribute 'gdp'`);
  return exportedNormalisation(gdp, channels, `${path}: root attribute gdp`, 'BAD_KERAS_FILE');
}

function readKeras3Sync(path: string): TfjsModel {
  const files = unzipKeras(path);
  const { raw, topology } = keras3Topology(path, files);
  const g = parseLayersTopology(topology, path);
  const norm = keras3Normalisation(path, files, g.nodes[0].shape[2]);
  const h5 = files['model.weights.h5'];
  if (!h5) throw new GdpError('BAD_KERAS_FILE', `${path}: the archive has no model.weights.h5 (sharded weights are not read)`);
  const rawLayers = ((raw.config as Record<string, unknown>).layers as Record<string, unknown>[]).map((l) => ({
    className: String(l.class_name),
    name: String((l.config as Record<string, unknown>).name),
  }));
  // Sequential.layers leaves out the InputLayer; a functional model's list keeps it.
  const own = raw.class_name === 'Sequential' && rawLayers[0]?.className === 'InputLayer' ? rawLayers.slice(1) : rawLayers;
  const paths = keras3LayerPaths(own);
  const source = `${path}: model.weights.h5`;
  const weights = withHdf5Bytes(h5, (f) =>
    collectWeights(g, source, (n) => {
      const at = paths.get(n.name);
      const vars = at ? childGroup(f, `${at}/vars`) : undefined;
      if (!vars) throw new GdpError('BAD_KERAS_FILE', `${source}: no group '${at}/vars' for layer '${n.name}' (${n.className})`);
      const named = stringAttr(vars, 'name');
      if (named !== undefined && named !== n.name)
        throw new GdpError('BAD_KERAS_FILE', `${source}: '${at}/vars' holds layer '${named}', the config puts '${n.name}' there`);
      const out: Floats[] = [];
      for (let i = 0; childDataset(vars, String(i)); i++) out.push(readFloats(childDataset(vars, String(i))!, `${source}: ${at}/vars/${i}`));
      return out;
    }),
  );
  return { topology, graph: { ...g, weights }, ...(norm && { norm }) };
}

function readKeras2Sync(path: string): TfjsModel {
  return withHdf5File(path, 'r', (f) => {
    const json = stringAttr(f, 'model_config');
    if (json === undefined)
      throw new GdpError('BAD_KERAS_FILE', `${path}: no 'model_config' attribute (a weights-only .h5 from save_weights has no architecture)`);
    const topology = toLayersTopology(parseJson(new TextEncoder().encode(json), `${path}: model_config`), `${path}: model_config`);
    const g = parseLayersTopology(topology, path);
    const norm = keras2Normalisation(path, f, g.nodes[0].shape[2]);
    const mw = childGroup(f, 'model_weights');
    if (!mw) throw new GdpError('BAD_KERAS_FILE', `${path}: no 'model_weights' group`);
    const weights = collectWeights(g, path, (n) => {
      const lg = childGroup(mw, n.name);
      if (!lg) throw new GdpError('BAD_KERAS_FILE', `${path}: no group 'model_weights/${n.name}' for layer '${n.name}' (${n.className})`);
      const names = stringListAttr(lg, 'weight_names') ?? [];
      return names.map((w) => {
        const d = childDataset(lg, w);
        if (!d) throw new GdpError('BAD_KERAS_FILE', `${path}: 'model_weights/${n.name}' lists weight '${w}' and holds no such dataset`);
        return readFloats(d, `${path}: model_weights/${n.name}/${w}`);
      });
    });
    return { topology, graph: { ...g, weights }, ...(norm && { norm }) };
  });
}

/**
 * Reads a Keras file (`.keras`, or legacy `.h5` / `.hdf5`) into its Keras 2 form topology and the importer's graph.
 * Needs `loadHdf5()` to have resolved (readKerasModel does that).
 * @throws GdpError FILE_NOT_FOUND; BAD_KERAS_FILE (not a zip / HDF5, missing members, attributes or groups, weight
 *   counts or shapes that do not fit the config, a malformed `gdp` entry or metadata.json that is not JSON) naming
 *   the file and what is wrong; BAD_TFJS_MODEL and UNSUPPORTED_LAYER from the topology, as for a TF.js model.
 */
export function readKerasModelSync(path: string): TfjsModel {
  return path.toLowerCase().endsWith('.keras') ? readKeras3Sync(path) : readKeras2Sync(path);
}

/** readKerasModelSync after loading the HDF5 library. Same errors. */
export async function readKerasModel(path: string): Promise<TfjsModel> {
  await loadHdf5();
  return readKerasModelSync(path);
}

/** A model file of either kind: Keras (by suffix) or a TF.js model.json (or its folder). */
export async function readImportedModel(path: string): Promise<TfjsModel> {
  return isKerasFile(path) ? readKerasModel(path) : readTfjsModel(path);
}

/**
 * readImportedModel for synchronous start-up code; a Keras file needs `loadHdf5()` to have resolved (the
 * coordinator's config loading does it for `model.file`).
 */
export function readImportedModelSync(path: string): TfjsModel {
  return isKerasFile(path) ? readKerasModelSync(path) : readTfjsModelSync(path);
}

/**
 * Only the Keras 2 form topology of a model file, as a config's `model.file` needs it: a `.keras` archive's comes
 * from its config.json without HDF5; others as readImportedModelSync.
 */
export function readImportedTopologySync(path: string): unknown {
  if (path.toLowerCase().endsWith('.keras')) return keras3Topology(path, unzipKeras(path)).topology;
  return readImportedModelSync(path).topology;
}
