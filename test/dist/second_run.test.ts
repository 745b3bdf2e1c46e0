import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { coord, ROOT, SMALL_SMOKE } from './cli_helpers.js';

/** The same command twice into one run folder (the issue: the second silently replaced half of the first run's files). */

const logDir = mkdtempSync(join(tmpdir(), 'gdp-second-run-'));
after(() => rmSync(logDir, { recursive: true, force: true }));
const dir = join(logDir, 'smoke');

/** The smoke config cut to seconds, in-process, into logDir/smoke; `sets`: more --set values. */
function args(...sets: string[]): string[] {
  const base = ['--workers', '2', '--in-process', '--backend', 'wasm', '--no-dashboard', '--config', join(ROOT, 'configs', 'smoke.json')];
  return [...base, ...SMALL_SMOKE, '--set', `base.log_dir=${logDir}`, ...sets.flatMap((s) => ['--set', s])];
}

/** Every file of the run folder with its bytes. */
function snapshot(): Map<string, Buffer> {
  return new Map(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f))]));
}

function assertUnchanged(before: Map<string, Buffer>, what: string): void {
  const now = snapshot();
  assert.deepEqual([...now.keys()].sort(), [...before.keys()].sort(), `${what}: the same files`);
  for (const [f, bytes] of before) assert.ok(now.get(f)!.equals(bytes), `${what}: ${f} changed`);
}

const TRAIN_ONLY = ['cfg.json', 'log.json', 'report.html', 'resume.safetensors', 'summary.json', 'train-epoch1.optim.safetensors', 'train-epoch1.safetensors'];

test('a second fresh run into a finished run is refused, the folder byte for byte unchanged; --overwrite replaces it whole', { timeout: 300_000 }, async () => {
  const first = await coord(args(), 120_000);
  assert.equal(first.code, 0, first.out + first.err);
  const finished = snapshot();
  assert.ok(finished.has('pruned.safetensors') && finished.has('prune_log.json'));

  // The command: the same task, the train stage only.
  const again = await coord(args('stages=["train"]'), 60_000);
  assert.equal(again.code, 2, again.out + again.err);
  assert.match(again.err, /error \[BAD_CONFIG\]: .*second-run-\w+\/smoke holds a finished run/);
  assert.match(again.err, /base\.task_name.*--overwrite/);
  assert.doesNotMatch(again.err, /--resume/, 'a finished run has nothing to resume');
  assertUnchanged(finished, 'refused run');

  const dry = await coord([...args('stages=["train"]'), '--dry-run'], 60_000);
  assert.equal(dry.code, 2, dry.out + dry.err);
  assert.match(dry.err, /BAD_CONFIG.*holds a finished run/);
  assertUnchanged(finished, 'dry run');

  const replaced = await coord([...args('stages=["train"]'), '--overwrite'], 120_000);
  assert.equal(replaced.code, 0, replaced.out + replaced.err);
  assert.match(replaced.out, /--overwrite: deleted the earlier run's 12 file\(s\)/);
  assert.deepEqual(readdirSync(dir).sort(), TRAIN_ONLY, "only the new run's files");
  const summary = JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8')) as { label: string }[];
  assert.deepEqual(
    summary.map((r) => r.label),
    ['final'],
  );

  // A base.epoch continuation numbers its epochs on in the same folder, as before.
  const earlier = (JSON.parse(readFileSync(join(dir, 'log.json'), 'utf8')) as unknown[])[0];
  const weights = join(dir, 'train-epoch1.safetensors');
  const continuation = ['stages=["train"]', 'base.epoch=1', `base.checkpoint_path=${weights}`, 'train.max_epoch=2', 'train.steplr=[[2,0.05]]'];
  // --dry-run says what the start will: the folder it continues, from which epoch and weights, the epochs kept.
  const said = `gdp-coord: continues ${dir} from epoch 1 (${weights}); log.json epochs kept: 1`;
  const before = snapshot();
  const plan = await coord([...args(...continuation), '--dry-run'], 60_000);
  assert.equal(plan.code, 0, plan.out + plan.err);
  assert.ok(plan.err.split('\n').includes(said), plan.err);
  assert.equal((JSON.parse(plan.out) as { base: { epoch: number } }).base.epoch, 1, 'stdout: the resolved config alone');
  assertUnchanged(before, 'dry run of the continuation');
  const continued = await coord(args(...continuation), 120_000);
  assert.equal(continued.code, 0, continued.out + continued.err);
  assert.ok(continued.out.split('\n').includes(said), continued.out);
  assert.match(continued.out, /train: continuing from epoch 2 of 2/);
  assert.ok(readdirSync(dir).includes('train-epoch2.safetensors'));
  // Its log.json goes on from the earlier run's epoch 1, which it keeps as it was.
  const records = JSON.parse(readFileSync(join(dir, 'log.json'), 'utf8')) as { stage: string; epoch: number }[];
  assert.deepEqual(
    records.map((r) => [r.stage, r.epoch]),
    [
      ['train', 1],
      ['train', 2],
    ],
  );
  assert.deepEqual(records[0], earlier);

  // Continued to epoch 2 of 2 with the train stage only: nothing to do, said, exit 0, no file touched (the issue:
  // cfg.json, summary.json, the report and the resume point were rewritten); --dry-run says so too.
  const done = args('stages=["train"]', 'base.epoch=2', `base.checkpoint_path=${join(dir, 'train-epoch2.safetensors')}`, 'train.max_epoch=2', 'train.steplr=[[2,0.05]]');
  const finished2 = snapshot();
  const idleDry = await coord([...done, '--dry-run'], 60_000);
  assert.equal(idleDry.code, 0, idleDry.out + idleDry.err);
  assert.match(idleDry.err, /gdp-coord: nothing to do: base\.epoch 2 has reached train\.max_epoch 2 and the stages are only 'train'/);
  const idle = await coord(done, 60_000);
  assert.equal(idle.code, 0, idle.out + idle.err);
  assert.ok(idle.out.includes(`gdp-coord: nothing to do: base.epoch 2 has reached train.max_epoch 2 and the stages are only 'train'; ${dir} is left as it is`), idle.out);
  assert.doesNotMatch(idle.out, /listening|stage 'train'|report:/, 'no worker, no stage, no report');
  assertUnchanged(finished2, 'nothing to do');
});

test('an interrupted run: a fresh start is refused naming its resume point and --resume, which continues it', { timeout: 300_000 }, async () => {
  const task = ['base.task_name=cut', 'base.resume_every_steps=1'];
  const cut = join(logDir, 'cut');
  let sent = false;
  const first = await coord(args(...task), 120_000, (out, kill) => {
    if (!sent && /resume point: stage 'prune'/.test(out)) {
      sent = true;
      kill('SIGINT');
    }
  });
  assert.equal(first.code, 130, first.out + first.err);
  const again = await coord(args(...task), 60_000);
  assert.equal(again.code, 2, again.out + again.err);
  assert.match(again.err, /holds an interrupted run \(its resume point: stage '\w+', step \d+\)/);
  assert.ok(again.err.includes(`continue it with --resume ${cut}`), again.err);
  const resumed = await coord(['--workers', '2', '--in-process', '--backend', 'wasm', '--no-dashboard', '--resume', cut], 120_000);
  assert.equal(resumed.code, 0, resumed.out + resumed.err);
  assert.match(resumed.out, /resuming .*resume\.safetensors at stage/);
});
