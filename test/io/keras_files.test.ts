import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { unzipSync, zipSync } from 'fflate';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import h5wasm, { type Group } from 'h5wasm/node';
import { initBackend } from '../../src/shared/backend.js';
import { GdpError } from '../../src/shared/errors.js';
import { exportGraphKeras } from '../../src/shared/io/keras_export.js';
import { readKerasModel, snakeCase } from '../../src/shared/io/keras_files.js';
import { exportedInputMetadata } from '../../src/shared/io/model_file.js';
import { readTfjsModel, tfjsDirWriter } from '../../src/shared/io/tfjs_files.js';
import { graphArtifacts } from '../../src/shared/io/tfjs_graph_export.js';
import { modelFromImport, type GraphModel } from '../../src/shared/models/graph_model.js';
import { predictLogits } from '../../src/shared/models/infer.js';
import { maxAbsDiff } from '../helpers.js';
import { Rng } from '../../src/shared/rng.js';
import { keras3Config, writeKeras2H5, writeKeras3 } from './keras_writer.js';
import { flattenNet, mobileBlock, randomizeWeights } from './tfjs_models.js';

await initBackend('cpu');
const dir = await mkdtemp(join(tmpdir(), 'gdp-keras-'));
test.after(() => rm(dir, { recursive: true, force: true }));

/** The stock model's logits: its output without the final softmax, which gdp leaves out. */
function stockLogits(m: tf.LayersModel, x: tf.Tensor4D): Float32Array {
  return tf.tidy(() => {
    const last = m.layers[m.layers.length - 1];
    const fn = (last.getConfig() as { activation?: string }).activation;
    if (fn !== 'softmax') return (m.predict(x) as tf.Tensor).dataSync() as Float32Array;
    // The layer before the softmax: apply Dense without it (log of softmax differs by a constant per row).
    const probs = m.predict(x) as tf.Tensor2D;
    return tf.sub(tf.log(probs), tf.logSumExp(tf.log(probs), 1, true)).dataSync() as Float32Array;
  });
}

/** gdp's logits of an imported model, normalised as stockLogits does for a model ending in softmax. */
function gdpLogits(m: GraphModel, x: tf.Tensor4D): Float32Array {
  const logits = predictLogits(m, x.dataSync() as Float32Array, x.shape);
  if (!m.softmax) return logits;
  return tf.tidy(() => tf.logSoftmax(tf.tensor2d(logits, [x.shape[0], m.numClasses])).dataSync() as Float32Array);
}

async function importKeras(path: string): Promise<GraphModel> {
  const { topology, graph } = await readKerasModel(path);
  return modelFromImport(topology, graph, new Rng(0), path);
}

const builds = [
  ['mobile_block', mobileBlock],
  ['flatten_net', flattenNet],
] as const;

for (const [name, build] of builds) {
  for (const format of ['keras', 'h5'] as const) {
    test(`${name} saved as .${format} in Keras' layout imports with the stock tf.layers model's logits (1e-5)`, async () => {
      const stock = build();
      randomizeWeights(stock, 3);
      const file = join(dir, `${name}.${format}`);
      await (format === 'keras' ? writeKeras3(stock, file) : writeKeras2H5(stock, file));
      const m = await importKeras(file);
      const x = tf.randomNormal([4, ...m.inputShape], 0, 1, 'float32', 5) as tf.Tensor4D;
      const [got, want] = [gdpLogits(m, x), stockLogits(stock, x)];
      assert.equal(got.length, want.length);
      assert.ok(maxAbsDiff(got, want) <= 1e-5, `max abs diff ${maxAbsDiff(got, want)}`);
      // The same graph as the TF.js import of the same model: one intermediate for both.
      await stock.save(tfjsDirWriter(join(dir, `${name}_${format}_tfjs`)));
      const viaTfjs = await readTfjsModel(join(dir, `${name}_${format}_tfjs`));
      const viaKeras = await readKerasModel(file);
      assert.deepEqual(viaKeras.graph.nodes, viaTfjs.graph.nodes);
      assert.deepEqual([...viaKeras.graph.weights.keys()].sort(), [...viaTfjs.graph.weights.keys()].sort());
      // Keras in, TF.js out: stock tf.loadLayersModel runs the export with the stock model's outputs.
      const web = await tf.loadLayersModel(tf.io.fromMemory(await graphArtifacts(m)));
      const [a, b] = tf.tidy(() => [web, stock].map((s) => (s.predict(x) as tf.Tensor).dataSync() as Float32Array));
      assert.ok(maxAbsDiff(a, b) <= 1e-4, `TF.js export: max abs diff ${maxAbsDiff(a, b)}`);
      web.dispose();
      tf.dispose(x);
      m.dispose();
      stock.dispose();
    });
  }
}

