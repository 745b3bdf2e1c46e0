import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import '../../src/coordinator/all_stages.js';
import { assertStagesAvailable } from '../../src/coordinator/stages.js';
import { GdpError } from '../../src/shared/errors.js';
import { alive, coord, smokeArgs, workerPids } from './cli_helpers.js';

test('--dry-run prints the resolved config; the default config is found from any cwd', async () => {
  const r = await coord(['--workers', '1', '--dry-run', '--set', 'stages=["train"]', '--set', 'train.momentum=0.5'], 30000);
  assert.equal(r.code, 0, r.err);
  const config = JSON.parse(r.out);
  assert.equal(config.model.name, 'mnist.resnet20');
  assert.equal(config.train.momentum, 0.5);
  assert.equal(config.dist.bucket_mib, 16);
});

test('an invalid config is a clear error with the key path and a non-zero exit', async () => {
  const r = await coord(['--workers', '1', '--dry-run', '--set', 'train.momentum=7'], 30000);
  assert.equal(r.code, 2);
  assert.match(r.err, /BAD_CONFIG.*\n\s+train\.momentum: /);
  const flags = await coord(['--workers', 'two', '--dry-run'], 30000);
  assert.notEqual(flags.code, 0);
});

test('an unregistered stage is an error at start-up', () => {
  assert.doesNotThrow(() => assertStagesAvailable(['train']));
  assert.throws(() => assertStagesAvailable(['train', 'distill']), (e: unknown) => e instanceof GdpError && e.code === 'UNKNOWN_STAGE' && /'distill'/.test(e.message));
});

test('--local: Ctrl-C ends the coordinator and its workers', async () => {
  const logDir = mkdtempSync(join(tmpdir(), 'gdp-cli-'));
  try {
    let sent = false;
    const r = await coord(smokeArgs(logDir), 120000, (out, kill) => {
      if (!sent && /stage 'train'/.test(out)) {
        sent = true;
        kill('SIGINT');
      }
    });
    assert.ok(sent, r.out + r.err);
    assert.equal(r.code, 130, r.out + r.err);
    const pids = workerPids(r.out);
    assert.equal(pids.length, 2);
    for (const pid of pids) assert.ok(!alive(pid), `worker ${pid} still running`);
  } finally {
    rmSync(logDir, { recursive: true, force: true });
  }
});

test('without --local: prints the exact worker command, and SIGTERM while waiting ends it', async () => {
  let command = '';
  const r = await coord(['--workers', '1', '--listen', '127.0.0.1:0', '--backend', 'cpu', '--set', 'stages=["train"]'], 60000, (out, kill) => {
    const m = /gdp-worker --connect ws:\/\/127\.0\.0\.1:(\d+)/.exec(out);
    if (m && !command) {
      command = m[0];
      kill('SIGTERM');
    }
  });
  assert.ok(Number(/:(\d+)$/.exec(command)?.[1]) > 0, r.out);
  assert.match(r.out, /backend cpu/);
  assert.equal(r.code, 143, r.out + r.err);
});
