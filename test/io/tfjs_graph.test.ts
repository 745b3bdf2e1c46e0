import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/shared/backend.js';
import { GdpError } from '../../src/shared/errors.js';
import { readTfjsModel, readTfjsModelSync, tfjsDirWriter } from '../../src/shared/io/tfjs_files.js';
import { mobileBlock } from './tfjs_models.js';

await initBackend('cpu');
const dir = await mkdtemp(join(tmpdir(), 'gdp-tfjs-graph-'));
test.after(() => rm(dir, { recursive: true, force: true }));

let saved = 0;
/** Saves a stock tf.layers model as a model.json folder and reads it back through the importer. */
async function saveAndRead(m: tf.LayersModel) {
  const out = join(dir, `m${saved++}`);
  await m.save(tfjsDirWriter(out));
  m.dispose();
  return (await readTfjsModel(join(out, 'model.json'))).graph;
}

test('a functional MobileNet-style model reads into nodes with shapes, inputs and TF.js weights', async () => {
  const m = mobileBlock();
  const want = new Map(m.weights.map((w) => [w.originalName, Array.from(w.read().dataSync())]));
  const g = await saveAndRead(m);
  assert.equal(g.name, 'mobile_block');
  assert.deepEqual(
    g.nodes.map((n) => [n.name, n.op.kind, n.inputs.join('+'), n.shape.join('x')]),
    [
      ['img', 'input', '', '12x12x3'],
      ['stem', 'conv2d', 'img', '6x6x8'],
      ['stem_bn', 'batchnorm', 'stem', '6x6x8'],
      ['stem_relu6', 'activation', 'stem_bn', '6x6x8'],
      ['dw', 'depthwise', 'stem_relu6', '6x6x8'],
      ['res', 'add', 'stem_relu6+dw', '6x6x8'],
      ['cat', 'concat', 'res+stem_relu6', '6x6x16'],
      ['sep', 'separable', 'cat', '2x2x5'],
      ['gap', 'global_avgpool', 'sep', '5'],
      ['drop', 'dropout', 'gap', '5'],
      ['fc', 'dense', 'drop', '4'],
    ],
  );
  assert.equal(g.output, 'fc');
  const relu6 = g.nodes.find((n) => n.name === 'stem_relu6')!.op;
  assert.deepEqual(relu6, { kind: 'activation', fn: 'relu6' });
  // Every weight the model holds arrives, with its values.
  assert.deepEqual([...g.weights.keys()].sort(), [...want.keys()].sort());
  for (const [name, w] of g.weights) assert.deepEqual(Array.from(w.data), want.get(name), name);
});

test('a Sequential model gets an input node from its first layer, and Flatten -> Dense sizes follow H*W*C', async () => {
  const m = tf.sequential({
    layers: [
      tf.layers.zeroPadding2d({
        inputShape: [7, 7, 1],
        padding: [
          [1, 0],
          [0, 2],
        ],
        name: 'pad',
      }),
      tf.layers.conv2d({ filters: 3, kernelSize: 3, name: 'conv', activation: 'relu' }),
      tf.layers.maxPooling2d({ poolSize: 2, name: 'pool' }),
      tf.layers.flatten({ name: 'flat' }),
      tf.layers.dense({ units: 2, name: 'out' }),
    ],
  });
  const g = await saveAndRead(m);
  assert.deepEqual(
    g.nodes.map((n) => [n.name, n.shape.join('x')]),
    [
      ['input', '7x7x1'],
      ['pad', '8x9x1'],
      ['conv', '6x7x3'],
      ['pool', '3x3x3'],
      ['flat', '27'],
      ['out', '2'],
    ],
  );
  assert.deepEqual(g.weights.get('out/kernel')!.shape, [27, 2]);
});

async function refused(m: tf.LayersModel, code: string, ...parts: string[]): Promise<void> {
  await assert.rejects(saveAndRead(m), (e: unknown) => {
    assert.ok(e instanceof GdpError, String(e));
    assert.equal(e.code, code, e.message);
    for (const p of parts) assert.ok(e.message.includes(p), `'${e.message}' should name '${p}'`);
    return true;
  });
}