test("snakeCase follows Keras' naming.to_snake_case on layer class names", () => {
  assert.deepEqual(
    ['Conv2D', 'BatchNormalization', 'DepthwiseConv2D', 'SeparableConv2D', 'GlobalAveragePooling2D', 'ReLU', 'InputLayer', 'Dense'].map(snakeCase),
    ['conv2d', 'batch_normalization', 'depthwise_conv2d', 'separable_conv2d', 'global_average_pooling2d', 're_lu', 'input_layer', 'dense'],
  );
});

/** Expects readKerasModel(path) to fail with `code` and a message holding every one of `parts`. */
async function rejects(path: string, code: string, ...parts: string[]): Promise<void> {
  await assert.rejects(readKerasModel(path), (e: unknown) => {
    assert.ok(e instanceof GdpError, String(e));
    assert.equal(e.code, code, e.message);
    for (const p of parts) assert.ok(e.message.includes(p), `'${e.message}' lacks '${p}'`);
    return true;
  });
}

test('malformed Keras files stop the import with a coded error naming the file and what is wrong', async () => {
  const stock = mobileBlock();
  const at = (n: string) => join(dir, n);
  await writeFile(at('junk.keras'), 'not a zip');
  await rejects(at('junk.keras'), 'BAD_KERAS_FILE', at('junk.keras'), 'zip');
  await writeFile(at('junk.h5'), 'not hdf5');
  await rejects(at('junk.h5'), 'BAD_KERAS_FILE', at('junk.h5'), 'HDF5');
  await rejects(at('missing.h5'), 'FILE_NOT_FOUND', at('missing.h5'));

  await writeKeras3(stock, at('noweights.keras'), { drop: 'model.weights.h5' });
  await rejects(at('noweights.keras'), 'BAD_KERAS_FILE', at('noweights.keras'), 'model.weights.h5');
  await writeKeras3(stock, at('noconfig.keras'), { drop: 'config.json' });
  await rejects(at('noconfig.keras'), 'BAD_KERAS_FILE', 'config.json');
  type Layers = { layers: { class_name: string; config: Record<string, unknown> }[] };
  const layer = (c: Record<string, unknown>, name: string) => (c.config as Layers).layers.find((l) => l.config.name === name)!;
  // The config says the BN has no beta; the weights file holds 4 variables for it.
  await writeKeras3(stock, at('count.keras'), { config: (c) => (layer(c, 'stem_bn').config.center = false) });
  await rejects(at('count.keras'), 'BAD_KERAS_FILE', at('count.keras'), "'stem_bn'", 'has 4 weights, it needs 3');
  // The config's Dense has 5 units; the stored kernel 4.
  await writeKeras3(stock, at('shape.keras'), { config: (c) => (layer(c, 'fc').config.units = 5) });
  await rejects(at('shape.keras'), 'BAD_KERAS_FILE', "'fc/kernel'", '[5,4]', '[5,5]');
  // The vars group at the depthwise layer's place names another layer.
  await writeKeras3(stock, at('order.keras'), {
    h5: (f) => {
      const vars = f.get('layers/depthwise_conv2d/vars') as Group;
      vars.delete_attribute('name');
      vars.create_attribute('name', 'other');
    },
  });
  await rejects(at('order.keras'), 'BAD_KERAS_FILE', "'layers/depthwise_conv2d/vars' holds layer 'other'", "'dw'");
  await writeKeras2H5(stock, at('noconfig.h5'), (f) => f.delete_attribute('model_config'));
  await rejects(at('noconfig.h5'), 'BAD_KERAS_FILE', at('noconfig.h5'), 'model_config');
  await writeKeras2H5(stock, at('lost.h5'), (f) => {
    const g = f.get('model_weights/fc') as Group;
    g.delete_attribute('weight_names');
    g.create_attribute('weight_names', ['fc/kernel:0', 'fc/lost:0'], [2], 'S11');
  });
  await rejects(at('lost.h5'), 'BAD_KERAS_FILE', "'model_weights/fc' lists weight 'fc/lost:0'");
  // An unsupported layer stops the import as it does for TF.js.
  const leaky = tf.sequential({
    layers: [tf.layers.conv2d({ inputShape: [4, 4, 1], filters: 2, kernelSize: 3, name: 'c' }), tf.layers.leakyReLU({ name: 'leaky' })],
  });
  await writeKeras3(leaky, at('leaky.keras'));
  await rejects(at('leaky.keras'), 'UNSUPPORTED_LAYER', "'leaky'", 'LeakyReLU');
  stock.dispose();
  leaky.dispose();
});

