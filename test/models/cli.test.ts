import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/shared/backend.js';
import { readF32 } from '../../src/shared/io/raw_tensor.js';
import { serializeSafetensors } from '../../src/shared/io/safetensors.js';
import { tfjsDirReader, tfjsDirWriter } from '../../src/shared/io/tfjs_files.js';
import { maxAbsDiff } from '../helpers.js';
import { fixture, fixtureInputNhwc, fixtureLogits, hasFixture, INPUT_SHAPE_NHWC } from '../io/fixture.js';
import { gdpModel } from './gdp_model.js';

const dir = await mkdtemp(join(tmpdir(), 'gdp-model-cli-'));
test.after(() => rm(dir, { recursive: true, force: true }));
const skip = hasFixture ? false : 'the PyTorch fixture ../shared/fixtures/pytorch-resnet56 is absent';

test('flops --json prints one JSON object with PyTorch MACs and params; the backend goes to stderr', async () => {
  const r = await gdpModel('flops', '--arch', 'cifar.resnet56', '--json', '--backend', 'cpu');
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.macs, 125_747_840);
  assert.equal(out.params, 855_770);
  assert.match(r.stderr, /backend: cpu/);
  const c100 = JSON.parse((await gdpModel('flops', '--arch', 'cifar.vgg16', '--num-class', '100', '--json', '--backend', 'cpu')).stdout);
  assert.equal(c100.params, 14_728_266 + 90 * 513);
  assert.equal(c100.macs, 313_201_664 + 90 * 512);
});

test('bad flags and unknown architectures exit 2 with the code and the culprit named', async () => {
  const r = await gdpModel('flops', '--arch', 'cifar.resnet57', '--backend', 'cpu');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /UNKNOWN_ARCH.*cifar\.resnet57/);
  const b = await gdpModel('flops', '--arch', 'cifar.resnet56', '--backend', 'gpu');
  assert.notEqual(b.code, 0);
  assert.match(b.stderr, /--backend/);
});

test("commander's own rejections are BAD_FLAG with exit 2; help exits 0", async () => {
  const cases: [string[], RegExp][] = [
    [['export', '--weights', 'w.safetensors', '--format', 'onnx'], /^gdp-model: error \[BAD_FLAG\]: option '--format <format>' argument 'onnx' is invalid/],
    [['info'], /^gdp-model: error \[BAD_FLAG\]: required option '--weights <file>' not specified/],
    [['infoo'], /^gdp-model: error \[BAD_FLAG\]: unknown command 'infoo'\n\(Did you mean info\?\)/],
    [['info', '--weights', 'w.safetensors', '--wieghts'], /^gdp-model: error \[BAD_FLAG\]: unknown option '--wieghts'/],
    [['flops', '--arch', 'cifar.resnet56', '--num-class', '0'], /^gdp-model: error \[BAD_FLAG\]: .*--num-class must be a positive integer/],
  ];
  for (const [args, message] of cases) {
    const r = await gdpModel(...args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
  }
  for (const args of [['--help'], ['help', 'info'], ['info', '--help']]) {
    const r = await gdpModel(...args);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stdout, /^Usage: gdp-model/);
  }
});

