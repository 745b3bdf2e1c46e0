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
