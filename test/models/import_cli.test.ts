import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/shared/backend.js';
import { GdpError } from '../../src/shared/errors.js';
import { tfjsDirReader, tfjsDirWriter } from '../../src/shared/io/tfjs_files.js';
import { resolveModelGraph } from '../../src/shared/config/model_graph.js';
import { parseConfig } from '../../src/shared/config/load.js';
import { configModel } from '../../src/shared/models/registry.js';
import { maxAbsDiff } from '../helpers.js';
import { flattenNet, randomizeWeights } from '../io/tfjs_models.js';
import { writeKeras2H5, writeKeras3 } from '../io/keras_writer.js';
import { loadHdf5 } from '../../src/shared/io/hdf5.js';
import { loadModelFile, saveModelFile } from '../../src/shared/io/model_file.js';
import { readKerasModel } from '../../src/shared/io/keras_files.js';
import { parseLayersTopology } from '../../src/shared/io/tfjs_graph.js';
import { modelFromImport } from '../../src/shared/models/graph_model.js';
import { predictLogits } from '../../src/shared/models/infer.js';
import { Rng } from '../../src/shared/rng.js';
import { readInitialWeights } from '../../src/coordinator/initial_weights.js';
import { gdpModel } from './gdp_model.js';

await initBackend('cpu');
const dir = await mkdtemp(join(tmpdir(), 'gdp-import-cli-'));
test.after(() => rm(dir, { recursive: true, force: true }));

test('gdp-model import, info and export: a TF.js model round-trips through the command line with the same outputs', async () => {
  const stock = flattenNet();
  randomizeWeights(stock, 5);
  await stock.save(tfjsDirWriter(join(dir, 'net')));
  const file = join(dir, 'net.safetensors');
  const r = await gdpModel('import', '--tfjs', join(dir, 'net', 'model.json'), '--out', file, '--json', '--backend', 'cpu');
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.deepEqual([out.numClasses, out.inputShape, out.softmax], [2, [9, 8, 2], false]);
  const info = await gdpModel('info', '--weights', file, '--backend', 'cpu');
  assert.equal(info.code, 0, info.stderr);
  assert.match(info.stdout, /model: graph, 2 classes, input 9x8x2/);
  const e = await gdpModel('export', '--weights', file, '--out', join(dir, 'web'), '--backend', 'cpu');
  assert.equal(e.code, 0, e.stderr);
  const back = await tf.loadLayersModel(tfjsDirReader(join(dir, 'web')));
  const x = tf.randomNormal([3, 9, 8, 2], 0, 1, 'float32', 11);
  const [a, b] = [stock.predict(x) as tf.Tensor, back.predict(x) as tf.Tensor];
  assert.ok(maxAbsDiff(a.dataSync(), b.dataSync()) <= 1e-4);
  tf.dispose([x, a, b]);
  back.dispose();
  stock.dispose();
});

test('an unsupported layer stops the import with exit 2 and UNSUPPORTED_LAYER naming layer, class and option', async () => {
  const m = tf.sequential({
    layers: [tf.layers.depthwiseConv2d({ inputShape: [8, 8, 2], kernelSize: 3, depthMultiplier: 2, name: 'dw2' }), tf.layers.flatten()],
  });
  await m.save(tfjsDirWriter(join(dir, 'bad')));
  m.dispose();
  const r = await gdpModel('import', '--tfjs', join(dir, 'bad', 'model.json'), '--out', join(dir, 'bad.safetensors'), '--backend', 'cpu');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /UNSUPPORTED_LAYER.*'dw2' \(DepthwiseConv2D\): depth_multiplier 2/);
});

test("a config's model.file fills model.graph (from the TF.js file), and so does model.weights (from an import's metadata)", async () => {
  const stock = flattenNet();
  await stock.save(tfjsDirWriter(join(dir, 'cfg')));
  stock.dispose();
  const base = {
    base: { task_name: 't' },
    train: { max_epoch: 1, steplr: [[1, 0.1]] },
    data: { type: 'mnist', batch_size: 8, test_batch_size: 8 },
    loss: { criterion: 'softmax' },
  };
  const fromFile = resolveModelGraph(parseConfig({ ...base, model: { name: 'graph', num_class: 2, file: join(dir, 'cfg', 'model.json') } }));
  assert.ok(fromFile.model.graph);
  const built = configModel(fromFile.model, 0);
  assert.deepEqual(built.inputShape, [9, 8, 2]);
  built.model.dispose();

  const file = join(dir, 'cfg.safetensors');
  assert.equal((await gdpModel('import', '--tfjs', join(dir, 'cfg'), '--out', file, '--backend', 'cpu')).code, 0);
  const fromWeights = resolveModelGraph(parseConfig({ ...base, model: { name: 'graph', num_class: 2, weights: file } }));
  assert.deepEqual(fromWeights.model.graph, fromFile.model.graph);

  const code = (f: () => unknown) => assert.throws(f, (e: unknown) => e instanceof GdpError && /model\./.test(e.message) && e.code === 'BAD_CONFIG');
  code(() => resolveModelGraph(parseConfig({ ...base, model: { name: 'mnist.resnet20', num_class: 2, file: join(dir, 'cfg', 'model.json') } })));
  code(() => configModel({ ...fromFile.model, num_class: 10 }, 0));
  code(() => configModel({ name: 'graph', num_class: 2 }, 0));
});

