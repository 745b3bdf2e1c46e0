import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { Cluster } from '../../src/coordinator/cluster.js';
import { startInProcess } from '../../src/coordinator/in_process.js';
import { RunFiles } from '../../src/coordinator/run_files.js';
import { trainStage } from '../../src/coordinator/train_stage.js';
import { initBackend } from '../../src/shared/backend.js';
import { loadConfig } from '../../src/shared/config/load.js';
import { loadDataset } from '../../src/shared/data/index.js';
import { parseSafetensors } from '../../src/shared/io/safetensors.js';
import { alive, coord, ROOT } from './cli_helpers.js';

// Real processes: gdp-coord with --local workers on the wasm backend, mnist.resnet20, a few small steps.
const TOKEN = randomBytes(16).toString('hex');
const dirs: string[] = [];
const stray: number[] = [];
after(() => {
  for (const pid of stray) if (alive(pid)) process.kill(pid, 'SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'gdp-loss-'));
  dirs.push(d);
  return d;
}

function sets(logDir: string, extra: string[] = []): string[] {
  return [
    'stages=["train"]',
    'train.max_epoch=1',
    'train.max_steps_per_epoch=8',
    'data.batch_size=24',
    'data.test_batch_size=48',
    'data.test_subset=96',
    'dist.checksum_every=1',
    `base.log_dir=${logDir}`,
    ...extra,
  ];
}

function args(workers: number, s: string[]): string[] {
  return ['--workers', String(workers), '--local', '--listen', '127.0.0.1:0', '--backend', 'wasm', '--config', join(ROOT, 'configs', 'smoke.json'), ...s.flatMap((x) => ['--set', x])];
}

/** Worker ids in join order and their pids, from gdp-coord's output. */
function workersOf(out: string): { order: string[]; pid: Map<string, number> } {
  const order = [...out.matchAll(/worker (local\d) joined/g)].map((m) => m[1]);
  const pid = new Map([...out.matchAll(/started worker (local\d) \(pid (\d+)\)/g)].map((m) => [m[1], Number(m[2])]));
  return { order, pid };
}

/** Acts once, when `pattern` first appears in the output. */
function when(pattern: RegExp, act: (out: string) => void) {
  let done = false;
  return (out: string) => {
    if (!done && pattern.test(out)) {
      done = true;
      act(out);
    }
  };
}

test('a worker killed with SIGKILL mid-epoch: the run completes with the same weights as the survivors doing the same shards', async () => {
  const logDir = tmp();
  let victim = '';
  const r = await coord(
    args(3, sets(logDir)),
    300000,
    when(/train epoch 1\/1 step 2\/8/, (out) => {
      // The worker in the middle of the join order, so that the survivors' shards move.
      const w = workersOf(out);
      victim = w.order[1];
      const pid = w.pid.get(victim)!;
      stray.push(pid);
      process.kill(pid, 'SIGKILL');
    }),
    { ...process.env, GDP_TOKEN: TOKEN },
  );
  assert.equal(r.code, 0, `exit ${r.code}\n${r.out}\n${r.err}`);
  assert.ok(victim, r.out);
  const lost = new RegExp(`worker ${victim} lost at step (\\d+) \\((.*)\\); 2 worker\\(s\\) remain`).exec(r.out);
  assert.ok(lost, r.out);
  const k = Number(lost[1]);
  assert.ok(k >= 3 && k <= 8, `lost at step ${k}`);
  const position = workersOf(r.out).order.indexOf(victim);
  assert.match(r.out, /train epoch 1\/1 .* img\/s \(local\d [\d.]+, local\d [\d.]+, local\d [\d.]+\)/);
  assert.match(r.out, /replicas identical on local\d, local\d: state checksum [0-9a-f]{16}/);

  // The reference: the same run in this process, same backend, worker `position` dropped before step k.
  await initBackend('wasm');
  const refDir = tmp();
  const config = loadConfig(join(ROOT, 'configs', 'smoke.json'), sets(refDir));
  const data = await loadDataset(config);
  const run = await startInProcess(config, { workers: 3, backend: 'wasm', loadData: async () => data });
  try {
    const c = run.coordinator;
    let dropped = false;
    const cluster: Cluster = {
      replica: c.replica,
      model: c.model,
      config: c.config,
      get workerIds() {
        return c.workerIds;
      },
      updates: c.updates,
      async step(indices, set, sgd) {
        if (!dropped && c.steps === k - 1) {
          dropped = true;
          const id = c.workerIds[position];
          // startInProcess names its workers w0, w1, ... after their index.
          run.workers[Number(id.slice(1))].close('dropped');
          while (c.workerIds.includes(id)) await new Promise((res) => setTimeout(res, 5));
        }
        return c.step(indices, set, sgd);
      },
      evaluate: (i) => c.evaluate(i),
      syncBatchNormStats: () => c.syncBatchNormStats(),
      broadcastModelUpdate: (u) => c.broadcastModelUpdate(u),
      verifyChecksums: () => c.verifyChecksums(),
    };
    await trainStage({ cluster, config, trainSize: data.train.size, testSize: data.test.size, files: new RunFiles(config), log: () => {} });
    assert.ok(dropped);
  } finally {
    await run.close();
  }
  let tensors = 0;
  for (const file of ['train-epoch1.safetensors', 'train-epoch1.optim.safetensors']) {
    const got = parseSafetensors(readFileSync(join(logDir, 'smoke', file))).tensors;
    const want = parseSafetensors(readFileSync(join(refDir, 'smoke', file))).tensors;
    assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
    for (const [name, t] of want) {
      const g = got.get(name)!;
      assert.deepEqual(g.shape, t.shape, name);
      assert.ok(Buffer.from(g.data.buffer, g.data.byteOffset, g.data.byteLength).equals(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)), `${file}: ${name} differs`);
      tensors++;
    }
  }
  process.stdout.write(`# SIGKILL: worker ${victim} (join position ${position}) lost at step ${k} (${lost[2]}); ${tensors} tensors bitwise equal to the reference\n`);
});

test('a stopped worker (SIGSTOP: socket open, no heartbeats) is dropped after dist.heartbeat_timeout_ms; resumed, it rejoins by itself', async () => {
  const logDir = tmp();
  let victim = '';
  let stoppedAt = 0;
  let lostAt = 0;
  const onOut = [
    when(/train epoch 1\/1 step 2\/8/, (out) => {
      const w = workersOf(out);
      victim = w.order[1];
      const pid = w.pid.get(victim)!;
      stray.push(pid);
      stoppedAt = Date.now();
      process.kill(pid, 'SIGSTOP');
    }),
    when(/worker local\d lost at step/, (out) => {
      lostAt = Date.now();
      // Alive again, it finds its connection closed and reconnects (a local worker retries): --min-workers 2 holds
      // the run until it has joined again.
      process.kill(workersOf(out).pid.get(victim)!, 'SIGCONT');
    }),
  ];
  const r = await coord(
    // 8 s: a worker loading its data on a loaded machine can block its event loop (and heartbeats) for seconds.
    [...args(2, sets(logDir, ['dist.heartbeat_ms=250', 'dist.heartbeat_timeout_ms=8000'])), '--min-workers', '2'],
    300000,
    (out) => onOut.forEach((f) => f(out)),
  );
  assert.equal(r.code, 0, `exit ${r.code}\n${r.out}\n${r.err}`);
  const lost = new RegExp(`worker ${victim} lost at step (\\d+) \\(PEER_TIMEOUT: nothing received for (\\d+) ms \\(limit (\\d+) ms\\)`).exec(r.out);
  assert.ok(lost, r.out);
  assert.ok(Number(lost[2]) >= 8000 && Number(lost[3]) >= 8000, lost[0]);
  assert.equal(r.out.match(new RegExp(`worker ${victim} joined`, 'g'))?.length, 2, r.out);
  assert.match(r.out, /replicas identical on local\d, local\d: state checksum/);
  process.stdout.write(`# SIGSTOP: worker ${victim} lost at step ${lost[1]}, ${lost[2]} ms after its last frame (limit ${lost[3]} ms), ${lostAt - stoppedAt} ms after SIGSTOP; rejoined after SIGCONT\n`);
});
