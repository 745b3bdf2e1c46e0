import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import '../../src/coordinator/all_stages.js';
import type { Coordinator } from '../../src/coordinator/cluster.js';
import { startInProcess } from '../../src/coordinator/in_process.js';
import { readResumePoint, resumedConfig, type ResumePoint } from '../../src/coordinator/resume_point.js';
import { checkResumable, runStages } from '../../src/coordinator/run.js';
import { RunFiles, type EpochRecord } from '../../src/coordinator/run_files.js';
import { initBackend } from '../../src/shared/backend.js';
import { loadConfig } from '../../src/shared/config/load.js';
import type { DatasetPair } from '../../src/shared/data/dataset.js';
import { loadDataset } from '../../src/shared/data/index.js';
import { GdpError } from '../../src/shared/errors.js';
import { parseSafetensors } from '../../src/shared/io/safetensors.js';
import { ROOT } from './cli_helpers.js';

const SMOKE = join(ROOT, 'configs', 'smoke.json');
/** The schedule: epoch 1 at 0.05, epoch 2 at 0.001. */
const TWO_EPOCHS = ['train.max_epoch=2', 'train.steplr=[[1,0.05],[2,0.001]]'];
/**
 * Smaller batches and test set than the smoke config's: what is checked here (epoch numbering, lr, which weights
 * start the stage, bitwise equality of two runs) does not depend on the batch size, and the eight runs stay cheap.
 */
const SMALL = ['data.batch_size=8', 'data.test_batch_size=50', 'data.test_subset=100'];

interface Outcome {
  dir: string;
  lines: string[];
  records: EpochRecord[];
  steps: number;
}

/**
 * The smoke config's train stage, run in this process over 2 workers on wasm, in logDir/task; `stopAfter`: fail every
 * step after that many (as a killed coordinator), `resume`: continue from the resume point in logDir/task.
 */
async function run(data: DatasetPair, logDir: string, task: string, sets: string[], opts: { stopAfter?: number; resume?: boolean } = {}): Promise<Outcome> {
  const dir = join(logDir, task);
  let point: ResumePoint | undefined;
  let config = loadConfig(SMOKE, [`base.log_dir=${logDir}`, `base.task_name=${task}`, 'stages=["train"]', ...SMALL, ...sets]);
  if (opts.resume) {
    point = readResumePoint(dir);
    config = resumedConfig(point, []);
    checkResumable(config, point.run, point.file);
  }
  const lines: string[] = [];
  const log = (l: string) => lines.push(l);
  const cluster = await startInProcess(config, { workers: 2, backend: 'wasm', loadData: async () => data, log, resume: point });
  try {
    const c = cluster.coordinator;
    if (opts.stopAfter !== undefined) interruptAfter(c, opts.stopAfter);
    await runStages({ coordinator: c, config, trainSize: data.train.size, testSize: data.test.size, files: new RunFiles(config), log, workers: 2, resume: point?.run });
    // log.json appears with the first epoch record.
    const records = existsSync(join(dir, 'log.json')) ? (JSON.parse(readFileSync(join(dir, 'log.json'), 'utf8')) as EpochRecord[]) : [];
    return { dir, lines, records, steps: c.steps };
  } finally {
    await cluster.close();
  }
}

function interruptAfter(c: Coordinator, n: number): void {
  const step = c.step.bind(c);
  c.step = (...args) => (c.steps >= n ? Promise.reject(new GdpError('INTERRUPTED', `test: interrupted after step ${n}`)) : step(...args));
}

/** Every tensor of two safetensors files, compared bit for bit; returns how many. */
function assertSameTensors(a: string, b: string): number {
  const x = parseSafetensors(readFileSync(a)).tensors;
  const y = parseSafetensors(readFileSync(b)).tensors;
  assert.deepEqual([...x.keys()].sort(), [...y.keys()].sort());
  for (const [name, t] of x) {
    const u = y.get(name)!;
    assert.ok(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).equals(Buffer.from(u.data.buffer, u.data.byteOffset, u.data.byteLength)), `${name} differs`);
  }
  return x.size;
}

