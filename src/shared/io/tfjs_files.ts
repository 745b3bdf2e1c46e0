import { readFileSync, statSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { Normalisation } from '../data/transforms.js';
import { GdpError } from '../errors.js';
import { exportedNormalisation } from './model_file.js';
import { readLayersTopology, type ImportedGraph } from './tfjs_graph.js';

export const MODEL_JSON = 'model.json';
export const WEIGHTS_BIN = 'weights.bin';

/**
 * A save handler that writes a TF.js model directory (model.json + one weights.bin), as tfjs's converter lays it out.
 * `userDefinedMetadata` is merged over the model's own into model.json's `userDefinedMetadata` (gdp-model export: the
 * input normalisation), which `tf.loadLayersModel` returns from `getUserDefinedMetadata()`.
 */
export function tfjsDirWriter(dir: string, userDefinedMetadata?: Record<string, unknown>): tf.io.IOHandler {
  return tf.io.withSaveHandler(async (saved) => {
    const merged = userDefinedMetadata ? { ...(saved.userDefinedMetadata ?? {}), ...userDefinedMetadata } : saved.userDefinedMetadata;
    const artifacts = { ...saved, userDefinedMetadata: merged };
    const weights = tf.io.CompositeArrayBuffer.join(artifacts.weightData as ArrayBuffer | ArrayBuffer[]);
    const modelJson = {
      modelTopology: artifacts.modelTopology,
      format: artifacts.format,
      generatedBy: artifacts.generatedBy,
      convertedBy: 'gdp-model export',
      weightsManifest: [{ paths: [WEIGHTS_BIN], weights: artifacts.weightSpecs }],
      ...(artifacts.userDefinedMetadata ? { userDefinedMetadata: artifacts.userDefinedMetadata } : {}),
    };
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, MODEL_JSON), JSON.stringify(modelJson));
    await writeFile(join(dir, WEIGHTS_BIN), new Uint8Array(weights));
    return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON', weightDataBytes: weights.byteLength } };
  });
}

/** A file of a TF.js model that cannot be read (absent, a folder, no permission): FILE_NOT_FOUND naming it. */
function unreadable(what: string, path: string, e: unknown): GdpError {
  return new GdpError('FILE_NOT_FOUND', `cannot read ${what} ${path}: ${(e as Error).message}`);
}

/**
 * A load handler for a TF.js model directory on disk: Node has no file:// handler without tfjs-node.
 * Works for layers and graph models; weight shards are read in manifest order. Its load throws FILE_NOT_FOUND (a file
 * cannot be read) and BAD_TFJS_MODEL (model.json is not JSON).
 */
export function tfjsDirReader(dir: string, file = MODEL_JSON): tf.io.IOHandler {
  return {
    load: async () => {
      const text = await readFile(join(dir, file), 'utf8').catch((e: unknown) => {
        throw unreadable('model', join(dir, file), e);
      });
      let json: tf.io.ModelJSON;
      try {
        json = JSON.parse(text);
      } catch (e) {
        throw new GdpError('BAD_TFJS_MODEL', `${join(dir, file)} is not JSON: ${(e as Error).message}`);
      }
      return tf.io.getModelArtifactsForJSON(json, async (manifest) => {
        const specs = manifest.flatMap((g) => g.weights);
        const shards = await Promise.all(
          manifest
            .flatMap((g) => g.paths)
            .map(async (p) => {
              const b = await readFile(join(dir, p)).catch((e: unknown) => {
                throw unreadable('weight shard', join(dir, p), e);
              });
              return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
            }),
        );
        return [specs, tf.io.CompositeArrayBuffer.join(shards)];
      });
    },
  };
}

/** A TF.js layers model as read from disk: its `modelTopology` as stored, and the importer's graph of it. */
export interface TfjsModel {
  topology: unknown;
  graph: ImportedGraph;
  /** The input normalisation the file records (gdp-model export's `gdp` entry, exportedNormalisation); undefined without one. */
  norm?: Normalisation;
}

/**
 * The folder and file name of a TF.js model's model.json: `path` itself when it ends in .json, else `path` is the folder
 * holding one. Throws BAD_TFJS_MODEL for another file (e.g. a script or a weights file), which is neither.
 */
