import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { GdpError } from '../errors.js';

export const MODEL_JSON = 'model.json';
export const WEIGHTS_BIN = 'weights.bin';

/** A save handler that writes a TF.js model directory (model.json + one weights.bin), as tfjs's converter lays it out. */
export function tfjsDirWriter(dir: string): tf.io.IOHandler {
  return tf.io.withSaveHandler(async (artifacts) => {
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

/**
 * A load handler for a TF.js model directory on disk: Node has no file:// handler without tfjs-node.
 * Works for layers and graph models; weight shards are read in manifest order.
 */
export function tfjsDirReader(dir: string): tf.io.IOHandler {
  return {
    load: async () => {
      let json: tf.io.ModelJSON;
      try {
        json = JSON.parse(await readFile(join(dir, MODEL_JSON), 'utf8'));
      } catch (e) {
        throw new GdpError('BAD_TFJS_MODEL', `cannot read ${join(dir, MODEL_JSON)}: ${(e as Error).message}`);
      }
      return tf.io.getModelArtifactsForJSON(json, async (manifest) => {
        const specs = manifest.flatMap((g) => g.weights);
        const shards = await Promise.all(manifest.flatMap((g) => g.paths).map(async (p) => {
          const b = await readFile(join(dir, p));
          return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
        }));
        return [specs, tf.io.CompositeArrayBuffer.join(shards)];
      });
    },
  };
}
