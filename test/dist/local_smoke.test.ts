import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseSafetensors } from '../../src/shared/io/safetensors.js';
import { loadTorchState } from '../../src/shared/io/torch_state.js';
import { buildModel } from '../../src/shared/models/registry.js';
import { setup } from './helpers.js';
import { alive, coord, smokeArgs, workerPids } from './cli_helpers.js';

// Its own file: real processes training mnist.resnet20 take most of a test budget.
test('--local: the smoke run trains with 2 worker processes, writes its files, and leaves no process behind', async () => {
  const logDir = mkdtempSync(join(tmpdir(), 'gdp-cli-'));
  try {
    const r = await coord(smokeArgs(logDir), 240000);
    assert.equal(r.code, 0, `exit ${r.code} ${r.signal}\n${r.out}\n${r.err}`);
    assert.match(r.out, /backend wasm/);
    assert.match(r.out, /train epoch 1\/1 .* img\/s \(local\d [\d.]+, local\d [\d.]+\)/);
    const dir = join(logDir, 'smoke');
    const log = JSON.parse(readFileSync(join(dir, 'log.json'), 'utf8'));
    assert.equal(log.length, 1);
    for (const k of ['epoch', 'lr', 'train_loss', 'train_acc', 'test_loss', 'acc@1', 'acc@5', 'img_s']) assert.equal(typeof log[0][k], 'number', k);
    assert.equal(Object.keys(log[0].worker_img_s).length, 2);
    assert.ok(existsSync(join(dir, 'cfg.json')));
    // The checkpoint is a PyTorch state dict (OIHW convolutions) that loads back into a fresh model.
    const ckpt = parseSafetensors(readFileSync(join(dir, 'train-epoch1.safetensors')));
    assert.equal(ckpt.metadata.format, 'gdp-checkpoint/1');
    assert.equal(JSON.parse(ckpt.metadata.state).epoch, 1);
    // It is also a gdp model file: gdp-model loads it without the config.
    assert.equal(ckpt.metadata.arch, 'mnist.resnet20');
    assert.equal(ckpt.metadata.num_class, '10');
    assert.deepEqual(JSON.parse(ckpt.metadata.widths)['conv1'], [1, 16]);
    assert.deepEqual(ckpt.tensors.get('conv1.weight')?.shape, [16, 1, 3, 3]);
    await setup();
    const model = buildModel('mnist.resnet20');
    loadTorchState(model, ckpt.tensors, [28, 28, 1]);
    assert.deepEqual(model.slot('linear.bias').value.dataSync(), ckpt.tensors.get('linear.bias')!.data);
    model.dispose();
    const optim = parseSafetensors(readFileSync(join(dir, 'train-epoch1.optim.safetensors')));
    assert.equal(optim.tensors.get('conv1.weight')?.data.length, 3 * 3 * 16);
    assert.deepEqual(readdirSync(dir).filter((f) => f.includes('.tmp-')), []);
    const pids = workerPids(r.out);
    assert.equal(pids.length, 2);
    for (const pid of pids) assert.ok(!alive(pid), `worker ${pid} still running`);
  } finally {
    rmSync(logDir, { recursive: true, force: true });
  }
});

