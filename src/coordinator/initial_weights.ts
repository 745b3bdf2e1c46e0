import { readFileSync } from 'node:fs';
import type { Config } from '../shared/config/schema.js';
import { GdpError } from '../shared/errors.js';
import { layerWidths, loadModel, type LoadedModel, type Widths } from '../shared/io/model_file.js';
import type { Module } from '../shared/nn/module.js';
import { parseSafetensors } from '../shared/io/safetensors.js';
import { readImportedModelSync } from '../shared/io/keras_files.js';
import { GRAPH_ARCH, modelFromImport } from '../shared/models/graph_model.js';
import { Rng } from '../shared/rng.js';
import { BatchNorm2d } from '../shared/nn/layers.js';
import { configModel } from '../shared/models/registry.js';
import { channelStructure } from '../shared/pruning/groups.js';
import { applyMelt, planNarrowing, type MeltRecord } from '../shared/pruning/melt.js';
import { pruningUpdate } from '../shared/pruning/updates.js';
import type { Coordinator } from './cluster.js';

/**
 * The weights file a run starts from and the config key that names it: `model.weights` (gdp), the paper's
 * `base.checkpoint_path`, or else the imported TF.js model `model.file`. Undefined when the run starts afresh.
 * @throws GdpError BAD_CONFIG when model.weights and base.checkpoint_path name different files.
 */
export function initialWeightsSource(config: Config): { key: string; path: string } | undefined {
  const a = config.model.weights ?? config.model.file;
  const b = config.base.checkpoint_path || undefined;
  if (a && b && a !== b) {
    throw new GdpError('BAD_CONFIG', `model.weights ('${a}') and base.checkpoint_path ('${b}') name different files: set one`);
  }
  if (a) return { key: config.model.weights ? 'model.weights' : 'model.file', path: a };
  return b ? { key: 'base.checkpoint_path', path: b } : undefined;
}

/** The path of `initialWeightsSource`. */
export function initialWeightsPath(config: Config): string | undefined {
  return initialWeightsSource(config)?.path;
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

/** The starting weights as read, with the melt that narrows the config's full-width model to them (if pruned). */
export interface InitialWeights {
  loaded: LoadedModel;
  narrowing?: MeltRecord;
}

/**
 * Reads the run's starting weights and checks them against the config: the architecture it names, its class count
 * and its layer widths against `full`, the config's model as built (not yet loaded or pruned). A pruned file (melted:
 * `pruned.safetensors` or `finetuned.safetensors` of an earlier run) fits when every narrower layer belongs to a
 * prunable channel group of that model: `narrowing` then gives every replica those widths. The caller disposes
 * `loaded.model`.
 * @throws GdpError FILE_NOT_FOUND, BAD_SAFETENSORS, ARCH_MISMATCH, SHAPE_MISMATCH (and loadModel's codes).
 */
export function readInitialWeights(config: Config, path: string, full: { model: Module; inputShape: readonly number[] }): InitialWeights {
  const loaded = path === config.model.file && config.model.weights === undefined ? importedModel(path) : readWeightsFile(config, path);
  try {
    if (loaded.numClasses !== config.model.num_class) {
      throw new GdpError('SHAPE_MISMATCH', `${path}: the classifier has ${loaded.numClasses} classes, config.model.num_class is ${config.model.num_class}`);
    }
    const got = layerWidths(loaded.model);
    const fullWidths = layerWidths(full.model);
    const differs = (want: Widths) => Object.keys(want).filter((k) => want[k][0] !== got[k]?.[0] || want[k][1] !== got[k]?.[1]);
    if (!differs(fullWidths).length) return { loaded };
    const narrowing = planNarrowing(channelStructure(full.model, full.inputShape), got, path);
    const want = narrowing ? narrowedWidths(config, narrowing) : fullWidths;
    const changed = differs(want);
    if (changed.length) {
      throw new GdpError(
        'SHAPE_MISMATCH',
        `${path}: layer ${changed[0]} is [${got[changed[0]]}] (in, out), ${config.model.name} builds [${want[changed[0]]}]` +
          `${changed.length > 1 ? ` (and ${changed.length - 1} more layers)` : ''}: a run starts from the full-width network or a pruned form of it, gated or not`,
      );
    }
    return { loaded, narrowing };
  } catch (e) {
    loaded.model.dispose();
    throw e;
  }
}

/** The layer widths of the config's model after `narrowing`: the melt replayed on a model built for it. */
function narrowedWidths(config: Config, narrowing: MeltRecord): Widths {
  const { model } = configModel(config.model, 0);
  try {
    applyMelt(model, narrowing);
    return layerWidths(model);
  } finally {
    model.dispose();
  }
}

/**
 * Loads the run's starting weights into the coordinator's model before any worker joins; workers then receive them
 * with the rest of the state. Structure first, as replayable updates, so that workers build the same shapes: a
 * pruned file narrows the model (`readInitialWeights`), a file in the paper's gated form (e.g. a save point of an
 * earlier run) gates it; then every slot takes the file's values.
 */
export function loadInitialWeights(coordinator: Coordinator, path: string): { gated: boolean; pruned: boolean } {
  const { loaded, narrowing } = readInitialWeights(coordinator.config, path, coordinator.replica);
  try {
    const layers = [...loaded.model.namedModules()].filter(([, m]) => m instanceof BatchNorm2d && m.gated).map(([p]) => p);
    const updates = [...(narrowing ? [pruningUpdate(narrowing)] : []), ...(loaded.gated ? [pruningUpdate({ kind: 'gate', layers })] : [])];
    const slots = new Map([...loaded.model.namedSlots()].map(([name, s]) => [name, s.value.dataSync() as Float32Array]));
    coordinator.restore({ updates, slots, momentum: [], steps: 0 });
    return { gated: loaded.gated, pruned: narrowing !== undefined };
  } finally {
    loaded.model.dispose();
  }
}
