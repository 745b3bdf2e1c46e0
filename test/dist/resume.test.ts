import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import '../../src/coordinator/all_stages.js';
import type { Coordinator } from '../../src/coordinator/cluster.js';
import { startInProcess } from '../../src/coordinator/in_process.js';
import { RESUME_FILE, readResumePoint, resumedConfig, type ResumePoint } from '../../src/coordinator/resume_point.js';
import { checkResumable, runStages } from '../../src/coordinator/run.js';
import { RunFiles } from '../../src/coordinator/run_files.js';
import { configSchema, type Config } from '../../src/shared/config/schema.js';
import { GdpError } from '../../src/shared/errors.js';
import { parseSafetensors } from '../../src/shared/io/safetensors.js';
import { stateChecksum } from '../../src/shared/train/model_state.js';
import { syntheticDataset } from '../pruning/local_cluster.js';
import { setup, TINY } from './helpers.js';

// conv-bn x2 on 8x8 images: every stage in a few seconds on the cpu backend (a ResNet-8 step costs ~1 s there).
const data = { train: syntheticDataset(16, [8, 8, 1], 1), test: syntheticDataset(8, [8, 8, 1], 2) };

/**
 * Steps: train 2 epochs of 4 (1-8); prune: a Tock (9-12), Tick 1 (13-14), Tick 2 (15-16), a Tock (17-20), Tick 3
 * (21-22) reaching the target; finetune (23-26). A resume point every 3 steps besides the boundaries.
 */
function config(logDir: string, seed = 4): Config {
  return configSchema.parse({
    base: { task_name: 'run', seed, log_dir: logDir, resume_every_steps: 3 },
    model: { name: TINY, num_class: 10 },
    train: { max_epoch: 2, steplr: [[1, 0.05], [2, 0.01]], momentum: 0.9, weight_decay: 5e-4 },
    data: { type: 'mnist', batch_size: 4, test_batch_size: 8 },
    loss: { criterion: 'softmax' },
    gbn: {
      sparse_lambda: 1e-3, lr_min: 1e-3, lr_max: 1e-2, tock_epoch: 1, T: 2, p: 0.1, finetune_epoch: 1, tick_batches: 2,
      target_flops: 0.3, save_points: [0.7], finetune_momentum: 0.9,
    },
    dist: { checksum_every: 1 },
    stages: ['train', 'prune', 'finetune'],
  });
}

interface Outcome {
  dir: string;
  steps: number;
  checksum: string;
  params: Map<string, Float32Array>;
  momentum: Map<string, Float32Array>;
  lines: string[];
}

/** Makes the coordinator fail every step after `n` steps: the run dies there as a killed process would. */
function interruptAfter(c: Coordinator, n: number): void {
  const step = c.step.bind(c);
  c.step = (...args) => (c.steps >= n ? Promise.reject(new GdpError('INTERRUPTED', `test: interrupted after step ${n}`)) : step(...args));
}

/** One run over 2 in-process workers: from the start, or (`resume`) from the resume point in logDir/run. */
async function run(logDir: string, opts: { seed?: number; stopAfter?: number; resume?: boolean } = {}): Promise<Outcome> {
  const dir = join(logDir, 'run');
  let point: ResumePoint | undefined;
  let cfg = config(logDir, opts.seed);
  if (opts.resume) {
    point = readResumePoint(dir);
    cfg = resumedConfig(point, []);
    checkResumable(cfg, point.run, point.file);
  }
  const cluster = await startInProcess(cfg, { workers: 2, loadData: async () => data, resume: point });
  const lines: string[] = [];
  try {
    if (opts.stopAfter !== undefined) interruptAfter(cluster.coordinator, opts.stopAfter);
    const c = cluster.coordinator;
    await runStages({ coordinator: c, config: cfg, trainSize: 16, testSize: 8, files: new RunFiles(cfg), log: (l) => lines.push(l), workers: 2, resume: point?.run });
    for (const w of cluster.workers) assert.equal(w.replica!.checksum('parameters'), c.replica.checksum('parameters'), 'workers end identical to the coordinator');
    return {
      dir,
      steps: c.steps,
      checksum: stateChecksum(c.model),
      params: new Map([...c.model.namedSlots()].map(([n, s]) => [n, s.value.dataSync() as Float32Array])),
      momentum: new Map(c.replica.momentumState()),
      lines,
    };
  } finally {
    await cluster.close();
  }
}

