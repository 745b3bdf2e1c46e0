import { readFileSync } from 'node:fs';
import type { Config } from '../shared/config/schema.js';
import { GdpError } from '../shared/errors.js';
import { layerWidths, loadModel, type LoadedModel, type Widths } from '../shared/io/model_file.js';
import { parseSafetensors } from '../shared/io/safetensors.js';
import { readImportedModelSync } from '../shared/io/keras_files.js';
import { GRAPH_ARCH, modelFromImport } from '../shared/models/graph_model.js';
import { Rng } from '../shared/rng.js';
import { BatchNorm2d } from '../shared/nn/layers.js';
import { pruningUpdate } from '../shared/pruning/updates.js';
import type { Coordinator } from './cluster.js';

/**
 * The weights file a run starts from: `model.weights` (gdp), the paper's `base.checkpoint_path`, or else the
 * imported TF.js model `model.file`.
 */
export function initialWeightsPath(config: Config): string | undefined {
  const a = config.model.weights ?? config.model.file;
  const b = config.base.checkpoint_path || undefined;
  if (a && b && a !== b) {
    throw new GdpError('BAD_CONFIG', `model.weights ('${a}') and base.checkpoint_path ('${b}') name different files: set one`);
  }
  return a ?? b;
}

function readWeightsFile(config: Config, path: string): LoadedModel {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new GdpError('FILE_NOT_FOUND', `model.weights: cannot read ${path}: ${(e as Error).message}`);
  }
  return loadModel(parseSafetensors(bytes, path), { arch: config.model.name }, path);
}

/** The TF.js or Keras model of `model.file` with its weights, as `gdp-model import` reads it. */
function importedModel(path: string): LoadedModel {
  const { topology, graph } = readImportedModelSync(path);
  const model = modelFromImport(topology, graph, new Rng(0), path);
  return { model, arch: GRAPH_ARCH, numClasses: model.numClasses, inputShape: model.inputShape, gated: false, metadata: {} };
}

/**
 * Reads the run's starting weights and checks them against the config: the architecture it names, its class count
 * and `want` (the widths the config's model builds, [in, out] by layer path). The caller disposes the model.
 * @throws GdpError FILE_NOT_FOUND, BAD_SAFETENSORS, ARCH_MISMATCH, SHAPE_MISMATCH (and loadModel's codes).
 */
export function readInitialWeights(config: Config, path: string, want: Widths): LoadedModel {
  const loaded = path === config.model.file && config.model.weights === undefined ? importedModel(path) : readWeightsFile(config, path);
  try {
    if (loaded.numClasses !== config.model.num_class) {
      throw new GdpError('SHAPE_MISMATCH', `${path}: the classifier has ${loaded.numClasses} classes, config.model.num_class is ${config.model.num_class}`);
    }
    const got = layerWidths(loaded.model);
    const changed = Object.keys(want).filter((k) => want[k][0] !== got[k]?.[0] || want[k][1] !== got[k]?.[1]);
    if (changed.length) {
      throw new GdpError(
        'SHAPE_MISMATCH',
        `${path}: layer ${changed[0]} is [${got[changed[0]]}] (in, out), ${config.model.name} builds [${want[changed[0]]}]` +
          `${changed.length > 1 ? ` (and ${changed.length - 1} more layers)` : ''}: a run starts from a full-width network, gated or not`,
      );
    }
    return loaded;
  } catch (e) {
    loaded.model.dispose();
    throw e;
  }
}

/**
 * Loads the run's starting weights into the coordinator's model before any worker joins; workers then receive them
 * with the rest of the state. A file in the paper's gated form (e.g. a save point of an earlier run) gates the
 * model first, as a replayable update, so that workers build the same structure. The file must hold the
 * architecture the config names at its full widths: a melted network has other layer shapes than the workers
 * build from the config.
 */
export function loadInitialWeights(coordinator: Coordinator, path: string): { gated: boolean } {
  const loaded = readInitialWeights(coordinator.config, path, layerWidths(coordinator.model));
  try {
    // The starting state: gated first when the file is (so that workers replay the same structure), then every slot.
    const layers = [...loaded.model.namedModules()].filter(([, m]) => m instanceof BatchNorm2d && m.gated).map(([p]) => p);
    const slots = new Map([...loaded.model.namedSlots()].map(([name, s]) => [name, s.value.dataSync() as Float32Array]));
    coordinator.restore({ updates: loaded.gated ? [pruningUpdate({ kind: 'gate', layers })] : [], slots, momentum: [], steps: 0 });
    return { gated: loaded.gated };
  } finally {
    loaded.model.dispose();
  }
}
