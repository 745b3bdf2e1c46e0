import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import '../../src/coordinator/all_stages.js';
import { assertStagesAvailable } from '../../src/coordinator/stages.js';
import { GdpError } from '../../src/shared/errors.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const COORD = join(ROOT, 'bin', 'gdp-coord.js');

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
  err: string;
}

/** Runs gdp-coord; `onOutput` may act on the output so far (e.g. send SIGINT). Killed after `timeoutMs`. */
function coord(args: string[], timeoutMs: number, onOutput?: (out: string, kill: (s: NodeJS.Signals) => void) => void): Promise<Result> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [COORD, ...args], { cwd: tmpdir(), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      onOutput?.(out, (s) => child.kill(s));
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out, err });
    });
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function workerPids(out: string): number[] {
  return [...out.matchAll(/started worker local\d \(pid (\d+)\)/g)].map((m) => Number(m[1]));
}

/** The smoke config shrunk for the cpu backend, whose conv filter gradient is very slow on 28x28 digits. */
function smokeArgs(logDir: string): string[] {
  return [
    '--workers', '2', '--local', '--listen', '127.0.0.1:0', '--backend', 'cpu', '--config', join(ROOT, 'configs', 'smoke.json'),
    '--set', 'stages=["train"]', '--set', 'data.batch_size=2', '--set', 'train.max_steps_per_epoch=1',
    '--set', 'data.test_subset=4', '--set', 'data.test_batch_size=2', '--set', `base.log_dir=${logDir}`,
  ];
}

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

test('--local: the smoke run trains with 2 worker processes, writes its files, and leaves no process behind', async () => {
  const logDir = mkdtempSync(join(tmpdir(), 'gdp-cli-'));
  try {
    const r = await coord(smokeArgs(logDir), 240000);
    assert.equal(r.code, 0, `exit ${r.code} ${r.signal}\n${r.out}\n${r.err}`);
    assert.match(r.out, /backend cpu/);
    assert.match(r.out, /train epoch 1\/1 .* img\/s \(local\d [\d.]+, local\d [\d.]+\)/);
    const dir = join(logDir, 'smoke');
    const log = JSON.parse(readFileSync(join(dir, 'log.json'), 'utf8'));
    assert.equal(log.length, 1);
    for (const k of ['epoch', 'lr', 'train_loss', 'train_acc', 'test_loss', 'acc@1', 'acc@5', 'img_s']) assert.equal(typeof log[0][k], 'number', k);
    assert.equal(Object.keys(log[0].worker_img_s).length, 2);
    assert.ok(existsSync(join(dir, 'cfg.json')));
    assert.ok(existsSync(join(dir, 'train-epoch1.ckpt')));
    assert.deepEqual(readdirSync(dir).filter((f) => f.includes('.tmp-')), []);
    const pids = workerPids(r.out);
    assert.equal(pids.length, 2);
    for (const pid of pids) assert.ok(!alive(pid), `worker ${pid} still running`);
  } finally {
    rmSync(logDir, { recursive: true, force: true });
  }
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
