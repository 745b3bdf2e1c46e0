import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { alive, coord, ROOT } from './cli_helpers.js';

const WORKER = join(ROOT, 'bin', 'gdp-worker.js');

test('a worker joining mid-run takes shards and ends with the replica of the others (checksums); local workers get the token by environment', async () => {
  const logDir = mkdtempSync(join(tmpdir(), 'gdp-join-'));
  const token = randomBytes(16).toString('hex');
  const env = { ...process.env, GDP_TOKEN: token };
  let late: { out: string; exit: Promise<number | null>; pid: number } | undefined;
  const argvLeaks: string[] = [];
  const envSeen: boolean[] = [];
  try {
    const args = ['--workers', '2', '--local', '--listen', '127.0.0.1:0', '--backend', 'wasm', '--config', join(ROOT, 'configs', 'smoke.json')];
    for (const s of ['stages=["train"]', 'train.max_epoch=2', 'train.max_steps_per_epoch=10', 'data.batch_size=96', 'data.test_batch_size=48', 'data.test_subset=96', 'dist.checksum_every=1', `base.log_dir=${logDir}`]) {
      args.push('--set', s);
    }
    const r = await coord(
      args,
      400000,
      (out) => {
        if (late || !/train epoch 1\/2 step 1\/10/.test(out)) return;
        const url = /listening on (ws:\/\/127\.0\.0\.1:\d+)/.exec(out)![1];
        // The token is in the local workers' environment, never on their command lines.
        for (const m of out.matchAll(/started worker local\d \(pid (\d+)\)/g)) {
          const cmdline = readFileSync(`/proc/${m[1]}/cmdline`, 'utf8');
          if (cmdline.includes(token)) argvLeaks.push(cmdline);
          envSeen.push(readFileSync(`/proc/${m[1]}/environ`, 'utf8').split('\0').includes(`GDP_TOKEN=${token}`));
        }
        const child = spawn(process.execPath, [WORKER, '--connect', url, '--backend', 'wasm', '--id', 'late'], { stdio: ['ignore', 'pipe', 'pipe'], env });
        late = { out: '', exit: new Promise((res) => child.on('exit', (code) => res(code))), pid: child.pid! };
        const l = late;
        child.stdout.setEncoding('utf8').on('data', (d: string) => (l.out += d));
        child.stderr.setEncoding('utf8').on('data', (d: string) => (l.out += d));
      },
      env,
    );
    assert.equal(r.code, 0, `exit ${r.code}\n${r.out}\n${r.err}`);
    assert.ok(late, r.out);
    assert.equal(await late.exit, 0, late.out);
    assert.deepEqual(argvLeaks, []);
    assert.deepEqual(envSeen, [true, true]);
    const joined = /worker late joined \(.*\); 3 active from step (\d+)/.exec(r.out);
    assert.ok(joined, r.out);
    const k = Number(joined[1]);
    assert.ok(k > 1 && k <= 20, `joined at step ${k}`);
    // It took shards: its rate appears in the epoch summary.
    assert.match(r.out, /train epoch 2\/2 .* img\/s \((?=.*late [\d.]+)(?=.*local0 [\d.]+)(?=.*local1 [\d.]+).*\)/);
    const final = /replicas identical on (.*): state checksum ([0-9a-f]{16})/.exec(r.out);
    assert.ok(final, r.out);
    assert.deepEqual(final[1].split(', ').sort(), ['late', 'local0', 'local1']);
    const sum = final[2];
    const ends = [...`${r.out}\n${late.out}`.matchAll(/coordinator ended the session: run finished; state checksum ([0-9a-f]{16})/g)].map((m) => m[1]);
    assert.deepEqual(ends, [sum, sum, sum]);
    assert.doesNotMatch(r.out, /REPLICA_DIVERGED|error:/);
    process.stdout.write(`# join: worker late active from step ${k} of 20; final state checksum ${sum} on the coordinator, local0, local1 and late\n`);
  } finally {
    if (late && alive(late.pid)) process.kill(late.pid, 'SIGKILL');
    rmSync(logDir, { recursive: true, force: true });
  }
});
