import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import '../../src/coordinator/all_stages.js';
import type { Coordinator } from '../../src/coordinator/cluster.js';
import { coordinatorFor } from '../../src/coordinator/in_process.js';
import { readResumePoint, resumedConfig, type ResumePoint } from '../../src/coordinator/resume_point.js';
import { runStages } from '../../src/coordinator/run.js';
import { RunFiles } from '../../src/coordinator/run_files.js';
import { configSchema, type Config } from '../../src/shared/config/schema.js';
import { GdpError } from '../../src/shared/errors.js';
import { configModel } from '../../src/shared/models/registry.js';
import { estimatePeakBytes } from '../../src/shared/train/memory.js';
import { stateChecksum } from '../../src/shared/train/model_state.js';
import { coord, ROOT } from './cli_helpers.js';
import { decodeMessage, encodeMessage } from '../../src/shared/protocol/codec.js';
import { float32FromWire, toWire } from '../../src/shared/protocol/tensor.js';
import type { Transport } from '../../src/shared/protocol/transport.js';
import { connectWorker, nanData, setup, TINY, tinyConfig } from './helpers.js';

before(setup);
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** The training stage alone, 6 steps of 8, resume points at the boundaries only: a point after step K is the failure's. */
function config(logDir: string, lr: number): Config {
  return configSchema.parse({
    base: { task_name: 'run', seed: 3, log_dir: logDir, resume_every_steps: 0 },
    model: { name: TINY, num_class: 10 },
    train: { max_epoch: 1, steplr: [[1, lr]], momentum: 0.9, weight_decay: 5e-4, max_steps_per_epoch: 6 },
    data: { type: 'mnist', batch_size: 8, test_batch_size: 16 },
    loss: { criterion: 'softmax' },
    dist: { checksum_every: 1 },
    stages: ['train'],
  });
}

interface Outcome {
  err?: unknown;
  lines: string[];
  /** Active workers when the run ended, and the coordinator's state then. */
  workerIds: string[];
  steps: number;
  checksum: string;
}

/** Runs the stages over two in-process workers (with memory limits `limits`), from the start or a resume point. */
async function run(cfg: Config, opts: { limits?: (number | undefined)[]; resume?: ResumePoint } = {}): Promise<Outcome> {
  const lines: string[] = [];
  const log = (l: string) => lines.push(l);
  const c: Coordinator = coordinatorFor(cfg, log, { pauseMs: 0 }, opts.resume);
  const workers = ['w0', 'w1'].map((id, i) => connectWorker(c, id, { log: (l) => log(`[${id}] ${l}`), memoryLimit: opts.limits?.[i] }));
  let err: unknown;
  try {
    await c.waitForWorkers(2, 30000);
    await runStages({ coordinator: c, config: cfg, trainSize: 256, testSize: 64, files: new RunFiles(cfg), log, workers: 2, resume: opts.resume?.run });
  } catch (e) {
    err = e;
  }
  const out = { err, lines, workerIds: c.workerIds, steps: c.steps, checksum: stateChecksum(c.model) };
  c.shutdown('test done');
  for (const w of workers) await w.done;
  c.model.dispose();
  return out;
}

function isCode(code: string, message: RegExp) {
  return (e: unknown) => e instanceof GdpError && e.code === code && message.test(e.message);
}

test('a diverging run stops with DIVERGED at the step, naming epoch and lr; no worker is dropped; it resumes from the last good step', async () => {
  const logDir = mkdtempSync(join(tmpdir(), 'gdp-diverged-'));
  dirs.push(logDir);
  const cfg = config(logDir, 1e12);
  const first = await run(cfg);
  // Step 1 is finite (computed at the initial weights); at lr 1e12 step 2's BN running variances overflow.
  const message = /^at step 2 \(train epoch 1\/1, lr 1000000000000\): non-finite on every worker \(w0: bn_stats, w1: bn_stats\)/;
  assert.ok(isCode('DIVERGED', message)(first.err), String(first.err));
  assert.deepEqual(first.workerIds, ['w0', 'w1'], 'no worker is dropped');
  assert.equal(first.steps, 1);
  assert.ok(!first.lines.some((l) => /lost at step|redoing|closing the connection/.test(l)), first.lines.join('\n'));

  // The resume point on disk is the last good step's (boundary points alone would have left the stage start's).
  const point = readResumePoint(join(logDir, 'run'));
  assert.equal(point.run.steps, 1);
  assert.deepEqual({ epoch: (point.run.position as { epoch: number }).epoch, step: (point.run.position as { step: number }).step }, { epoch: 1, step: 1 });
  // Resumed, the run holds exactly the state it diverged from, and meets the same step.
  const again = await run(resumedConfig(point, []), { resume: point });
  assert.ok(isCode('DIVERGED', message)(again.err), String(again.err));
  assert.equal(again.checksum, first.checksum);
  assert.equal(again.steps, 1);
});

const SGD = { lr: 0.1, momentum: 0.9, weightDecay: 5e-4, nesterov: false };
const BATCH = Int32Array.of(0, 5, 9, 17, 33, 40, 41, 60);

