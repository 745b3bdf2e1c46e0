import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import '../../src/coordinator/all_stages.js';
import { startInProcess } from '../../src/coordinator/in_process.js';
import { RESUME_FILE } from '../../src/coordinator/resume_point.js';
import { runStages } from '../../src/coordinator/run.js';
import { RunFiles } from '../../src/coordinator/run_files.js';
import { configSchema } from '../../src/shared/config/schema.js';
import { GdpError } from '../../src/shared/errors.js';
import { loadModel } from '../../src/shared/io/model_file.js';
import { parseSafetensors } from '../../src/shared/io/safetensors.js';
import { setup, TINY } from '../dist/helpers.js';
import { syntheticDataset } from '../pruning/local_cluster.js';
import { gdpModel } from './gdp_model.js';

/**
 * A real resume point, as an interrupted run leaves it: train 2 epochs of 2 steps (train-epoch2.safetensors and its
 * .optim beside it), then pruning: a Tock epoch and 2 Ticks, interrupted at global step 12.
 */
async function interruptedRun(logDir: string): Promise<string> {
  const config = configSchema.parse({
    base: { task_name: 'run', seed: 4, log_dir: logDir, resume_every_steps: 3 },
    model: { name: TINY, num_class: 10 },
    train: { max_epoch: 2, steplr: [[1, 0.05]], momentum: 0.9 },
    data: { type: 'mnist', batch_size: 8, test_batch_size: 8 },
    loss: { criterion: 'softmax' },
    gbn: { sparse_lambda: 1e-3, lr_min: 1e-3, lr_max: 1e-2, tock_epoch: 1, T: 2, p: 0.1, finetune_epoch: 1, tick_batches: 2, target_flops: 0.3 },
    stages: ['train', 'prune', 'finetune'],
  });
  const data = { train: syntheticDataset(16, [8, 8, 1], 1), test: syntheticDataset(8, [8, 8, 1], 2) };
  const cluster = await startInProcess(config, { workers: 1, loadData: async () => data });
  const c = cluster.coordinator;
  const step = c.step.bind(c);
  c.step = (...args) => (c.steps >= 12 ? Promise.reject(new GdpError('INTERRUPTED', 'test: interrupted')) : step(...args));
  try {
    await assert.rejects(runStages({ coordinator: c, config, trainSize: 16, testSize: 8, files: new RunFiles(config), log: () => {}, workers: 1 }));
  } finally {
    await cluster.close();
  }
  return join(logDir, 'run');
}

describe('gdp-model and a resume point', () => {
  let logDir: string;
  let dir: string;
  let point: string;
  before(async () => {
    await setup();
    logDir = mkdtempSync(join(tmpdir(), 'gdp-model-resume-'));
    dir = await interruptedRun(logDir);
    point = join(dir, RESUME_FILE);
  });
  after(() => rmSync(logDir, { recursive: true, force: true }));

  it('info describes it: the run, where it stands, how to resume it, the model files to use instead (no backend)', async () => {
    const r = await gdpModel('info', '--weights', point, '--backend', 'cpu');
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, /backend:/);
    assert.match(r.stdout, new RegExp(`^${point}: a resume point \\(format 'gdp-resume/1'\\) of run 'run', not a model file$`, 'm'));
    assert.match(r.stdout, /^model: test\.tiny8, 10 classes$/m);
    assert.match(r.stdout, /in stage 2\/3 'prune', global step 12, 1 worker$/m);
    assert.match(r.stdout, /^last epoch logged: tock epoch 1, /m);
    assert.match(r.stdout, /^Ticks done: 2$/m);
    assert.ok(r.stdout.includes(`gdp-coord --workers 1 --local --resume ${dir} `), r.stdout);
    assert.ok(r.stdout.includes(`model files (predict, eval, melt, export, bench and info take these): ${join(dir, 'train-epoch2.safetensors')}\n`), r.stdout);

    const j = await gdpModel('info', '--weights', point, '--json', '--backend', 'cpu');
    assert.equal(j.code, 0, j.stderr);
    const out = JSON.parse(j.stdout);
    assert.deepEqual(
      { ...out, lastEpoch: { ...out.lastEpoch, acc1: 0 } },
      {
        file: point,
        format: 'gdp-resume/1',
        task: 'run',
        arch: TINY,
        numClasses: 10,
        stages: ['train', 'prune', 'finetune'],
        stage: 1,
        finished: false,
        steps: 12,
        workers: 1,
        lastEpoch: { stage: 'tock', epoch: 1, acc1: 0 },
        ticks: 2,
        modelFiles: [join(dir, 'train-epoch2.safetensors')],
      },
    );
  });

  it('the commands that take a model refuse it with NOT_A_MODEL naming it, gdp-coord --resume and the model files, before the backend starts', async () => {
    const out = join(logDir, 'out');
    const commands = [
      ['eval'],
      ['predict', '--input', join(logDir, 'x.f32'), '--shape', '1,1,8,8', '--out', join(out, 'l.f32')],
      ['melt', '--out', join(out, 'melted.safetensors')],
      ['export', '--out', join(out, 'web')],
      ['export', '--keras', join(out, 'net.keras')],
      ['bench'],
      ['info', '--html', join(out, 'widths.html')],
    ];
    for (const args of commands) {
      const r = await gdpModel(...args, '--weights', point, '--backend', 'cpu');
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.doesNotMatch(r.stdout, /backend:/, args.join(' '));
      assert.ok(r.stderr.startsWith(`gdp-model: error [NOT_A_MODEL]: ${point} is a resume point`), `${args.join(' ')}: ${r.stderr}`);
      assert.ok(r.stderr.includes(`gdp-coord --resume ${dir}`) && r.stderr.includes(`instead: ${join(dir, 'train-epoch2.safetensors')}`), r.stderr);
    }
    // A resume point without a model file beside it says so.
    const alone = join(logDir, 'alone');
    mkdirSync(alone);
    copyFileSync(point, join(alone, RESUME_FILE));
    const none = await gdpModel('eval', '--weights', join(alone, RESUME_FILE), '--backend', 'cpu');
    assert.match(none.stderr, /NOT_A_MODEL.*the run has written no model file yet \(train-epoch<N>\.safetensors/);
    // The momentum saved beside an epoch checkpoint names the checkpoint.
    const optim = join(dir, 'train-epoch2.optim.safetensors');
    const m = await gdpModel('info', '--weights', optim, '--backend', 'cpu');
    assert.equal(m.code, 2, m.stderr);
    assert.ok(
      m.stderr.includes(`[NOT_A_MODEL]: ${optim} holds the SGD momentum of a checkpoint`) &&
        m.stderr.endsWith(`pass the checkpoint itself, ${join(dir, 'train-epoch2.safetensors')}\n`),
      m.stderr,
    );
  });

  it('loading it as a model (model.weights, with the arch a config gives) is NOT_A_MODEL, not MISSING_TENSOR', () => {
    assert.throws(
      () => loadModel(parseSafetensors(readFileSync(point), point), { arch: TINY }, point),
      (e: unknown) => e instanceof GdpError && e.code === 'NOT_A_MODEL' && e.message.includes(point),
    );
    const epoch = join(dir, 'train-epoch2.safetensors');
    const m = loadModel(parseSafetensors(readFileSync(epoch), epoch), {}, epoch);
    assert.equal(m.arch, TINY);
    m.model.dispose();
  });
});
