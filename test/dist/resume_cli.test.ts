import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ROOT, coord } from './cli_helpers.js';

const WORKER = join(ROOT, 'bin', 'gdp-worker.js');

/** The smoke config cut further (2 steps per epoch, batch 16, 50 test images): every stage, a few seconds each. */
function args(logDir: string): string[] {
  return [
    '--workers', '2', '--backend', 'wasm', '--config', join(ROOT, 'configs', 'smoke.json'),
    '--set', `base.log_dir=${logDir}`, '--set', 'base.resume_every_steps=1', '--set', 'data.batch_size=16',
    '--set', 'train.max_steps_per_epoch=2', '--set', 'data.test_subset=50',
  ];
}

interface Worker {
  child: ChildProcess;
  out: string;
  exit: Promise<number | null>;
}

const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

function worker(url: string, id: string): Worker {
  const child = spawn(process.execPath, [WORKER, '--connect', url, '--backend', 'wasm', '--id', id, '--retry-for', '90'], { cwd: tmpdir(), stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const w: Worker = { child, out: '', exit: new Promise((resolve) => child.on('exit', (code) => resolve(code))) };
  for (const s of [child.stdout, child.stderr]) s.setEncoding('utf8').on('data', (d: string) => (w.out += d));
  return w;
}

test('gdp-coord killed with SIGKILL and resumed: the workers reconnect and the run ends with the uninterrupted weights', { timeout: 240000 }, async () => {
  const ref = mkdtempSync(join(tmpdir(), 'gdp-resume-cli-'));
  const logDir = mkdtempSync(join(tmpdir(), 'gdp-resume-cli-'));
  try {
    // The uninterrupted run, its workers in-process (the same arithmetic as worker processes).
    const r0 = await coord([...args(ref), '--in-process'], 120000);
    assert.equal(r0.code, 0, r0.out + r0.err);

    // The same run with 2 gdp-worker processes, its coordinator killed after a resume point past the first Tick.
    let url = '';
    const workers: Worker[] = [];
    let killed = false;
    const r1 = await coord([...args(logDir), '--listen', '127.0.0.1:0'], 120000, (out, kill) => {
      const m = /listening on (ws:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m && !url) {
        url = m[1];
        workers.push(worker(url, 'w0'), worker(url, 'w1'));
      }
      const tick = out.indexOf('Tick 1:');
      if (!killed && tick >= 0 && out.indexOf('resume point:', tick) >= 0) {
        killed = true;
        kill('SIGKILL');
      }
    });
    assert.equal(r1.signal, 'SIGKILL', r1.out + r1.err);
    assert.doesNotMatch(r1.out, /gdp-coord: done/);

    // The workers outlive it, retrying; a coordinator resumed on the same port gets them back.
    const r2 = await coord(['--workers', '2', '--backend', 'wasm', '--listen', url.slice('ws://'.length), '--resume', join(logDir, 'smoke')], 150000);
    assert.equal(r2.code, 0, r2.out + r2.err + workers.map((w) => w.out).join('\n'));
    assert.match(r2.out, /resuming .*resume\.safetensors at stage 'prune'/);
    assert.match(r2.out, /stage 'prune' on 2 worker\(s\), resumed/);
    for (const w of workers) {
      assert.equal(await w.exit, 0, w.out);
      assert.match(w.out, /reconnecting to ws:\/\/127\.0\.0\.1:\d+ in [\d.]+ s \(retry 1,/);
      assert.equal(w.out.match(/welcomed:/g)?.length, 2, 'welcomed by both coordinators');
    }

    for (const f of ['finetuned.safetensors', 'pruned.safetensors']) {
      assert.ok(readFileSync(join(ref, 'smoke', f)).equals(readFileSync(join(logDir, 'smoke', f))), `${f}: byte-equal to the uninterrupted run's`);
    }
  } finally {
    rmSync(ref, { recursive: true, force: true });
    rmSync(logDir, { recursive: true, force: true });
  }
});