/** Sets the first value of a worker's first gradient bucket of every step to `value` (finite: nothing rejects it). */
function firstGradientTo(value: number) {
  return (t: Transport): Transport => ({
    remote: t.remote,
    send(frame) {
      const m = decodeMessage(frame);
      if (m.type === 'bucket' && m.stream === 'grad' && m.index === 0) {
        const v = float32FromWire(m.data, 'test');
        v[0] = value;
        t.send(encodeMessage({ ...m, data: toWire(v) }));
      } else t.send(frame);
    },
    onFrame: (fn) => t.onFrame(fn),
    onClose: (fn) => t.onClose(fn),
    close: (r) => t.close(r),
  });
}

test("every worker's loss NaN, or an average that overflows: DIVERGED at that step, nothing applied, no worker dropped", async () => {
  const cases: [string, Parameters<typeof connectWorker>[2], RegExp][] = [
    ['NaN loss everywhere', { loadData: nanData }, /^at step 1: non-finite on every worker \(a: loss, b: loss\); lower the learning rate$/],
    ['finite gradients whose float32 sum overflows', { wrap: firstGradientTo(3e38) }, /^at step 1: the averaged gradient holds Infinity at element 0; lower the learning rate$/],
  ];
  for (const [what, opts, message] of cases) {
    const lines: string[] = [];
    const c = coordinatorFor(tinyConfig(), (l) => lines.push(l));
    const workers = ['a', 'b'].map((id) => connectWorker(c, id, opts));
    await c.waitForWorkers(2, 30000);
    const before = c.replica.checksum('state');
    await assert.rejects(c.step(BATCH, 'all', SGD), isCode('DIVERGED', message), what);
    assert.deepEqual(c.workerIds, ['a', 'b'], what);
    assert.equal(c.steps, 0);
    assert.equal(c.replica.checksum('state'), before, `${what}: nothing applied`);
    assert.ok(!lines.some((l) => /lost at step|redoing|closing the connection/.test(l)), lines.join('\n'));
    c.shutdown('test done');
    for (const w of workers) assert.equal(await w.done, undefined);
    c.model.dispose();
  }
});

test('a shard over a worker\'s memory limit stops the run with BATCH_TOO_LARGE: no worker dropped, no shard re-sent; the resume point is the last good step', async () => {
  const logDir = mkdtempSync(join(tmpdir(), 'gdp-too-large-'));
  dirs.push(logDir);
  const cfg = config(logDir, 0.05);
  const { model, inputShape } = configModel(cfg.model, 0);
  // Training shards of 4 fit; an evaluation pass of 16 (data.test_batch_size) does not: the run fails at the
  // evaluation after its 6 steps, on w1 only.
  const limit = estimatePeakBytes(model, inputShape, 4, 'train');
  assert.ok(estimatePeakBytes(model, inputShape, 16, 'forward') > limit);
  model.dispose();
  const first = await run(cfg, { limits: [undefined, limit] });
  assert.ok(
    isCode('BATCH_TOO_LARGE', /^worker w1: data\.test_batch_size 16 makes shards of 16 samples; a forward pass of test\.tiny8 .* over the cpu backend's memory limit .*more workers, or a smaller data\.test_batch_size/)(first.err),
    String(first.err),
  );
  assert.deepEqual(first.workerIds, ['w0', 'w1'], 'no worker is dropped');
  assert.equal(first.lines.filter((l) => /^\[w1\] request \d+: data\.test_batch_size 16/.test(l)).length, 1, 'the shard was sent once');
  assert.ok(!first.lines.some((l) => /lost at|redoing/.test(l)), first.lines.join('\n'));
  assert.equal(first.steps, 6);
  const point = readResumePoint(join(logDir, 'run'));
  assert.equal(point.run.steps, 6);
  assert.equal((point.run.position as { step: number }).step, 6);
  // Resumed on workers with room: no step is redone, the evaluation and the rest of the run go through.
  const resumed = await run(resumedConfig(point, []), { resume: point });
  assert.equal(resumed.err, undefined, String(resumed.err));
  assert.equal(resumed.steps, 6);

  // A training shard over the limit: the step fails at once, before anything is applied.
  const small = await run(config(mkdtempSync(join(logDir, 'small-')), 0.05), { limits: [limit / 2, undefined] });
  assert.ok(isCode('BATCH_TOO_LARGE', /^worker w0: data\.batch_size 8 makes shards of 4 samples; a training step/)(small.err), String(small.err));
  assert.deepEqual(small.workerIds, ['w0', 'w1']);
  assert.equal(small.steps, 0);
});

test('gdp-coord --in-process with train.steplr=[[1,1e12]] on the smoke config exits with DIVERGED', async () => {
  const logDir = mkdtempSync(join(tmpdir(), 'gdp-diverged-cli-'));
  dirs.push(logDir);
  const r = await coord(
    ['--workers', '2', '--in-process', '--backend', 'wasm', '--config', join(ROOT, 'configs', 'smoke.json'), '--set', 'train.steplr=[[1,1e12]]', '--set', `base.log_dir=${logDir}`],
    120000,
  );
  assert.equal(r.code, 1, r.err);
  assert.match(r.err, /^gdp-coord: error \[DIVERGED\]: at step 2 \(train epoch 1\/1, lr 1000000000000\): non-finite on every worker \(w0: \w+, w1: \w+\)/m);
  assert.doesNotMatch(r.out, /lost at step|NON_FINITE/);
  assert.match(r.out, /resume point: stage 'train', step 1: /);
});
