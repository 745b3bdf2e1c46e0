import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { checkRunFolder, clearRunFolder, runFilesIn, runFolder } from '../../src/coordinator/run_folder.js';
import { runStartChecks } from '../../src/coordinator/start_checks.js';
import { initBackend } from '../../src/shared/backend.js';
import { parseConfig } from '../../src/shared/config/load.js';
import { GdpError } from '../../src/shared/errors.js';
import { runModelFiles } from '../../src/shared/io/run_file_kinds.js';
import { serializeSafetensors } from '../../src/shared/io/safetensors.js';

await initBackend('cpu');

const root = mkdtempSync(join(tmpdir(), 'gdp-run-folder-'));
after(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
/** A config whose run folder is a new, not yet existing folder under `root`. */
function config(base: Record<string, unknown> = {}) {
  return parseConfig({
    base: { task_name: 't', log_dir: join(root, `logs${n++}`), ...base },
    model: { name: 'mnist.resnet20', num_class: 10 },
    train: { max_epoch: 1, steplr: [[1, 0.1]] },
    data: { type: 'mnist', batch_size: 8, test_batch_size: 8, test_subset: 16 },
    loss: { criterion: 'softmax' },
  });
}

/** A resume point's header as writeResumePoint writes it (no tensors: only the header is read), at `stage` of 3. */
function resumePoint(dir: string, stage: number, steps: number): void {
  const run = { stage, steps, workers: 2, files: { records: [], logs: {} }, summary: [] };
  const metadata = { format: 'gdp-resume/1', config: JSON.stringify({ stages: ['train', 'prune', 'finetune'] }), updates: '[]', run: JSON.stringify(run) };
  writeFileSync(join(dir, 'resume.safetensors'), serializeSafetensors(new Map(), metadata));
}

function folder(c: ReturnType<typeof config>, files: string[]): string {
  const dir = runFolder(c);
  mkdirSync(dir, { recursive: true });
  for (const f of files) writeFileSync(join(dir, f), `${f}\n`);
  return dir;
}

/** A log.json record of train epoch `epoch`, as RunFiles writes it. */
function epochRecord(epoch: number) {
  return { stage: 'train', epoch, lr: 0.1, train_loss: 1, train_acc: 0.5, test_loss: 1, 'acc@1': 0.5, 'acc@5': 0.9, img_s: 100, worker_img_s: { w1: 50 } };
}

const code =
  (c: string, ...mention: string[]) =>
  (e: unknown) => {
    assert.ok(e instanceof GdpError && e.code === c, String(e));
    for (const m of mention) assert.ok(e.message.includes(m), `'${m}' not in: ${e.message}`);
    return true;
  };

describe('checkRunFolder: a fresh run never writes into an earlier run', () => {
  it('a missing, empty or unrelated folder is fine', () => {
    assert.doesNotThrow(() => checkRunFolder(config()));
    const empty = config();
    folder(empty, []);
    assert.doesNotThrow(() => checkRunFolder(empty));
    const unrelated = config();
    folder(unrelated, ['notes.txt', 'my_weights.safetensors', 'cfg.json.bak']);
    assert.doesNotThrow(() => checkRunFolder(unrelated));
    assert.deepEqual(runFilesIn(runFolder(unrelated)), []);
  });

  it("runFilesIn: the run's logs, its model files as run_file_kinds tells them, an epoch checkpoint's .optim, their temp files", () => {
    const c = config();
    const models = ['finetuned', 'gbn_40', 'gbn_70', 'pruned', 'train-epoch10', 'train-epoch2'].map((m) => `${m}.safetensors`);
    const dir = folder(c, [...models, 'train-epoch2.optim.safetensors', 'gbn_40.safetensors.tmp-99', 'prune_log.json.tmp-3']);
    folder(c, ['pruned.optim.safetensors', 'gbn_x.safetensors', 'train-epoch.safetensors', 'resume.safetensors.bak', 'log.json.tmp-x']);
    assert.deepEqual(runModelFiles(dir).sort(), models.sort());
    assert.deepEqual(runFilesIn(dir), [...models, 'train-epoch2.optim.safetensors', 'gbn_40.safetensors.tmp-99', 'prune_log.json.tmp-3'].sort());
  });

  it('a finished run: BAD_CONFIG naming the folder and its files, with another task name or --overwrite as the ways on', () => {
    const c = config();
    const dir = folder(c, ['cfg.json', 'log.json', 'summary.json', 'pruned.safetensors']);
    resumePoint(dir, 3, 40);
    assert.throws(
      () => checkRunFolder(c),
      code('BAD_CONFIG', dir, 'a finished run', 'cfg.json, log.json, pruned.safetensors, resume.safetensors, summary.json', 'base.task_name', '--overwrite'),
    );
    assert.throws(
      () => checkRunFolder(c),
      (e: Error) => !e.message.includes('--resume'),
    );
  });

  it('an interrupted run: its resume point is named, and --resume offered first', () => {
    const c = config();
    const dir = folder(c, ['cfg.json', 'log.json', 'train-epoch1.safetensors', 'train-epoch1.optim.safetensors']);
    resumePoint(dir, 1, 7);
    assert.throws(
      () => checkRunFolder(c),
      code('BAD_CONFIG', "an interrupted run (its resume point: stage 'prune', step 7)", `continue it with --resume ${dir}`),
    );
  });

  it('a run without a readable resume point is refused too, saying so', () => {
    const early = config();
    folder(early, ['cfg.json']);
    assert.throws(() => checkRunFolder(early), code('BAD_CONFIG', 'stopped before its first resume point', 'cfg.json'));
    const broken = config();
    folder(broken, ['cfg.json', 'resume.safetensors']);
    assert.throws(() => checkRunFolder(broken), code('BAD_CONFIG', 'resume point cannot be read', 'resume.safetensors'));
  });

  it("a base.epoch continuation numbers its epochs on in the folder, as the paper's main.py; --overwrite would delete it", () => {
    const c = config({ epoch: 1, checkpoint_path: 'w.safetensors' });
    const dir = folder(c, ['cfg.json', 'train-epoch1.safetensors']);
    writeFileSync(join(dir, 'log.json'), JSON.stringify([epochRecord(1), epochRecord(2)]));
    resumePoint(dir, 3, 40);
    assert.doesNotThrow(() => checkRunFolder(c));
    assert.throws(() => checkRunFolder(c, { overwrite: true }), code('BAD_FLAG', '--overwrite', 'base.epoch 1'));
  });

  it('a continuation over an interrupted run would replace its resume point: BAD_CONFIG with --resume and --discard-resume as the ways on', async () => {
    const c = config({ epoch: 1, checkpoint_path: 'w.safetensors' });
    const dir = folder(c, ['cfg.json', 'train-epoch1.safetensors', 'train-epoch1.optim.safetensors']);
    writeFileSync(join(dir, 'log.json'), JSON.stringify([epochRecord(1)]));
    resumePoint(dir, 1, 7);
    const refused = code(
      'BAD_CONFIG',
      `${dir} holds an interrupted run (its resume point: stage 'prune', step 7)`,
      join(dir, 'resume.safetensors'),
      `gdp-coord --resume ${dir}`,
      '--discard-resume',
    );
    assert.throws(() => checkRunFolder(c), refused);
    // Checked with the folder, first of the start checks: --dry-run says so too, before any worker joins.
    await assert.rejects(runStartChecks(c, { resumed: false }), refused);
    assert.doesNotThrow(() => checkRunFolder(c, { discardResume: true }), 'given up explicitly');
    assert.ok(existsSync(join(dir, 'resume.safetensors')), 'the check deletes nothing');
    // A finished run's resume point (a run keeps its last one), none, or one that cannot be read: nothing to resume.
    resumePoint(dir, 3, 40);
    assert.doesNotThrow(() => checkRunFolder(c));
    rmSync(join(dir, 'resume.safetensors'));
    assert.doesNotThrow(() => checkRunFolder(c));
    writeFileSync(join(dir, 'resume.safetensors'), 'not safetensors');
    assert.doesNotThrow(() => checkRunFolder(c));
  });

  it('--discard-resume is for a continuation: BAD_FLAG for a fresh run, which replaces an earlier run with --overwrite', () => {
    const c = config();
    const dir = folder(c, ['cfg.json']);
    resumePoint(dir, 1, 7);
    assert.throws(() => checkRunFolder(c, { discardResume: true }), code('BAD_FLAG', '--discard-resume', 'base.epoch is 0', '--overwrite'));
    assert.throws(() => checkRunFolder(config(), { discardResume: true }), code('BAD_FLAG', '--discard-resume'), 'an empty folder too');
  });

  it("a continuation keeps the earlier log.json's epochs, so one that cannot be read stops it: BAD_RUN_FILE naming it", async () => {
    const spoilt: [string, (path: string) => void, string][] = [
      ['not JSON', (p) => writeFileSync(p, '[{"stage": "train",'), 'not JSON'],
      ['no list', (p) => writeFileSync(p, '{"epochs": []}'), '(root)'],
      ['no record', (p) => writeFileSync(p, JSON.stringify([epochRecord(1), { stage: 'train', epoch: 2 }])), '1.lr'],
      ['a folder', (p) => mkdirSync(p), 'cannot read'],
    ];
    for (const [what, spoil, mention] of spoilt) {
      const c = config({ epoch: 1, checkpoint_path: 'w.safetensors' });
      const dir = folder(c, ['cfg.json']);
      spoil(join(dir, 'log.json'));
      assert.throws(() => checkRunFolder(c), code('BAD_RUN_FILE', join(dir, 'log.json'), mention), what);
      // Checked with the folder, first of the start checks: --dry-run says so too, before any worker joins.
      await assert.rejects(runStartChecks(c, { resumed: false }), code('BAD_RUN_FILE', 'log.json'));
    }
    const fresh = config({ epoch: 1, checkpoint_path: 'w.safetensors' });
    assert.doesNotThrow(() => checkRunFolder(fresh), 'without log.json there is nothing to keep');
  });

  it('--overwrite passes, saying what will go; clearRunFolder deletes the run files only', () => {
    const c = config();
    const run = ['cfg.json', 'dashboard.json', 'finetune_log.json', 'finetuned.safetensors', 'gbn_90.safetensors', 'log.json', 'log.json.tmp-123'];
    const dir = folder(c, [...run, 'notes.txt', 'my_weights.safetensors']);
    resumePoint(dir, 3, 40);
    const notes: string[] = [];
    assert.doesNotThrow(() => checkRunFolder(c, { overwrite: true, note: (l) => notes.push(l) }));
    assert.match(notes.join('\n'), /--overwrite: the 8 file\(s\) of the earlier run in .* will be deleted once the workers have joined/);
    assert.ok(existsSync(join(dir, 'cfg.json')), 'the check deletes nothing');
    assert.deepEqual(clearRunFolder(dir), [...run, 'resume.safetensors'].sort());
    assert.deepEqual(readdirSync(dir).sort(), ['my_weights.safetensors', 'notes.txt']);
    assert.doesNotThrow(() => checkRunFolder(c));
  });
});

describe('runStartChecks', () => {
  it('checks the run folder first (also for --dry-run), and not for a resumed run', async () => {
    const c = config();
    resumePoint(folder(c, ['cfg.json']), 1, 3);
    await assert.rejects(runStartChecks(c, { resumed: false }), code('BAD_CONFIG', 'an interrupted run', '--resume'));
    const data = await runStartChecks(c, { resumed: true });
    assert.equal(data.test.size, 16);
  });
});