/** A run interrupted after `stopAfter` steps, then resumed from its last resume point in the same folder. */
async function interruptedRun(stopAfter: number): Promise<{ out: Outcome; resumedAt: ResumePoint['run'] }> {
  const logDir = mkdtempSync(join(tmpdir(), 'gdp-resume-'));
  await assert.rejects(run(logDir, { stopAfter }), (e: unknown) => e instanceof GdpError && e.code === 'INTERRUPTED');
  const resumedAt = readResumePoint(join(logDir, 'run')).run;
  return { out: await run(logDir, { resume: true }), resumedAt };
}

/** The parts of a run position the cases check (the stage's position flattened one level). */
function where(r: ResumePoint['run']): Record<string, unknown> {
  const p = (r.position ?? {}) as Record<string, unknown>;
  const phase = p.phase as { kind: string; at?: Record<string, unknown> } | undefined;
  const at = (phase ? phase.at : p.at) as Record<string, unknown> | undefined;
  const out: Record<string, unknown> = { stage: r.stage, steps: r.steps };
  if (p.epoch !== undefined) Object.assign(out, { epoch: p.epoch, step: p.step });
  if (p.ticks !== undefined) Object.assign(out, { ticks: p.ticks, phase: phase?.kind });
  if (p.ticks !== undefined || p.at !== undefined) {
    out.at = at && (phase?.kind === 'tick' ? { batch: at.batch } : { epoch: at.epoch, step: at.step });
  }
  return out;
}

const TIMING = new Set(['img_s', 'worker_img_s', 'imgS', 'workerImgS', 'msPerImageB1', 'msPerImageB64']);

/** A JSON file of the run without timing fields, with the run's folder as `<dir>`. */
function jsonOf(o: Outcome, name: string): unknown {
  const text = readFileSync(join(o.dir, name), 'utf8').replaceAll(o.dir, '<dir>');
  return JSON.parse(text, (k, v: unknown) => (TIMING.has(k) ? undefined : v));
}

function assertSameRun(a: Outcome, b: Outcome, what: string): void {
  assert.equal(b.steps, a.steps, `${what}: steps`);
  for (const [n, v] of a.params) assert.deepEqual(b.params.get(n), v, `${what}: tensor ${n}`);
  assert.equal(b.params.size, a.params.size);
  assert.deepEqual([...b.momentum.keys()].sort(), [...a.momentum.keys()].sort(), `${what}: momentum buffers`);
  for (const [n, v] of a.momentum) assert.deepEqual(b.momentum.get(n), v, `${what}: momentum of ${n}`);
  assert.equal(b.checksum, a.checksum);
  for (const f of ['finetuned.safetensors', 'pruned.safetensors', 'gbn_70.safetensors']) {
    assert.ok(readFileSync(join(a.dir, f)).equals(readFileSync(join(b.dir, f))), `${what}: ${f} byte-equal`);
  }
  // Its metadata holds the config, whose log_dir differs.
  const tensors = (o: Outcome) => parseSafetensors(readFileSync(join(o.dir, 'train-epoch2.safetensors'))).tensors;
  assert.deepEqual(tensors(b), tensors(a), `${what}: train-epoch2.safetensors tensors`);
  for (const f of ['log.json', 'prune_log.json', 'finetune_log.json', 'summary.json']) assert.deepEqual(jsonOf(b, f), jsonOf(a, f), `${what}: ${f}`);
}

