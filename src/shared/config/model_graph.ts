import { readFileSync } from 'node:fs';
import { GdpError } from '../errors.js';
import { parseSafetensors } from '../io/safetensors.js';
import { readImportedTopologySync } from '../io/keras_files.js';
import { GRAPH_ARCH } from '../models/graph_model.js';
import type { Config } from './schema.js';

/**
 * Fills `model.graph` of a config whose model is an imported TF.js network (`model.name` 'graph'), so that the
 * coordinator's start-up checks, the data and every worker (which gets the config in its welcome) build the same
 * architecture without the file: from `model.file` (a TF.js layers model.json, or a Keras .keras / .h5 file whose
 * config gdp keeps in Keras 2 form; an .h5 needs loadHdf5() first, as loadConfigReady does) or else from the `graph` metadata of
 * `model.weights` (a `gdp-model import` output). Changes and returns `config`.
 * @throws GdpError BAD_CONFIG (model.file with another model.name; a 'graph' model with nothing to build it from),
 *   BAD_TFJS_MODEL, BAD_KERAS_FILE, UNSUPPORTED_LAYER (the model file), FILE_NOT_FOUND, BAD_METADATA (the weights file).
 */
export function resolveModelGraph(config: Config): Config {
  const m = config.model;
  if (m.file !== undefined) {
    if (m.name !== GRAPH_ARCH)
      throw new GdpError(
        'BAD_CONFIG',
        `model.file: an imported model trains as architecture '${GRAPH_ARCH}'; set model.name to '${GRAPH_ARCH}' (it is '${m.name}')`,
      );
    let topology: unknown;
    try {
      topology = readImportedTopologySync(m.file);
    } catch (e) {
      // The file's errors name the file; the key says where it was named.
      throw e instanceof GdpError ? new GdpError(e.code, `model.file: ${e.message}`) : e;
    }
    if (m.graph !== undefined && JSON.stringify(m.graph) !== JSON.stringify(topology)) {
      throw new GdpError('BAD_CONFIG', `model.graph differs from the topology of model.file (${m.file}): set one`);
    }
    m.graph = topology as Record<string, unknown>;
  } else if (m.name === GRAPH_ARCH && m.graph === undefined && m.weights !== undefined) {
    let bytes: Uint8Array;
    try {
      bytes = readFileSync(m.weights);
    } catch (e) {
      throw new GdpError('FILE_NOT_FOUND', `model.weights: cannot read ${m.weights}: ${(e as Error).message}`);
    }
    const graph = parseSafetensors(bytes, m.weights).metadata.graph;
    if (graph === undefined) throw new GdpError('BAD_METADATA', `model.weights: ${m.weights} has no 'graph' metadata (not a gdp-model import output)`);
    try {
      m.graph = JSON.parse(graph) as Record<string, unknown>;
    } catch (e) {
      throw new GdpError('BAD_METADATA', `model.weights: ${m.weights}: metadata field 'graph' is not JSON (${(e as Error).message})`);
    }
  }
  return config;
}