/** Every file of a run folder (a folder entry: its name alone), by name. */
function folderBytes(dir: string): Record<string, string> {
  return Object.fromEntries(
    readdirSync(dir, { withFileTypes: true }).map((e) => [e.name, e.isDirectory() ? 'folder' : readFileSync(join(dir, e.name)).toString('base64')]),
  );
}

/** The per-epoch figures that depend on the numbers only (not on timing). */
const figures = (r: EpochRecord) => [r.stage, r.epoch, r.lr, r.train_loss, r.train_acc, r.test_loss, r['acc@1'], r['acc@5']];

describe('base.epoch: the train stage continues at epoch base.epoch+1 from the starting weights, as the paper\'s main.py', () => {
  let logDir: string;
  let data: DatasetPair;
  before(async () => {
    await initBackend('wasm');
    logDir = mkdtempSync(join(tmpdir(), 'gdp-start-epoch-'));
    data = await loadDataset(loadConfig(SMOKE, SMALL));
  });
  after(() => rmSync(logDir, { recursive: true, force: true }));

  it('smoke, base.epoch=1 from its train-epoch1 checkpoint, max_epoch 2: one epoch, numbered 2, at lr 0.001', async () => {
    const first = await run(data, logDir, 'smoke', []);
    const weights = join(first.dir, 'train-epoch1.safetensors');
    assert.ok(existsSync(weights));
    const next = await run(data, logDir, 'next', [...TWO_EPOCHS, 'base.epoch=1', `base.checkpoint_path=${weights}`]);
    assert.deepEqual(next.records.map((r) => [r.stage, r.epoch, r.lr]), [['train', 2, 0.001]]);
    assert.equal(next.steps, 3, 'one epoch of max_steps_per_epoch 3');
    assert.ok(next.lines.includes(`train: continuing from epoch 2 of 2 (base.epoch 1, weights ${weights})`), next.lines.join('\n'));
    assert.ok(next.lines.some((l) => l.startsWith('train epoch 2/2 ')));
    assert.ok(!next.lines.some((l) => l.startsWith('train epoch 1/')));
    // Checkpoints are numbered on from there.
    assert.ok(!existsSync(join(next.dir, 'train-epoch1.safetensors')));
    assert.equal(JSON.parse(parseSafetensors(readFileSync(join(next.dir, 'train-epoch2.safetensors'))).metadata.state).epoch, 2);
  });

  it('with momentum 0 (the paper restarts the optimizer: nothing else carries over), it ends bit for bit as epoch 2 of the 2-epoch run', async () => {
    const whole = await run(data, logDir, 'whole', [...TWO_EPOCHS, 'train.momentum=0']);
    const weights = join(whole.dir, 'train-epoch1.safetensors');
    const tail = await run(data, logDir, 'tail', [...TWO_EPOCHS, 'train.momentum=0', 'base.epoch=1', `model.weights=${weights}`]);
    assert.deepEqual(tail.records.map(figures), [figures(whole.records[1])]);
    const n = assertSameTensors(join(whole.dir, 'train-epoch2.safetensors'), join(tail.dir, 'train-epoch2.safetensors'));
    process.stdout.write(`# base.epoch=1: ${n} tensors of train-epoch2 bitwise equal to the uninterrupted run's\n`);
  });

  it("a resumed run's position wins over base.epoch: interrupted mid-epoch 2 and resumed, it ends as without the interruption", async () => {
    const weights = join(logDir, 'smoke', 'train-epoch1.safetensors');
    const sets = [...TWO_EPOCHS, 'base.epoch=1', `base.checkpoint_path=${weights}`, 'base.resume_every_steps=1'];
    const straight = await run(data, logDir, 'straight', sets);
    await assert.rejects(run(data, logDir, 'broken', sets, { stopAfter: 2 }), (e: unknown) => e instanceof GdpError && e.code === 'INTERRUPTED');
    const resumed = await run(data, logDir, 'broken', sets, { resume: true });
    assert.equal(resumed.steps, 3);
    assert.deepEqual(resumed.records.map(figures), straight.records.map(figures));
    assert.ok(!resumed.lines.some((l) => l.startsWith('train: continuing')), 'the resumed stage starts from its position, not from base.epoch');
    assertSameTensors(join(straight.dir, 'train-epoch2.safetensors'), join(resumed.dir, 'train-epoch2.safetensors'));
  });

  it("a continuation in the earlier run's folder: log.json holds that run's epochs 1..base.epoch, then its own; later ones are dropped", async () => {
    const first = await run(data, logDir, 'cont', ['train.max_epoch=3', 'train.steplr=[[1,0.05],[3,0.01]]']);
    assert.deepEqual(
      first.records.map((r) => r.epoch),
      [1, 2, 3],
    );
    const weights = join(first.dir, 'train-epoch1.safetensors');
    // Epoch 2 again, at another rate than the first run's (whose epochs 2 and 3 go): the record is the continuation's.
    const next = await run(data, logDir, 'cont', ['train.max_epoch=2', 'train.steplr=[[1,0.05],[2,0.002]]', 'base.epoch=1', `base.checkpoint_path=${weights}`]);
    assert.deepEqual(
      next.records.map((r) => [r.stage, r.epoch, r.lr]),
      [
        ['train', 1, 0.05],
        ['train', 2, 0.002],
      ],
    );
    assert.deepEqual(next.records[0], first.records[0], "the earlier run's record as it was, every field");
    assert.ok(next.lines.includes(`gdp-coord: continues ${next.dir} from epoch 1 (${weights}); log.json epochs kept: 1 (2 later record(s) dropped)`), next.lines.join('\n'));
    // The earlier run's checkpoints past epoch 1: epoch 2's is the continuation's to write, epoch 3's it leaves.
    const saidCheckpoints = next.lines.filter((l) => l.includes('checkpoints train-epoch<N>'));
    assert.deepEqual(saidCheckpoints, [
      "gdp-coord: warning: the earlier run's checkpoints train-epoch<N>.safetensors (and .optim) for N = 2, past epoch 1, will be overwritten as this run reaches those epochs",
      "gdp-coord: note: the earlier run's checkpoints train-epoch<N>.safetensors (and .optim) for N = 3, past epoch 1, stay as they are: this run does not save those epochs",
    ]);
    // Its final table replaces the earlier run's, said with the checkpoints.
    assert.ok(next.lines.includes("gdp-coord: warning: the earlier run's summary.json will be overwritten as this run writes its own"), next.lines.join('\n'));
    const state = (f: string) => JSON.parse(parseSafetensors(readFileSync(join(next.dir, f))).metadata.state) as { epoch: number };
    assert.equal(state('train-epoch2.safetensors').epoch, 2);
    assert.ok(existsSync(join(next.dir, 'train-epoch3.safetensors')) && existsSync(join(next.dir, 'train-epoch3.optim.safetensors')), 'nothing deleted');
    assert.ok(!next.lines.some((l) => l.includes('log.json has no record')), 'nothing missing: no warning about it');
  });

  it('an earlier log.json without some of epochs 1..base.epoch: the start names the epochs kept and warns of those missing, then runs', async () => {
    const first = await run(data, logDir, 'gap', ['train.max_epoch=4', 'train.steplr=[[4,0.05]]']);
    // The folder: base.epoch 4, but log.json holds epochs 1 and 2 only.
    writeFileSync(join(first.dir, 'log.json'), JSON.stringify(first.records.slice(0, 2)));
    const weights = join(first.dir, 'train-epoch4.safetensors');
    const sets = ['train.max_epoch=5', 'train.steplr=[[5,0.05]]', 'base.epoch=4', `base.checkpoint_path=${weights}`];
    const next = await run(data, logDir, 'gap', sets);
    const said = next.lines.join('\n');
    assert.ok(next.lines.includes(`gdp-coord: continues ${next.dir} from epoch 4 (${weights}); log.json epochs kept: 1-2`), said);
    assert.ok(next.lines.includes(`gdp-coord: warning: ${join(next.dir, 'log.json')} has no record of train epoch(s) 3-4: the continued log.json and report will lack them (the run starts from ${weights} regardless)`), said);
    assert.ok(!said.includes('1..4'), 'no claim of epochs it does not keep');
    assert.deepEqual(next.records.map((r) => r.epoch), [1, 2, 5]);

    // No log.json at all, or an empty one: said the same way.
    rmSync(join(first.dir, 'log.json'));
    const bare = await run(data, logDir, 'gap', sets);
    assert.ok(bare.lines.includes(`gdp-coord: continues ${bare.dir} from epoch 4 (${weights}); log.json epochs kept: none (no log.json)`), bare.lines.join('\n'));
    assert.ok(bare.lines.includes(`gdp-coord: warning: ${join(bare.dir, 'log.json')} has no record of train epoch(s) 1-4: the continued log.json and report will lack them (the run starts from ${weights} regardless)`), bare.lines.join('\n'));
    writeFileSync(join(first.dir, 'log.json'), '[]\n');
    const empty = await run(data, logDir, 'gap', sets);
    assert.ok(empty.lines.includes(`gdp-coord: continues ${empty.dir} from epoch 4 (${weights}); log.json epochs kept: none`), empty.lines.join('\n'));
    assert.ok(empty.lines.some((l) => l.includes('has no record of train epoch(s) 1-4')), empty.lines.join('\n'));
  });

  it("an unreadable or malformed earlier log.json stops a continuation with BAD_RUN_FILE before it computes or rewrites anything", async () => {
    const cases: [string, (dir: string) => void, RegExp][] = [
      ['truncated', (d) => writeFileSync(join(d, 'log.json'), '[{"stage": "train", "epoch": 1,'), /log\.json: not JSON/],
      ['foreign', (d) => writeFileSync(join(d, 'log.json'), '[{"stage": "train", "epoch": "one"}]\n'), /log\.json: 0\.epoch: .*not a list of epoch records/],
      ['folder', (d) => mkdirSync(join(d, 'log.json')), /log\.json: cannot read the earlier run's epochs/],
    ];
    for (const [task, spoil, message] of cases) {
      // The earlier run's files: its checkpoint (the continuation's weights) and resume point, and the log.json spoiled.
      await run(data, logDir, task, []);
      const dir = join(logDir, task);
      const sets = [...TWO_EPOCHS, 'base.epoch=1', `base.checkpoint_path=${join(dir, 'train-epoch1.safetensors')}`];
      rmSync(join(dir, 'log.json'));
      spoil(dir);
      const before = folderBytes(dir);
      await assert.rejects(
        run(data, logDir, task, sets),
        (e: unknown) => e instanceof GdpError && e.code === 'BAD_RUN_FILE' && message.test(e.message) && e.message.includes(join(dir, 'log.json')),
      );
      assert.deepEqual(folderBytes(dir), before, `${task}: every file of the earlier run as it was`);
    }
  });

  it('base.epoch >= max_epoch, the train stage only: runStages has nothing to do, says so and writes nothing', async () => {
    const weights = join(logDir, 'smoke', 'train-epoch1.safetensors');
    // An earlier run in the folder: its files stay byte for byte (the summary, the resume point were rewritten).
    await run(data, logDir, 'done', []);
    const before = folderBytes(join(logDir, 'done'));
    const done = await run(data, logDir, 'done', ['base.epoch=1', `model.weights=${weights}`]);
    assert.equal(done.steps, 0);
    assert.deepEqual(folderBytes(done.dir), before);
    const said = `gdp-coord: nothing to do: base.epoch 1 has reached train.max_epoch 1 and the stages are only 'train'; ${done.dir} is left as it is`;
    assert.ok(done.lines.some((l) => l.startsWith(said)), done.lines.join('\n'));
    assert.ok(!done.lines.some((l) => l.startsWith('gdp-coord: stage ') || l.startsWith('resume point:')), 'no stage, no resume point');
  });

  it('base.epoch >= max_epoch with a later stage: the train stage has nothing to do and says so, the later stage runs', async () => {
    const weights = join(logDir, 'smoke', 'train-epoch1.safetensors');
    const later = await run(data, logDir, 'later', ['base.epoch=1', `model.weights=${weights}`, 'stages=["train","finetune"]']);
    assert.deepEqual(later.records.map((r) => r.stage), ['finetune']);
    assert.ok(!existsSync(join(later.dir, 'train-epoch1.safetensors')));
    assert.ok(existsSync(join(later.dir, 'finetuned.safetensors')));
    assert.ok(later.lines.includes(`train: nothing to do: epoch 1 of 1 already done (base.epoch 1, weights ${weights})`), later.lines.join('\n'));
  });
});