describe('resume: an interrupted and resumed run ends as the uninterrupted one', () => {
  const dirs: string[] = [];
  let reference: Outcome;
  before(async () => {
    await setup();
    const logDir = mkdtempSync(join(tmpdir(), 'gdp-resume-'));
    dirs.push(logDir);
    reference = await run(logDir);
  });
  after(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('the reference run trains, prunes (3 Ticks, a Tock after Tick 2) and finetunes', () => {
    const events = (jsonOf(reference, 'prune_log.json') as { type: string }[]).map((e) => e.type);
    assert.deepEqual(events, ['tock', 'tick', 'checkpoint', 'tick', 'tock', 'tick', 'melt']);
    assert.equal(reference.steps, 26);
    assert.ok(reference.momentum.size > 0);
  });

  // Where the resumed run continued from: the last resume point before the interruption.
  const cases: [string, number, Record<string, unknown>][] = [
    ['mid-train-epoch', 7, { stage: 0, steps: 6, epoch: 2, step: 2 }],
    ['mid-Tock', 10, { stage: 1, steps: 9, ticks: 0, phase: 'tock', at: { epoch: 0, step: 1 } }],
    ['between Ticks', 14, { stage: 1, steps: 14, ticks: 1, phase: 'tick', at: undefined }],
    ['mid-Tick, with its gate scores so far', 15, { stage: 1, steps: 15, ticks: 1, phase: 'tick', at: { batch: 1 } }],
    ['mid-finetune', 25, { stage: 2, steps: 24, at: { epoch: 0, step: 2 } }],
  ];
  for (const [name, stopAfter, expected] of cases) {
    it(`interrupted ${name}, resumed: the same weights, momentum, checkpoints and logs`, async () => {
      const { out, resumedAt } = await interruptedRun(stopAfter);
      dirs.push(join(out.dir, '..'));
      assert.deepEqual(where(resumedAt), expected);
      assert.ok(out.lines.some((l) => l.includes(', resumed')), 'a stage continued from its position');
      assertSameRun(reference, out, name);
    });
  }

  it('seeds: the same config twice gives the same run; another seed another one', async () => {
    const again = mkdtempSync(join(tmpdir(), 'gdp-resume-'));
    const other = mkdtempSync(join(tmpdir(), 'gdp-resume-'));
    dirs.push(again, other);
    assertSameRun(reference, await run(again), 'same seed');
    const changed = await run(other, { seed: 5 });
    assert.notEqual(changed.checksum, reference.checksum);
    assert.notDeepEqual(changed.params.get('conv1.weight'), reference.params.get('conv1.weight'));
  });

  it('a finished run, a missing or corrupt resume point and a changed config key are refused, naming the file or key', () => {
    const point = readResumePoint(reference.dir);
    assert.throws(() => checkResumable(point.config, point.run, point.file), (e: unknown) => e instanceof GdpError && e.code === 'RUN_FINISHED' && e.message.includes(point.file));
    const empty = mkdtempSync(join(tmpdir(), 'gdp-resume-'));
    dirs.push(empty);
    assert.throws(() => readResumePoint(empty), (e: unknown) => e instanceof GdpError && e.code === 'BAD_RESUME' && e.message.includes(join(empty, RESUME_FILE)));
    const bytes = readFileSync(point.file);
    writeFileSync(join(empty, RESUME_FILE), bytes.subarray(0, bytes.length - 100));
    assert.throws(() => readResumePoint(empty), (e: unknown) => e instanceof GdpError && e.code === 'BAD_RESUME' && /truncated/.test(e.message) && e.message.includes(join(empty, RESUME_FILE)));
    assert.throws(() => resumedConfig(point, ['train.momentum=0.5']), (e: unknown) => e instanceof GdpError && e.code === 'BAD_FLAG' && /train\.momentum/.test(e.message));
    assert.equal(resumedConfig(point, ['dist.step_timeout_ms=1000']).dist.step_timeout_ms, 1000);
  });
});