/** The `gdp` entry an exported Keras file holds: metadata.json's key (.keras), the root attribute (.h5). */
function recordedGdp(path: string): unknown {
  if (path.endsWith('.keras')) return JSON.parse(new TextDecoder().decode(unzipSync(readFileSync(path))['metadata.json'])).gdp;
  const f = new h5wasm.File(path, 'r');
  try {
    return 'gdp' in f.attrs ? JSON.parse(String(f.attrs.gdp.value)) : undefined;
  } finally {
    f.close();
  }
}

for (const suffix of ['keras', 'h5'] as const) {
  test(`export --keras .${suffix}: gdp reads its own Keras file back with the same topology, logits and normalisation`, async () => {
    const stock = mobileBlock();
    randomizeWeights(stock, 9);
    const src = join(dir, `rt_src.${suffix === 'keras' ? 'h5' : 'keras'}`);
    await (suffix === 'keras' ? writeKeras2H5(stock, src) : writeKeras3(stock, src));
    const m = await importKeras(src);
    const out = join(dir, `rt_out.${suffix}`);
    const norm = { mean: [0.25, 0.5, 0.1], std: [0.125, 0.3333333333333333, 1] };
    const r = await exportGraphKeras(m, out, { norm });
    assert.ok(r.bytes > 0);
    // The normalisation sits where Keras keeps what it does not read: metadata.json, or a root attribute of the .h5.
    assert.deepEqual(recordedGdp(out), { input: { layout: 'NHWC', pixels: '[0, 1]', ...norm } });
    if (suffix === 'keras') assert.deepEqual(Object.keys(unzipSync(await readFile(out))).sort(), ['config.json', 'metadata.json', 'model.weights.h5']);
    assert.deepEqual((await readKerasModel(out)).norm, norm, 'bit for bit');
    assert.equal((await readKerasModel(src)).norm, undefined, 'a Keras file without it loads without one');
    const back = await importKeras(out);
    assert.deepEqual(back.graph.nodes, m.graph.nodes);
    const x = tf.randomNormal([3, ...m.inputShape], 0, 1, 'float32', 2) as tf.Tensor4D;
    const [a, b] = [gdpLogits(m, x), gdpLogits(back, x)];
    assert.ok(maxAbsDiff(a, b) <= 1e-6, `max abs diff ${maxAbsDiff(a, b)}`);
    assert.ok(maxAbsDiff(a, stockLogits(stock, x)) <= 1e-5);
    tf.dispose(x);
    [m, back].forEach((g) => g.dispose());
    stock.dispose();
  });
}

