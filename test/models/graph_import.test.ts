import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/shared/backend.js';
import { GdpError } from '../../src/shared/errors.js';
import { modelCost } from '../../src/shared/graph/flops.js';
import { loadModelFile, saveModelFile, type LoadedModel } from '../../src/shared/io/model_file.js';
import { tfjsDirReader, tfjsDirWriter } from '../../src/shared/io/tfjs_files.js';
import { exportGraphTfjs } from '../../src/shared/io/tfjs_graph_export.js';
import { GraphModel } from '../../src/shared/models/graph_model.js';
import { maxAbsDiff, addGates } from '../helpers.js';
import { predictLogits } from '../../src/shared/models/infer.js';
import { bnAt, maskChannels } from '../../src/shared/pruning/gates.js';
import { channelStructure, prunableGroups } from '../../src/shared/pruning/groups.js';
import { melt } from '../../src/shared/pruning/melt.js';
import { importTfjsFile } from '../../src/model/import_tfjs.js';
import { flattenNet, mobileBlock, randomizeWeights, tinyMobileNetV2 } from '../io/tfjs_models.js';

await initBackend('cpu');
const dir = await mkdtemp(join(tmpdir(), 'gdp-graph-import-'));
test.after(() => rm(dir, { recursive: true, force: true }));

/** Seeded NHWC images for a model's input. */
function images(n: number, [h, w, c]: readonly number[]): { x: Float32Array; shape: [number, number, number, number] } {
  return tf.tidy(() => ({ x: tf.randomNormal([n, h, w, c], 0, 1, 'float32', 7).dataSync() as Float32Array, shape: [n, h, w, c] }));
}

/** Stock TF.js predictions of `m` on the images. */
function stockPredict(m: tf.LayersModel, x: Float32Array, shape: readonly number[]): Float32Array {
  return tf.tidy(() => (m.predict(tf.tensor(x, [...shape])) as tf.Tensor).dataSync() as Float32Array);
}

/** gdp's outputs as the Keras model gives them: softmax of the logits when the imported model ended in one. */
function gdpOutputs(m: LoadedModel, x: Float32Array, shape: [number, number, number, number]): Float32Array {
  const logits = predictLogits(m.model, x, shape);
  if (!(m.model instanceof GraphModel) || !m.model.softmax) return logits;
  return tf.tidy(() => tf.softmax(tf.tensor2d(logits, [shape[0], m.numClasses])).dataSync() as Float32Array);
}

/** Saves a stock model (weights randomised), imports it with `gdp-model import`'s code and loads the gdp file. */
async function saveAndImport(m: tf.LayersModel, name: string): Promise<{ file: string; loaded: LoadedModel }> {
  randomizeWeights(m);
  await m.save(tfjsDirWriter(join(dir, name)));
  const file = join(dir, `${name}.safetensors`);
  await importTfjsFile(join(dir, name, 'model.json'), file);
  return { file, loaded: await loadModelFile(file) };
}

/** Exports a gdp graph model and loads it back with stock tf.loadLayersModel. */
async function exportAndLoad(m: LoadedModel, name: string): Promise<tf.LayersModel> {
  await exportGraphTfjs(m.model as GraphModel, tfjsDirWriter(join(dir, name)));
  return tf.loadLayersModel(tfjsDirReader(join(dir, name)));
}

const layerSignature = (m: tf.LayersModel) => m.layers.map((l) => `${l.name}:${l.getClassName()}`);

for (const [name, build] of [
  ['mobile_block', mobileBlock],
  ['flatten_net', flattenNet],
] as const) {
  test(`${name}: the imported model gives stock TF.js's outputs, and its export loads into stock TF.js with the same layers and outputs`, async () => {
    const stock = build();
    const { loaded } = await saveAndImport(stock, name);
    const { x, shape } = images(5, loaded.inputShape);
    const want = stockPredict(stock, x, shape);
    const got = gdpOutputs(loaded, x, shape);
    assert.ok(maxAbsDiff(got, want) <= 1e-4, `import: max abs diff ${maxAbsDiff(got, want)}`);

    const back = await exportAndLoad(loaded, `${name}_export`);
    assert.deepEqual(layerSignature(back), layerSignature(stock));
    const again = stockPredict(back, x, shape);
    assert.ok(maxAbsDiff(again, want) <= 1e-4, `export: max abs diff ${maxAbsDiff(again, want)}`);
    back.dispose();
    stock.dispose();
    loaded.model.dispose();
  });
}

test('an imported MobileNetV2-style model prunes: masked export = masked gdp model, melted = masked, fewer MACs, same layer classes', async () => {
  const stock = tinyMobileNetV2([16, 16, 1], 3);
  const { loaded } = await saveAndImport(stock, 'tiny_mnv2');
  const { model, inputShape } = loaded;
  const { x, shape } = images(4, inputShape);
  addGates(model);
  const groups = prunableGroups(channelStructure(model, inputShape));
  // The stem group (tied to the residual), every expansion and the head can lose channels.
  assert.ok(groups.length >= 4, `prunable groups: ${groups.map((g) => g.id)}`);
  for (const g of groups)
    for (const bn of g.bns)
      maskChannels(
        bnAt(model, bn),
        [0, 2, 3].filter((c) => c < g.width - 1),
        bn,
      );
  const masked = gdpOutputs(loaded, x, shape);
  const maskedBack = await exportAndLoad(loaded, 'tiny_masked');
  assert.ok(maxAbsDiff(stockPredict(maskedBack, x, shape), masked) <= 1e-4, 'masked export');
  maskedBack.dispose();

  const before = modelCost(model, inputShape).macs;
  melt(model, inputShape);
  assert.ok(modelCost(model, inputShape).macs < before);
  const melted = gdpOutputs(loaded, x, shape);
  assert.ok(maxAbsDiff(melted, masked) <= 1e-4, `melted vs masked ${maxAbsDiff(melted, masked)}`);

  // Through a file, as `gdp-model melt` then `export` do: the graph travels in the metadata.
  const file = join(dir, 'tiny_melted.safetensors');
  await saveModelFile(file, model, { arch: loaded.arch, numClasses: loaded.numClasses });
  const reloaded = await loadModelFile(file);
  const back = await exportAndLoad(reloaded, 'tiny_melted');
  assert.deepEqual(layerSignature(back), layerSignature(stock));
  assert.ok((back.getLayer('head').getConfig().filters as number) < (stock.getLayer('head').getConfig().filters as number));
  assert.ok(maxAbsDiff(stockPredict(back, x, shape), melted) <= 1e-4, 'melted export');
  for (const m of [back, stock]) m.dispose();
  model.dispose();
  reloaded.model.dispose();
});

test('a non-square kernel stops the import with UNSUPPORTED_LAYER naming the layer and option, before anything runs', async () => {
  const m = tf.sequential({
    layers: [tf.layers.conv2d({ inputShape: [6, 6, 1], filters: 2, kernelSize: [3, 1], name: 'tall' }), tf.layers.flatten(), tf.layers.dense({ units: 2 })],
  });
  await m.save(tfjsDirWriter(join(dir, 'tall')));
  m.dispose();
  await assert.rejects(importTfjsFile(join(dir, 'tall', 'model.json'), join(dir, 'tall.safetensors')), (e: unknown) => {
    assert.ok(e instanceof GdpError && e.code === 'UNSUPPORTED_LAYER', String(e));
    assert.match(e.message, /'tall' \(Conv2D\): kernel_size \[3,1\]/);
    return true;
  });
});