test('gdp-model import --keras and export --keras: .keras and .h5 through the command line; a config takes either as model.file', async () => {
  const stock = flattenNet();
  randomizeWeights(stock, 8);
  await writeKeras3(stock, join(dir, 'net.keras'));
  await writeKeras2H5(stock, join(dir, 'net.h5'));
  const file = join(dir, 'keras.safetensors');
  const r = await gdpModel('import', '--keras', join(dir, 'net.keras'), '--out', file, '--json', '--backend', 'cpu');
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout).inputShape, [9, 8, 2]);
  const e = await gdpModel('export', '--weights', file, '--keras', join(dir, 'back.h5'), '--backend', 'cpu');
  assert.equal(e.code, 0, e.stderr);
  assert.match(e.stdout, /wrote .*back\.h5/);
  const x = tf.randomNormal([3, 9, 8, 2], 0, 1, 'float32', 4);
  const want = tf.tidy(() => (stock.predict(x) as tf.Tensor).dataSync() as Float32Array);
  const back = await readKerasModel(join(dir, 'back.h5'));
  const m = modelFromImport(back.topology, back.graph, new Rng(0), 'back.h5');
  assert.ok(maxAbsDiff(predictLogits(m, x.dataSync() as Float32Array, [3, 9, 8, 2]), want) <= 1e-5);
  m.dispose();

  const both = await gdpModel('import', '--keras', join(dir, 'net.keras'), '--tfjs', join(dir, 'net'), '--out', file, '--backend', 'cpu');
  assert.equal(both.code, 2);
  assert.match(both.stderr, /BAD_FLAG/);

  const base = {
    base: { task_name: 't' },
    train: { max_epoch: 1, steplr: [[1, 0.1]] },
    data: { type: 'mnist', batch_size: 8, test_batch_size: 8 },
    loss: { criterion: 'softmax' },
  };
  await loadHdf5();
  const graphs = ['net.keras', 'net.h5'].map((f) => {
    const c = resolveModelGraph(parseConfig({ ...base, model: { name: 'graph', num_class: 2, file: join(dir, f) } }));
    const built = configModel(c.model, 0);
    // The run's starting weights come from the Keras file, as for a TF.js model.json.
    const { loaded, narrowing } = readInitialWeights(c, join(dir, f), built);
    assert.equal(narrowing, undefined);
    assert.ok(maxAbsDiff(predictLogits(loaded.model, x.dataSync() as Float32Array, [3, 9, 8, 2]), want) <= 1e-5, f);
    loaded.model.dispose();
    built.model.dispose();
    return parseLayersTopology(c.model.graph, f).nodes;
  });
  // The two files spell the config in Keras 3 and Keras 2 form: the same graph.
  assert.deepEqual(graphs[0], graphs[1]);
  tf.dispose(x);
  stock.dispose();
});

test('gdp-model export then import (--keras .keras / .h5, TF.js) keeps the input normalisation; a file without one imports without one', async () => {
  const stock = flattenNet();
  randomizeWeights(stock, 6);
  await writeKeras3(stock, join(dir, 'plain.keras'));
  stock.dispose();
  const plain = join(dir, 'plain.safetensors');
  const r = await gdpModel('import', '--keras', join(dir, 'plain.keras'), '--out', plain, '--json', '--backend', 'cpu');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).normalisation, undefined);
  // The imported model as training would save it: with the normalisation its weights were trained with.
  const norm = { mean: [0.1, 0.30000000000000004], std: [0.2, 0.123456789] };
  const m = await loadModelFile(plain);
  const trained = join(dir, 'trained.safetensors');
  await saveModelFile(trained, m.model, { arch: m.arch, numClasses: m.numClasses, norm });
  m.model.dispose();
  for (const suffix of ['keras', 'h5', 'tfjs']) {
    // TF.js: model.json's userDefinedMetadata.gdp, read back as the Keras files' entry.
    const [flag, out] = suffix === 'tfjs' ? ['--tfjs', join(dir, 'normed_web')] : ['--keras', join(dir, `normed.${suffix}`)];
    const e = await gdpModel('export', '--weights', trained, flag === '--tfjs' ? '--out' : '--keras', out, '--backend', 'cpu');
    assert.equal(e.code, 0, e.stderr);
    assert.match(e.stdout, /input: \(pixel in \[0, 1\] - mean\) \/ std per channel, mean \[0\.100000, 0\.300000\]/);
    const back = join(dir, `normed_${suffix}.safetensors`);
    const i = await gdpModel('import', flag, out, '--out', back, '--json', '--backend', 'cpu');
    assert.equal(i.code, 0, i.stderr);
    assert.deepEqual(JSON.parse(i.stdout).normalisation, norm, suffix);
    const info = await gdpModel('info', '--weights', back, '--json', '--backend', 'cpu');
    assert.deepEqual(JSON.parse(info.stdout).normalisation, norm, `${suffix}: the imported model file records it, bit for bit`);
  }
  const e = await gdpModel('export', '--weights', plain, '--keras', join(dir, 'plain_out.h5'), '--backend', 'cpu');
  assert.match(e.stdout, /records no input normalisation: .*plain_out\.h5 carries none/);
  const i = await gdpModel('import', '--keras', join(dir, 'plain_out.h5'), '--out', join(dir, 'plain_again.safetensors'), '--backend', 'cpu');
  assert.equal(i.code, 0, i.stderr);
  assert.match(i.stdout, /input normalisation: not recorded/);
});
