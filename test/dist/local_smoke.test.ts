import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { unpackBlob } from '../../src/shared/protocol/codec.js';
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
    const ckpt = unpackBlob(readFileSync(join(dir, 'train-epoch1.ckpt'))) as { format: string; tensors: { name: string; shape: number[]; data: Uint8Array }[] };
    assert.equal(ckpt.format, 'gdp-checkpoint-msgpack/1');
    const conv1 = ckpt.tensors.find((t) => t.name === 'conv1.weight');
    assert.deepEqual(conv1?.shape, [3, 3, 1, 16]);
    assert.equal(conv1?.data.byteLength, 3 * 3 * 16 * 4);
    assert.deepEqual(readdirSync(dir).filter((f) => f.includes('.tmp-')), []);
    const pids = workerPids(r.out);
    assert.equal(pids.length, 2);
    for (const pid of pids) assert.ok(!alive(pid), `worker ${pid} still running`);
  } finally {
    rmSync(logDir, { recursive: true, force: true });
  }
});