function splitPath(path: string): [string, string] {
  if (path.endsWith('.json')) return [dirname(path), basename(path)];
  let file = false;
  try {
    file = statSync(path).isFile();
  } catch {
    // absent: reading model.json below reports it
  }
  if (file) {
    throw new GdpError(
      'BAD_TFJS_MODEL',
      `${path} is not a model gdp reads: give a TF.js layers model (its model.json, or the folder holding one) or a Keras .keras, .h5 or .hdf5 file`,
    );
  }
  return [path, MODEL_JSON];
}

/** The importer's graph of loaded model artifacts; see readTfjsModel for the errors. */
function modelFromArtifacts(artifacts: tf.io.ModelArtifacts, path: string): TfjsModel {
  if (artifacts.format === 'graph-model' || !artifacts.modelTopology || artifacts.modelTopology instanceof ArrayBuffer) {
    throw new GdpError(
      'BAD_TFJS_MODEL',
      `${path}: not a TF.js layers model (format '${artifacts.format ?? '?'}'); convert Keras models with tensorflowjs_converter --output_format tfjs_layers_model`,
    );
  }
  const data = artifacts.weightData ? tf.io.CompositeArrayBuffer.join(artifacts.weightData as ArrayBuffer | ArrayBuffer[]) : new ArrayBuffer(0);
  let weights: tf.NamedTensorMap;
  try {
    weights = tf.io.decodeWeights(data, artifacts.weightSpecs ?? []);
  } catch (e) {
    throw new GdpError('BAD_TFJS_MODEL', `${path}: its weights do not match the manifest: ${(e as Error).message}`);
  }
  let graph: ImportedGraph;
  try {
    graph = readLayersTopology(artifacts.modelTopology, weights, path);
  } finally {
    tf.dispose(Object.values(weights));
  }
  // gdp-model export's record of the input normalisation, checked against the input's channels (first node: [h, w, c]).
  const gdp = (artifacts.userDefinedMetadata as Record<string, unknown> | undefined)?.gdp;
  const norm = exportedNormalisation(gdp, graph.nodes[0].shape[2], `${path}: userDefinedMetadata.gdp`, 'BAD_TFJS_MODEL');
  return { topology: artifacts.modelTopology, graph, ...(norm && { norm }) };
}

/**
 * Reads a TF.js layers model from `path` (its model.json, or the folder holding one) with its weight shards: the
 * topology as stored (what a 'graph' architecture is built from) and the importer's graph (see
 * readLayersTopology), with the input normalisation a gdp export records (`userDefinedMetadata.gdp`). Quantized
 * weights are dequantized to float32 by tfjs. Throws FILE_NOT_FOUND (model.json or a weight shard cannot be read),
 * BAD_TFJS_MODEL (malformed files, a graph model, a malformed `gdp` entry) and UNSUPPORTED_LAYER.
 */
export async function readTfjsModel(path: string): Promise<TfjsModel> {
  const [dir, file] = splitPath(path);
  return modelFromArtifacts(await tfjsDirReader(dir, file).load!(), path);
}

/**
 * readTfjsModel without awaiting, for start-up code that runs synchronously (a config's `model.file`): reads
 * model.json and its shards (`weightsManifest` order) from disk. Same errors.
 */
export function readTfjsModelSync(path: string): TfjsModel {
  const [dir, file] = splitPath(path);
  const read = (p: string, what: string): Buffer => {
    try {
      return readFileSync(join(dir, p));
    } catch (e) {
      throw unreadable(what, join(dir, p), e);
    }
  };
  let json: tf.io.ModelJSON;
  try {
    json = JSON.parse(read(file, 'model').toString('utf8'));
  } catch (e) {
    if (e instanceof GdpError) throw e;
    throw new GdpError('BAD_TFJS_MODEL', `${join(dir, file)} is not JSON: ${(e as Error).message}`);
  }
  const manifest = Array.isArray(json.weightsManifest) ? json.weightsManifest : [];
  const shards = manifest
    .flatMap((g) => g.paths)
    .map((p) => {
      const b = read(p, 'weight shard');
      return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
    });
  return modelFromArtifacts(
    {
      modelTopology: json.modelTopology,
      format: json.format,
      weightSpecs: manifest.flatMap((g) => g.weights),
      weightData: tf.io.CompositeArrayBuffer.join(shards),
      userDefinedMetadata: json.userDefinedMetadata,
    },
    path,
  );
}
