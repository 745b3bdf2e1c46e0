import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import '../../src/coordinator/all_stages.js';
import { coordinatorFor, startInProcess } from '../../src/coordinator/in_process.js';
import { RESUME_FILE, readResumePoint } from '../../src/coordinator/resume_point.js';
import { runStages } from '../../src/coordinator/run.js';
import { RunFiles } from '../../src/coordinator/run_files.js';
import { WorkerReportedError } from '../../src/coordinator/worker_link.js';
import { parseConfig } from '../../src/shared/config/load.js';
import type { Config } from '../../src/shared/config/schema.js';
import type { Dataset, DatasetPair } from '../../src/shared/data/dataset.js';
import { GdpError } from '../../src/shared/errors.js';
import { writeSolidFolder, type SolidFolder } from '../data/folder_files.js';
import { connectWorker, setup, tinyConfig, tinyData, TINY } from './helpers.js';

before(setup);

const SGD = { lr: 0.05, momentum: 0.9, weightDecay: 5e-4, nesterov: false };
const BROKEN = '/data/train/vert/broken.png';
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Fails the test instead of hanging when `p` never settles (the old coordinator waited for workers forever). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not settled within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** An error of `code` naming `mention`, as the run ends with it (exit status `exit`). */
function endsWith(code: string, mention: string, exit: number) {
  return (err: unknown) => {
    assert.ok(err instanceof GdpError, String(err));
    assert.equal(err.code, code, err.message);
    assert.ok(err.message.includes(mention), err.message);
    assert.equal(err.exitStatus, exit);
    return true;
  };
}

/** The tiny data, whose training set fails every load as a broken image file does. */
async function brokenTrainData(error: () => Error): Promise<DatasetPair> {
  const d = await tinyData();
  const train: Dataset = Object.assign(Object.create(d.train) as Dataset, {
    load: async () => {
      throw error();
    },
  });
  return { train, test: d.test };
}

test('--listen: a worker whose data fails to load ends the wait for workers with its BAD_DATA, not a wait forever', async () => {
  const lines: string[] = [];
  // As gdp-coord --listen: pauses and waits without limit for workers that are merely lost.
  const coordinator = coordinatorFor(tinyConfig(), (l) => lines.push(l));
  try {
    const w = connectWorker(coordinator, 'w0', {
      loadData: async () => {
        throw new GdpError('BAD_DATA', `cannot decode image ${BROKEN}: unsupported image format`);
      },
    });
    await assert.rejects(within(coordinator.waitForWorkers(1), 10000, 'waitForWorkers'), endsWith('BAD_DATA', BROKEN, 2));
    assert.ok((await w.done) instanceof GdpError);
    assert.ok(lines.some((l) => /^worker w0 reported BAD_DATA, which no retry and no other worker fixes: the run stops$/.test(l)), lines.join('\n'));
  } finally {
    coordinator.shutdown('test done');
    coordinator.model.dispose();
  }
});

test("a worker's BAD_DATA during a step ends the step with it (its code, message, exit status); the others are not waited for", async () => {
  const lines: string[] = [];
  const coordinator = coordinatorFor(tinyConfig(), (l) => lines.push(l));
  try {
    const good = connectWorker(coordinator, 'w0');
    connectWorker(coordinator, 'w1', { loadData: () => brokenTrainData(() => new GdpError('BAD_DATA', `cannot decode image ${BROKEN}: bad PNG`)) });
    await coordinator.waitForWorkers(2, 30000);
    const err = await within(
      coordinator.step(Int32Array.from({ length: 8 }, (_, i) => i), 'all', SGD).then(
        () => undefined,
        (e: unknown) => e,
      ),
      10000,
      'step',
    );
    assert.ok(err instanceof WorkerReportedError, String(err));
    assert.equal(err.workerId, 'w1');
    endsWith('BAD_DATA', `worker w1: cannot decode image ${BROKEN}`, 2)(err);
    assert.equal(coordinator.steps, 0, 'nothing of the failed step applied');
    // Every later operation stops with it too: the run is over.
    await assert.rejects(coordinator.evaluate(Int32Array.of(0, 1)), endsWith('BAD_DATA', BROKEN, 2));
    assert.ok(!lines.some((l) => /redoing it|paused/.test(l)), lines.join('\n'));
    coordinator.shutdown('test done');
    assert.equal(await good.done, undefined);
  } finally {
    coordinator.shutdown('test done');
    coordinator.model.dispose();
  }
});

test("a worker's error another worker may not share (a bug: INTERNAL) still loses that worker only: the step is redone without it", async () => {
  const lines: string[] = [];
  const coordinator = coordinatorFor(tinyConfig(), (l) => lines.push(l));
  try {
    connectWorker(coordinator, 'w0');
    connectWorker(coordinator, 'w1', { loadData: () => brokenTrainData(() => new Error('out of memory')) });
    await coordinator.waitForWorkers(2, 30000);
    await coordinator.step(Int32Array.from({ length: 8 }, (_, i) => i), 'all', SGD);
    assert.equal(coordinator.steps, 1);
    assert.deepEqual(coordinator.workerIds, ['w0']);
    assert.ok(lines.some((l) => /^step 1: .*; redoing it with 1 worker\(s\)$/.test(l)), lines.join('\n'));
  } finally {
    coordinator.shutdown('test done');
    coordinator.model.dispose();
  }
});

