import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/shared/backend.js';
import { modelCost } from '../../src/shared/graph/flops.js';
import { loadModelFile } from '../../src/shared/io/model_file.js';
import { tfjsDirReader, tfjsDirWriter } from '../../src/shared/io/tfjs_files.js';
import { exportGraphTfjs } from '../../src/shared/io/tfjs_graph_export.js';
import { GraphModel } from '../../src/shared/models/graph_model.js';
import { maxAbsDiff } from '../helpers.js';
import { predictLogits } from '../../src/shared/models/infer.js';
import { Rng } from '../../src/shared/rng.js';
import { hasChromium, launchChromium, serve } from '../browser/chromium.js';
import { coord } from '../dist/cli_helpers.js';
import { REPO_ROOT } from '../io/fixture.js';
import { tinyMobileNetV2 } from '../io/tfjs_models.js';

await initBackend('cpu');

// Stock TF.js only: the exported directory is all the page needs from gdp.
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><script src="/tf.min.js"></script></head>
<body><script>
window.predict = async (shape) => {
  await tf.setBackend('cpu');
  const model = await tf.loadLayersModel('/model/model.json');
  const x = new Float32Array(await (await fetch('/input.f32')).arrayBuffer());
  return Array.from(await model.predict(tf.tensor4d(x, shape)).data());
};
</script></body></html>`;

/** Stock tf.loadLayersModel's predictions in headless Chromium for the exported model in `modelDir`. */
async function predictInChromium(modelDir: string, x: Float32Array, shape: number[]): Promise<number[]> {
  const file = (p: string) => () => readFile(p);
  const server = await serve({
    '/': PAGE,
    '/tf.min.js': file(join(REPO_ROOT, 'node_modules', '@tensorflow', 'tfjs', 'dist', 'tf.min.js')),
    '/model/model.json': file(join(modelDir, 'model.json')),
    '/model/weights.bin': file(join(modelDir, 'weights.bin')),
    '/input.f32': async () => Buffer.from(x.buffer, x.byteOffset, x.byteLength),
  });
  const context = await launchChromium(join(dir, 'profile'));
  try {
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
    const y = (await page.evaluate(`window.predict(${JSON.stringify(shape)})`)) as number[];
    assert.deepEqual(errors, []);
    return y;
  } finally {
    await context.close();
    await new Promise((r) => server.close(r));
  }
}
const dir = await mkdtemp(join(tmpdir(), 'gdp-own-model-'));
test.after(() => rm(dir, { recursive: true, force: true }));

test('own model: a stock tf.layers MobileNetV2-style model trains on 2 workers, prunes to <= 50% MACs, melts, finetunes and exports to stock TF.js', async () => {
  const stock = tinyMobileNetV2([28, 28, 1], 10);
  await stock.save(tfjsDirWriter(join(dir, 'own')));
  const config = {
    base: { task_name: 'own', seed: 0, log_dir: join(dir, 'logs') },
    model: { name: 'graph', num_class: 10, file: join(dir, 'own', 'model.json') },
    train: { max_epoch: 1, steplr: [[1, 0.05]], weight_decay: 5e-4, momentum: 0.9, max_steps_per_epoch: 3 },
    data: { type: 'mnist', batch_size: 32, test_batch_size: 250, test_subset: 250 },
    loss: { criterion: 'softmax' },
    gbn: {
      sparse_lambda: 1e-3,
      lr_min: 1e-3,
      lr_max: 1e-2,
      tock_epoch: 1,
      T: 1,
      p: 0.25,
      finetune_epoch: 1,
      target_flops: 0.5,
      tick_batches: 2,
      max_ticks: 12,
    },
    stages: ['train', 'prune', 'finetune'],
  };
  const cfgPath = join(dir, 'own.json');
  await writeFile(cfgPath, JSON.stringify(config));
  const r = await coord(['--in-process', '--workers', '2', '--backend', 'wasm', '--config', cfgPath], 600_000);
  assert.equal(r.code, 0, `${r.out}\n${r.err}`);

  const file = join(dir, 'logs', 'own', 'finetuned.safetensors');
  assert.ok(existsSync(file), `no finetuned.safetensors in the run's output:\n${r.out}`);
  const melted = await loadModelFile(file);
  assert.ok(melted.model instanceof GraphModel && !melted.gated, 'a melted graph model');
  const full = new GraphModel(melted.model.topology, new Rng(0));
  const ratio = modelCost(melted.model, melted.inputShape).macs / modelCost(full, full.inputShape).macs;
  full.dispose();
  assert.ok(ratio <= 0.5, `MACs ratio ${ratio}`);

  // Export: stock tf.loadLayersModel gives the melted network's outputs (softmax of its logits: the output layer keeps its softmax).
  await exportGraphTfjs(melted.model, tfjsDirWriter(join(dir, 'exported')));
  const back = await tf.loadLayersModel(tfjsDirReader(join(dir, 'exported')));
  assert.deepEqual(
    back.layers.map((l) => `${l.name}:${l.getClassName()}`),
    stock.layers.map((l) => `${l.name}:${l.getClassName()}`),
  );
  const n = 8;
  const x = tf.tidy(() => tf.randomUniform([n, 28, 28, 1], 0, 1, 'float32', 3).dataSync() as Float32Array);
  const logits = predictLogits(melted.model, x, [n, 28, 28, 1]);
  const want = tf.tidy(() => tf.softmax(tf.tensor2d(logits, [n, 10])).dataSync() as Float32Array);
  const got = tf.tidy(() => (back.predict(tf.tensor4d(x, [n, 28, 28, 1])) as tf.Tensor).dataSync() as Float32Array);
  assert.ok(maxAbsDiff(got, want) <= 1e-4, `exported vs melted: max abs diff ${maxAbsDiff(got, want)}`);
  back.dispose();
  melted.model.dispose();
  if (hasChromium) {
    const chromium = await predictInChromium(join(dir, 'exported'), x, [n, 28, 28, 1]);
    assert.ok(maxAbsDiff(chromium, want) <= 1e-4, `chromium vs melted: max abs diff ${maxAbsDiff(chromium, want)}`);
  }
  stock.dispose();
});
