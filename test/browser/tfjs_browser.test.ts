import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initBackend } from '../../src/shared/backend.js';
import { loadModelFile } from '../../src/shared/io/model_file.js';
import { exportTfjs } from '../../src/shared/io/tfjs_export.js';
import { tfjsDirWriter } from '../../src/shared/io/tfjs_files.js';
import { maxAbsDiff } from '../helpers.js';
import { fixture, fixtureLogits, hasFixture, REPO_ROOT } from '../io/fixture.js';
import { CHROMIUM, hasChromium, launchChromium, serve } from './chromium.js';

const skip = !hasChromium
  ? `${CHROMIUM} is not installed (apt-get install -y chromium)`
  : !hasFixture
    ? 'the PyTorch fixture ../shared/fixtures/pytorch-resnet56 is absent'
    : false;

// The page uses stock TF.js only: the exported directory is all it needs from gdp.
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><script src="/tf.min.js"></script></head>
<body><script>
window.runModel = async () => {
  // The cpu backend: headless without a GPU, webgl would run on a software rasteriser at lower precision.
  await tf.setBackend('cpu');
  const model = await tf.loadLayersModel('/model/model.json');
  const bytes = await (await fetch('/input.f32')).arrayBuffer();
  const nchw = tf.tensor4d(new Float32Array(bytes), [8, 3, 32, 32]);
  const y = model.predict(tf.transpose(nchw, [0, 2, 3, 1]));
  return { backend: tf.getBackend(), version: tf.version.tfjs, logits: Array.from(await y.data()) };
};
</script></body></html>`;

test("chromium loads the exported ResNet-56 with stock tf.loadLayersModel and gives PyTorch's logits", { skip, timeout: 120_000 }, async () => {
  const work = await mkdtemp(join(tmpdir(), 'gdp-browser-'));
  let server: Server | undefined;
  let context: import('playwright-core').BrowserContext | undefined;
  try {
    await initBackend('wasm');
    const { model, inputShape } = await loadModelFile(fixture('resnet56_cifar10_baseline.safetensors'), { arch: 'cifar.resnet56' });
    try {
      await exportTfjs(model, inputShape, tfjsDirWriter(join(work, 'model')));
    } finally {
      model.dispose();
    }
    const file = (p: string) => () => readFile(p);
    server = await serve({
      '/': PAGE,
      '/tf.min.js': file(join(REPO_ROOT, 'node_modules', '@tensorflow', 'tfjs', 'dist', 'tf.min.js')),
      '/model/model.json': file(join(work, 'model', 'model.json')),
      '/model/weights.bin': file(join(work, 'model', 'weights.bin')),
      '/input.f32': file(fixture('input_a.f32')),
    });
    const { port } = server.address() as AddressInfo;

    context = await launchChromium(join(work, 'profile'));
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`http://127.0.0.1:${port}/`);
    const result = (await page.evaluate('window.runModel()')) as { backend: string; version: string; logits: number[] };
    assert.deepEqual(errors, []);
    assert.equal(result.backend, 'cpu');
    const d = maxAbsDiff(result.logits, await fixtureLogits('base'));
    assert.ok(d <= 1e-4, `max abs diff ${d} (tfjs ${result.version} in chromium)`);
  } finally {
    await context?.close();
    await new Promise((r) => (server ? server.close(r) : r(undefined)));
    await rm(work, { recursive: true, force: true });
  }
});
