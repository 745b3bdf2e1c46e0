import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileWidths } from '../../src/dashboard/widths.js';
import { fixture, hasFixture } from '../io/fixture.js';
import { gdpModel } from '../models/gdp_model.js';

const skip = hasFixture ? false : 'the PyTorch fixture ../shared/fixtures/pytorch-resnet56 is absent';

test("a gated checkpoint's widths from its tensors agree with gdp-model info on the loaded model: layers, widths, masked channels", { skip }, async () => {
  const file = fixture('resnet56_cifar10_gbn70.safetensors');
  const r = await gdpModel('info', '--arch', 'cifar.resnet56', '--weights', file, '--json', '--backend', 'cpu');
  assert.equal(r.code, 0, r.stderr);
  const info = JSON.parse(r.stdout) as { maskedChannels: number; layers: { path: string; out: number }[] };
  const w = fileWidths(file);
  assert.equal(w.gated, true);
  assert.deepEqual(
    w.layers.map((l) => [l.path, l.out]),
    info.layers.map((l) => [l.path, l.out]),
  );
  // Every GBN follows one conv in ResNet-56, so the masked channels the model counts are those the file's masks drop.
  assert.equal(
    w.layers.reduce((a, l) => a + l.out - l.alive, 0),
    info.maskedChannels,
  );
  assert.ok(info.maskedChannels > 0);
});

test('a file that is not safetensors is refused with its name', () => {
  assert.throws(
    () => fileWidths(new URL(import.meta.url).pathname),
    (e: unknown) => (e as { code?: string }).code === 'BAD_SAFETENSORS' && /widths\.test\.js/.test((e as Error).message),
  );
  assert.throws(
    () => fileWidths('no/such/file.safetensors'),
    (e: unknown) => (e as { code?: string }).code === 'FILE_NOT_FOUND',
  );
});