test('--keras: a name without a Keras suffix, or (export) a model that is not an imported one, is BAD_FLAG before anything loads', async () => {
  // Headers alone: loading either file would fail (no tensors), so these errors come before any loading.
  const builtIn = join(dir, 'resnet20-header.safetensors');
  await writeFile(builtIn, serializeSafetensors(new Map(), { format: 'gdp', arch: 'cifar.resnet20', num_class: '10' }));
  const plain = join(dir, 'plain-header.safetensors');
  await writeFile(plain, serializeSafetensors(new Map(), { format: 'pt' }));
  const cases: [string[], RegExp][] = [
    [
      ['export', '--weights', join(dir, 'absent.safetensors'), '--keras', 'out.onnx'],
      /--keras.*'out\.onnx' is invalid\. a Keras file ends in \.keras, \.h5, \.hdf5/,
    ],
    [['import', '--keras', 'net/model.json', '--out', join(dir, 'x.safetensors')], /--keras.*'net\/model\.json' is invalid\. a Keras file ends in \.keras/],
    [
      ['export', '--weights', builtIn, '--keras', join(dir, 'out.keras')],
      /--keras writes imported \('graph'\) models only.*resnet20-header\.safetensors is a cifar\.resnet20 model: .*--out DIR/,
    ],
    [['export', '--weights', plain, '--arch', 'cifar.resnet20', '--keras', join(dir, 'out.h5')], /plain-header\.safetensors is a cifar\.resnet20 model/],
    [['export', '--weights', plain, '--keras', join(dir, 'out.h5')], /plain-header\.safetensors records no arch \(a plain PyTorch state dict\)/],
  ];
  for (const [args, message] of cases) {
    const r = await gdpModel(...args, '--backend', 'cpu');
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /^gdp-model: error \[BAD_FLAG\]: /);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stdout, /backend:/, 'refused before the backend starts');
  }
});

test('import: a missing --tfjs model or weight shard is FILE_NOT_FOUND naming it, exit 2', async () => {
  const absent = await gdpModel('import', '--tfjs', join(dir, 'absent', 'model.json'), '--out', join(dir, 'absent.safetensors'), '--backend', 'cpu');
  assert.equal(absent.code, 2, absent.stderr);
  assert.match(absent.stderr, /error \[FILE_NOT_FOUND\]: cannot read model .*absent\/model\.json/);
  const net = join(dir, 'shardless');
  await tf.sequential({ layers: [tf.layers.dense({ inputShape: [3], units: 2 })] }).save(tfjsDirWriter(net));
  await unlink(join(net, 'weights.bin'));
  const shard = await gdpModel('import', '--tfjs', net, '--out', join(dir, 'shardless.safetensors'), '--backend', 'cpu');
  assert.equal(shard.code, 2, shard.stderr);
  assert.match(shard.stderr, /error \[FILE_NOT_FOUND\]: cannot read weight shard .*shardless\/weights\.bin/);
});

test('predict reproduces PyTorch logits of the gated checkpoint (wasm) and checks the input size', { skip }, async () => {
  const out = join(dir, 'logits.f32');
  const args = [
    'predict',
    '--arch',
    'cifar.resnet56',
    '--weights',
    fixture('resnet56_cifar10_gbn70.safetensors'),
    '--input',
    fixture('input_a.f32'),
    '--out',
    out,
    '--backend',
    'wasm',
  ];
  const r = await gdpModel(...args, '--shape', '8,3,32,32', '--batch', '3');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /backend: wasm/);
  const d = maxAbsDiff(await readF32(out, [8, 10]), await fixtureLogits('gbn70'));
  assert.ok(d <= 1e-4, `max abs diff ${d}`);
  const bad = await gdpModel(...args, '--shape', '7,3,32,32');
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /BAD_INPUT.*input_a\.f32.*98304 bytes.*\[7,3,32,32\]/);
  const wrongImage = await gdpModel(...args, '--shape', '2,3,64,64');
  assert.match(wrongImage.stderr, /BAD_FLAG.*N,3,32,32/);
});

test('info lists layers, widths, MACs and masked channels of the gated checkpoint', { skip }, async () => {
  const r = await gdpModel('info', '--arch', 'cifar.resnet56', '--weights', fixture('resnet56_cifar10_gbn70.safetensors'), '--json', '--backend', 'cpu');
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.gated, true);
  assert.equal(out.macs, 125_747_840);
  assert.ok(out.maskedChannels > 0);
  assert.deepEqual(
    out.layers.find((l: { path: string }) => l.path === 'layer2.0.shortcut.0'),
    { path: 'layer2.0.shortcut.0', kind: 'conv', in: 16, out: 32, macs: 16 * 16 * 16 * 32 },
  );
  const missing = await gdpModel('info', '--weights', fixture('resnet56_cifar10_baseline.safetensors'), '--backend', 'cpu');
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /MISSING_ARCH.*'arch'.*--arch/);
});