test('a malformed gdp entry in a Keras file stops the import with BAD_KERAS_FILE naming the file and the field', async () => {
  const stock = mobileBlock();
  await writeKeras3(stock, join(dir, 'entry_src.keras'));
  const m = await importKeras(join(dir, 'entry_src.keras'));
  const norm = { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] };
  const good = join(dir, 'entry.keras');
  await exportGraphKeras(m, good, { norm });
  /** `good` with its metadata.json's gdp entry replaced by `gdp`. */
  const withEntry = async (name: string, gdp: unknown) => {
    const members = unzipSync(await readFile(good));
    const meta = JSON.parse(new TextDecoder().decode(members['metadata.json']));
    members['metadata.json'] = new TextEncoder().encode(JSON.stringify({ ...meta, gdp }));
    await writeFile(join(dir, name), zipSync(members, { level: 0 }));
    return join(dir, name);
  };
  const input = exportedInputMetadata(norm).input;
  await rejects(
    await withEntry('count.keras', { input: { ...input, mean: [0.5, 0.5] } }),
    'BAD_KERAS_FILE',
    'count.keras',
    'metadata.json gdp.input.mean',
    '3 channel(s)',
  );
  await rejects(await withEntry('flat.keras', { input: { ...input, std: [1, 0, 1] } }), 'BAD_KERAS_FILE', 'gdp.input.std must be positive', 'channel 1');
  await rejects(await withEntry('nchw.keras', { input: { ...input, layout: 'NCHW' } }), 'BAD_KERAS_FILE', "gdp.input.layout must be 'NHWC'", 'NCHW');
  await rejects(await withEntry('list.keras', [1, 2]), 'BAD_KERAS_FILE', 'metadata.json gdp must be an object');
  // An entry without `input` (a gdp export of weights that record no normalisation) reads as none.
  assert.equal((await readKerasModel(await withEntry('empty.keras', {}))).norm, undefined);
  await writeKeras2H5(stock, join(dir, 'entry.h5'), (f) => f.create_attribute('gdp', '{"input":'));
  await rejects(join(dir, 'entry.h5'), 'BAD_KERAS_FILE', 'entry.h5', "root attribute 'gdp' is not JSON");
  m.dispose();
  stock.dispose();
});

/** A Keras 3 config's structure: model class, outputs, and per layer its class, name, input shape and inbound layer names. */
function keras3Structure(config: Record<string, unknown>): unknown {
  const c = config.config as { layers: Record<string, unknown>[]; output_layers?: unknown };
  const names = (v: unknown): string[] =>
    Array.isArray(v)
      ? v.flatMap(names)
      : v && typeof v === 'object'
        ? ((h) => (Array.isArray(h) ? [String(h[0])] : names(Object.values(v as object))))(
            (v as { config?: { keras_history?: unknown } }).config?.keras_history,
          )
        : [];
  return {
    class_name: config.class_name,
    output_layers: JSON.stringify(c.output_layers ?? null).replace(/\[|\]/g, ''),
    layers: c.layers.map((l) => {
      const lc = l.config as Record<string, unknown>;
      return [
        l.module,
        l.class_name,
        lc.name,
        JSON.stringify(lc.batch_shape ?? null),
        (l.inbound_nodes as unknown[] | undefined)?.map((n) => names((n as { args: unknown }).args)),
      ];
    }),
  };
}

test("export --keras .keras writes the config.json structure of Keras 3's layout (as the test writer lays it out)", async () => {
  for (const build of [mobileBlock, flattenNet]) {
    const stock = build();
    await stock.save(tfjsDirWriter(join(dir, 'cfg_src')));
    const { topology, graph } = await readTfjsModel(join(dir, 'cfg_src'));
    const m = modelFromImport(topology, graph, new Rng(0), 'cfg_src');
    await exportGraphKeras(m, join(dir, 'cfg.keras'));
    const config = JSON.parse(new TextDecoder().decode(unzipSync(await readFile(join(dir, 'cfg.keras')))['config.json']));
    const want = keras3Structure(keras3Config(stock));
    // The Sequential's InputLayer name is Keras' default either way; the model names are tf.layers' own.
    assert.deepEqual(keras3Structure(config), want);
    m.dispose();
    stock.dispose();
  }
});