test('layers or options gdp cannot compute stop the import with UNSUPPORTED_LAYER naming layer, class and option', async () => {
  const seq = (...layers: tf.layers.Layer[]) => tf.sequential({ layers });
  await refused(
    seq(tf.layers.depthwiseConv2d({ inputShape: [6, 6, 2], kernelSize: 3, depthMultiplier: 2, name: 'dw2' })),
    'UNSUPPORTED_LAYER',
    "'dw2'",
    'DepthwiseConv2D',
    'depth_multiplier 2',
  );
  await refused(
    seq(tf.layers.conv2dTranspose({ inputShape: [6, 6, 2], filters: 2, kernelSize: 3, name: 'up' })),
    'UNSUPPORTED_LAYER',
    "'up'",
    'Conv2DTranspose',
  );
  await refused(
    seq(tf.layers.conv2d({ inputShape: [6, 6, 2], filters: 2, kernelSize: 3, activation: 'tanh', name: 'c' })),
    'UNSUPPORTED_LAYER',
    "'c'",
    "activation 'tanh'",
  );
  await refused(
    seq(tf.layers.conv2d({ inputShape: [6, 6, 2], filters: 2, kernelSize: 3, name: 'c' }), tf.layers.leakyReLU({ name: 'leaky' })),
    'UNSUPPORTED_LAYER',
    "'leaky'",
    'LeakyReLU',
  );
  await refused(
    seq(tf.layers.conv2d({ inputShape: [6, 6, 2], filters: 2, kernelSize: 3, activation: 'softmax', name: 'early' }), tf.layers.flatten({ name: 'f' })),
    'UNSUPPORTED_LAYER',
    "'early'",
    'softmax before the output',
  );
  const input = tf.input({ shape: [6, 6, 2] });
  const shared = tf.layers.conv2d({ filters: 2, kernelSize: 1, name: 'shared' });
  const twice = shared.apply(shared.apply(input)) as tf.SymbolicTensor;
  await refused(tf.model({ inputs: input, outputs: twice }), 'UNSUPPORTED_LAYER', "'shared'", 'shared layer called 2 times');
});

test('a malformed model.json or a weight missing from the shards is BAD_TFJS_MODEL naming the file or weight', async () => {
  const bad = join(dir, 'bad');
  await tf.sequential({ layers: [tf.layers.dense({ inputShape: [3], units: 2 })] }).save(tfjsDirWriter(bad));
  await writeFile(join(bad, 'model.json'), '{"modelTopology": ');
  await assert.rejects(readTfjsModel(bad), (e: unknown) => e instanceof GdpError && e.code === 'BAD_TFJS_MODEL' && e.message.includes('model.json'));
  // A file that is neither a model.json nor a folder holding one (a script, say): what gdp reads, not ENOTDIR.
  const script = join(dir, 'make_model.mjs');
  await writeFile(script, 'export {};');
  for (const read of [readTfjsModel, async (p: string) => readTfjsModelSync(p)]) {
    await assert.rejects(
      read(script),
      (e: unknown) => e instanceof GdpError && e.code === 'BAD_TFJS_MODEL' && e.message.includes(`${script} is not a model gdp reads`),
    );
  }

  const m = mobileBlock();
  const out = join(dir, 'noweights');
  await m.save(
    tf.io.withSaveHandler(async (a) => {
      const specs = a.weightSpecs!.filter((s) => s.name !== 'dw/depthwise_kernel');
      const kept = tf.io.decodeWeights(tf.io.CompositeArrayBuffer.join(a.weightData as ArrayBuffer), a.weightSpecs!);
      delete kept['dw/depthwise_kernel'];
      const { data } = await tf.io.encodeWeights(kept);
      tf.dispose(Object.values(kept));
      await mkdir(out, { recursive: true });
      await writeFile(
        join(out, 'model.json'),
        JSON.stringify({ modelTopology: a.modelTopology, format: a.format, weightsManifest: [{ paths: ['weights.bin'], weights: specs }] }),
      );
      await writeFile(join(out, 'weights.bin'), new Uint8Array(data));
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  m.dispose();
  await assert.rejects(readTfjsModel(out), (e: unknown) => e instanceof GdpError && e.code === 'BAD_TFJS_MODEL' && e.message.includes("'dw/depthwise_kernel'"));
});

test("model.json's userDefinedMetadata.gdp (gdp-model export's) reads back as the model's normalisation; a malformed one is BAD_TFJS_MODEL", async () => {
  const norm = { mean: [0.25, 0.5, 0.75], std: [0.5, 0.25, 0.125] };
  const write = async (name: string, gdp: unknown) => {
    const m = mobileBlock();
    await m.save(tfjsDirWriter(join(dir, name), { gdp }));
    m.dispose();
    return join(dir, name);
  };
  const good = await write('normed', { input: { layout: 'NHWC', pixels: '[0, 1]', ...norm } });
  assert.deepEqual((await readTfjsModel(good)).norm, norm);
  assert.deepEqual(readTfjsModelSync(good).norm, norm);
  const bad = await write('bad_norm', { input: { layout: 'NHWC', pixels: '[0, 1]', mean: [0.5], std: [1] } });
  for (const read of [readTfjsModel, async (p: string) => readTfjsModelSync(p)]) {
    await assert.rejects(
      read(bad),
      (e: unknown) => e instanceof GdpError && e.code === 'BAD_TFJS_MODEL' && e.message.includes('userDefinedMetadata.gdp.input.mean has 1 value(s)'),
    );
  }
});