/** The tiny net on a folder of 8x8 grey images (3 classes), 2 in-process workers decoding in their own thread. */
function folderRun(fx: SolidFolder, logDir: string, over: Record<string, unknown> = {}): Config {
  return parseConfig({
    base: { task_name: 'bad', seed: 1, log_dir: logDir, resume_every_steps: 0 },
    model: { name: TINY, num_class: 3 },
    train: { max_epoch: 2, steplr: [[1, 0.05]], momentum: 0.9 },
    data: { type: 'folder', dir: fx.dir, image_size: 8, channels: 1, batch_size: 7, test_batch_size: 3, num_workers: 0, ...over },
    loss: { criterion: 'softmax' },
    dist: { heartbeat_ms: 200 },
    stages: ['train'],
  });
}

/** Cuts an image to half its bytes: its header still says PNG (the start-up check passes), its pixels do not decode. */
function truncate(file: string): void {
  const bytes = readFileSync(file);
  writeFileSync(file, bytes.subarray(0, bytes.length >> 1));
}

test('in-process: an image that does not decode ends the run with BAD_DATA naming it at the first step (not NO_WORKERS)', async () => {
  const fx = await writeSolidFolder(1);
  const logDir = mkdtempSync(join(tmpdir(), 'gdp-bad-data-'));
  dirs.push(fx.dir, logDir);
  const bad = join(fx.dir, 'train', fx.train[3].file);
  truncate(bad);
  // Computing the normalisation from the training images decodes each one: the start fails, as gdp-coord's does.
  await assert.rejects(
    within(startInProcess(folderRun(fx, logDir), { workers: 2 }), 30000, 'the start'),
    endsWith('BAD_DATA', bad, 2),
  );
  // Fixed constants: nothing decodes an image before the first batch (all 7 training images) does.
  const config = folderRun(fx, logDir, { mean: [0.5], std: [0.25] });
  const lines: string[] = [];
  const run = await startInProcess(config, { workers: 2, log: (l) => lines.push(l) });
  try {
    const files = new RunFiles(config);
    const stages = runStages({ coordinator: run.coordinator, config, trainSize: 7, testSize: 3, files, log: (l) => lines.push(l), workers: 2 });
    await assert.rejects(within(stages, 30000, 'the run'), endsWith('BAD_DATA', bad, 2));
    assert.equal(run.coordinator.steps, 0);
    assert.ok(!lines.some((l) => /NO_WORKERS|redoing it|paused/.test(l)), lines.join('\n'));
  } finally {
    await run.close();
  }
});

test('in-process: an image that becomes undecodable during training ends the run with BAD_DATA naming it; the last good step is saved', async () => {
  const fx = await writeSolidFolder(1);
  const logDir = mkdtempSync(join(tmpdir(), 'gdp-bad-data-'));
  dirs.push(fx.dir, logDir);
  const bad = join(fx.dir, 'train', fx.train[5].file);
  // Fixed constants: nothing decodes an image before its batch does.
  const config = folderRun(fx, logDir, { mean: [0.5], std: [0.25] });
  const lines: string[] = [];
  const run = await startInProcess(config, { workers: 2, log: (l) => lines.push(l) });
  const log = (l: string) => {
    lines.push(l);
    // Epoch 1 (one step of the 7 images) is done: the file goes bad before epoch 2 reads it.
    if (l.startsWith('train epoch 1/2')) truncate(bad);
  };
  try {
    const files = new RunFiles(config);
    const stages = runStages({ coordinator: run.coordinator, config, trainSize: 7, testSize: 3, files, log, workers: 2 });
    await assert.rejects(within(stages, 30000, 'the run'), endsWith('BAD_DATA', bad, 2));
    assert.equal(run.coordinator.steps, 1);
    // What epoch 1 computed is on disk: its log, and a resume point at its last step.
    const dir = join(logDir, 'bad');
    assert.equal(JSON.parse(readFileSync(join(dir, 'log.json'), 'utf8')).length, 1);
    assert.ok(existsSync(join(dir, RESUME_FILE)));
    assert.equal(readResumePoint(dir).run.steps, 1);
    assert.ok(lines.some((l) => /^resume point: stage 'train', step 1: /.test(l)), lines.join('\n'));
    // Written again at the stop, without asking the workers (who can no longer answer) for BN statistics.
    assert.ok(!lines.some((l) => /could not write the resume point/.test(l)), lines.join('\n'));
    assert.ok(!lines.some((l) => /NO_WORKERS|redoing it|paused/.test(l)), lines.join('\n'));
  } finally {
    await run.close();
  }
});