test('export writes a TF.js model that stock tf.loadLayersModel runs with PyTorch logits', { skip }, async () => {
  const out = join(dir, 'tfjs');
  const r = await gdpModel(
    'export',
    '--arch',
    'cifar.resnet56',
    '--weights',
    fixture('resnet56_cifar10_baseline.safetensors'),
    '--format',
    'tfjs',
    '--out',
    out,
    '--backend',
    'wasm',
  );
  assert.equal(r.code, 0, r.stderr);
  await initBackend('wasm');
  const x = await fixtureInputNhwc();
  const model = await tf.loadLayersModel(tfjsDirReader(out));
  const logits = tf.tidy(() => (model.predict(tf.tensor4d(x, [...INPUT_SHAPE_NHWC])) as tf.Tensor).dataSync());
  model.dispose();
  const d = maxAbsDiff(logits, await fixtureLogits('base'));
  assert.ok(d <= 1e-4, `max abs diff ${d}`);
});

test('melt: the gated 70% checkpoint melts to ~30% of the MACs, loads without --arch and keeps PyTorch logits', { skip }, async () => {
  const melted = join(dir, 'melted.safetensors');
  const r = await gdpModel(
    'melt',
    '--arch',
    'cifar.resnet56',
    '--weights',
    fixture('resnet56_cifar10_gbn70.safetensors'),
    '--out',
    melted,
    '--json',
    '--backend',
    'wasm',
  );
  assert.equal(r.code, 0, r.stderr);
  const m = JSON.parse(r.stdout);
  assert.equal(m.before.macs, 125_747_840);
  assert.ok(m.macsRatio > 0.25 && m.macsRatio < 0.35, `ratio ${m.macsRatio}`);
  assert.ok(m.after.params < m.before.params);
  // The melted file records its architecture: no --arch from here on.
  const info = JSON.parse((await gdpModel('info', '--weights', melted, '--json', '--backend', 'cpu')).stdout);
  assert.equal(info.arch, 'cifar.resnet56');
  assert.equal(info.gated, false);
  assert.equal(info.macs, m.after.macs);
  // Two paths to the melted cost: info of the gated file (its masks) and the melted file itself.
  const gatedInfo = JSON.parse(
    (await gdpModel('info', '--arch', 'cifar.resnet56', '--weights', fixture('resnet56_cifar10_gbn70.safetensors'), '--json', '--backend', 'cpu')).stdout,
  );
  assert.deepEqual(gatedInfo.melted, { macs: info.macs, params: info.params });
  const out = join(dir, 'melted-logits.f32');
  const p = await gdpModel('predict', '--weights', melted, '--input', fixture('input_a.f32'), '--shape', '8,3,32,32', '--out', out, '--backend', 'wasm');
  assert.equal(p.code, 0, p.stderr);
  const d = maxAbsDiff(await readF32(out, [8, 10]), await fixtureLogits('gbn70'));
  assert.ok(d <= 1e-4, `max abs diff ${d}`);
  const again = await gdpModel('melt', '--weights', melted, '--out', join(dir, 'twice.safetensors'), '--backend', 'cpu');
  assert.equal(again.code, 2);
  assert.match(again.stderr, /NOT_GATED.*melted\.safetensors/);
});

test('bench reports per-image latency at each batch size', async () => {
  const r = await gdpModel('bench', '--arch', 'mnist.resnet20', '--batches', '1,2', '--runs', '2', '--json', '--backend', 'wasm');
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.macs, 31_021_952);
  assert.deepEqual(
    out.latency.map((l: { batch: number; runsMs: number[] }) => [l.batch, l.runsMs.length]),
    [
      [1, 2],
      [2, 2],
    ],
  );
  for (const l of out.latency) assert.ok(l.perImageMs > 0 && Math.abs(l.perImageMs * l.batch - l.medianMs) < 1e-9);
});

test('a file too short to be safetensors is refused with its name', async () => {
  await writeFile(join(dir, 'empty.safetensors'), new Uint8Array(4));
  const r = await gdpModel('info', '--weights', join(dir, 'empty.safetensors'), '--backend', 'cpu');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /BAD_SAFETENSORS.*empty\.safetensors/);
});
