import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/shared/backend.js';
import { readTfjsModel, tfjsDirWriter } from '../../src/shared/io/tfjs_files.js';
import { topologyLayers } from '../../src/shared/io/tfjs_graph.js';
import { graphArtifacts } from '../../src/shared/io/tfjs_graph_export.js';
import { modelFromImport, type GraphModel } from '../../src/shared/models/graph_model.js';
import { predictLogits } from '../../src/shared/models/infer.js';
import { maxAbsDiff } from '../helpers.js';
import { BatchNorm2d, Linear } from '../../src/shared/nn/layers.js';
import { Rng } from '../../src/shared/rng.js';
import { randomizeWeights } from './tfjs_models.js';

await initBackend('cpu');
const dir = await mkdtemp(join(tmpdir(), 'gdp-graph-export-'));
test.after(() => rm(dir, { recursive: true, force: true }));

type Sym = tf.SymbolicTensor;

/** A functional net whose layers leave out every optional weight: no conv/Dense bias, BNs without center or scale. */
function biasFree(): tf.LayersModel {
  const input = tf.input({ shape: [8, 8, 3], name: 'img' });
  let x = tf.layers.conv2d({ filters: 6, kernelSize: 3, padding: 'same', useBias: false, name: 'conv' }).apply(input) as Sym;
  x = tf.layers.batchNormalization({ center: false, scale: false, name: 'bn' }).apply(x) as Sym;
  x = tf.layers.reLU({ name: 'relu' }).apply(x) as Sym;
  x = tf.layers.depthwiseConv2d({ kernelSize: 3, useBias: false, name: 'dw' }).apply(x) as Sym;
  x = tf.layers.batchNormalization({ center: false, name: 'dw_bn' }).apply(x) as Sym;
  x = tf.layers.globalAveragePooling2d({ name: 'gap' }).apply(x) as Sym;
  const out = tf.layers.dense({ units: 3, useBias: false, name: 'fc' }).apply(x) as Sym;
  return tf.model({ inputs: input, outputs: out, name: 'bias_free' });
}

const OPTIONS = ['use_bias', 'center', 'scale'];

/** The bias/center/scale options of each layer of a topology that has one: `layer.option=value`. */
function options(topology: unknown): string[] {
  return (topologyLayers(topology) ?? []).flatMap((l) => {
    const c = l.config as Record<string, unknown>;
    return OPTIONS.filter((o) => o in c).map((o) => `${String(c.name)}.${o}=${String(c[o])}`);
  });
}

async function imported(stock: tf.LayersModel, name: string): Promise<{ model: GraphModel; topology: unknown }> {
  await stock.save(tfjsDirWriter(join(dir, name)));
  const { topology, graph } = await readTfjsModel(join(dir, name));
  return { model: modelFromImport(topology, graph, new Rng(0), name), topology };
}

const x = tf.randomNormal([4, 8, 8, 3], 0, 1, 'float32', 3) as tf.Tensor4D;
const predict = (m: tf.LayersModel) => tf.tidy(() => (m.predict(x) as tf.Tensor).dataSync() as Float32Array);

test('an imported model without biases exports with its own use_bias/center/scale options, weights and logits (stock tf.loadLayersModel)', async () => {
  const stock = biasFree();
  randomizeWeights(stock, 4);
  const { model, topology } = await imported(stock, 'bias_free');
  const notes: string[] = [];
  const artifacts = await graphArtifacts(model, (l) => notes.push(l));
  assert.deepEqual(options(artifacts.modelTopology), options(topology));
  assert.deepEqual(options(artifacts.modelTopology), [
    'conv.use_bias=false',
    'bn.center=false',
    'bn.scale=false',
    'dw.use_bias=false',
    'dw_bn.center=false',
    'dw_bn.scale=true',
    'fc.use_bias=false',
  ]);
  assert.deepEqual(artifacts.weightSpecs!.map((s) => s.name).sort(), stock.weights.map((w) => w.originalName).sort());
  assert.deepEqual(notes, []);
  const back = await tf.loadLayersModel(tf.io.fromMemory(artifacts));
  const [want, got] = [predict(stock), predict(back)];
  assert.ok(maxAbsDiff(got, want) <= 1e-4, `max abs diff ${maxAbsDiff(got, want)}`);
  back.dispose();
  stock.dispose();
  model.dispose();
});

test('a layer whose left-out weight moved exports with the option on, says so, and keeps the logits', async () => {
  const stock = biasFree();
  randomizeWeights(stock, 6);
  const { model } = await imported(stock, 'moved');
  // What training (or a folded gate) does to weights the original did not have.
  const bn = model.part('bn', BatchNorm2d);
  bn.weight.set(tf.fill([6], 1.5));
  bn.bias.set(tf.linspace(-0.3, 0.3, 6));
  model.part('fc', Linear).bias.set(tf.tensor1d([0, 0.2, 0]));
  const notes: string[] = [];
  const artifacts = await graphArtifacts(model, (l) => notes.push(l));
  assert.deepEqual(options(artifacts.modelTopology), [
    'conv.use_bias=false',
    'bn.center=true',
    'bn.scale=true',
    'dw.use_bias=false',
    'dw_bn.center=false',
    'dw_bn.scale=true',
    'fc.use_bias=true',
  ]);
  assert.equal(notes.length, 3, notes.join('\n'));
  assert.match(notes[0], /^bn: exported with scale true .*6 of 6 gamma values are not 1/);
  assert.match(notes[1], /^bn: exported with center true .*6 of 6 beta values are not 0/);
  assert.match(notes[2], /^fc: exported with use_bias true .*1 of 3 bias values are not 0/);
  const back = await tf.loadLayersModel(tf.io.fromMemory(artifacts));
  const want = predictLogits(model, x.dataSync() as Float32Array, x.shape);
  const got = predict(back);
  assert.ok(maxAbsDiff(got, want) <= 1e-4, `max abs diff ${maxAbsDiff(got, want)}`);
  back.dispose();
  stock.dispose();
  model.dispose();
});

test.after(() => x.dispose());
