import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { initBackend } from '../../src/shared/backend.js';
import { saveModelFile } from '../../src/shared/io/model_file.js';
import { serializeSafetensors } from '../../src/shared/io/safetensors.js';
import { buildModel } from '../../src/shared/models/registry.js';
import { coord, ROOT } from './cli_helpers.js';

/** gdp-coord --dry-run of a base.epoch continuation in a folder whose earlier run was interrupted (no training). */

await initBackend('cpu');
const logDir = mkdtempSync(join(tmpdir(), 'gdp-continuation-cli-'));
after(() => rmSync(logDir, { recursive: true, force: true }));
const dir = join(logDir, 't');
const weights = join(dir, 'train-epoch1.safetensors');

/** The smoke config continued from epoch 1 in logDir/t; `flags`: more flags. */
function args(...flags: string[]): string[] {
  const sets = [`base.log_dir=${logDir}`, 'base.task_name=t', 'stages=["train"]', 'train.max_epoch=2', 'base.epoch=1', `base.checkpoint_path=${weights}`];
  return ['--dry-run', '--backend', 'cpu', '--config', join(ROOT, 'configs', 'smoke.json'), ...sets.flatMap((s) => ['--set', s]), ...flags];
}

/** Every file of the run folder with its bytes. */
const snapshot = () => new Map(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f)).toString('base64')]));

test('a continuation over an interrupted run: refused at start and by --dry-run, naming --resume and --discard-resume; --discard-resume goes on, saying so', async () => {
  mkdirSync(dir, { recursive: true });
  await saveModelFile(weights, buildModel('mnist.resnet20', { seed: 1 }), { arch: 'mnist.resnet20', numClasses: 10 });
  // The header of an interrupted run's resume point, as writeResumePoint writes it: stage 'prune', step 7.
  const run = { stage: 1, steps: 7, workers: 2, files: { records: [], logs: {} }, summary: [] };
  const config = JSON.stringify({ stages: ['train', 'prune', 'finetune'] });
  writeFileSync(join(dir, 'resume.safetensors'), serializeSafetensors(new Map(), { format: 'gdp-resume/1', config, updates: '[]', run: JSON.stringify(run) }));
  writeFileSync(join(dir, 'cfg.json'), '{}\n');
  const before = snapshot();

  const refused = await coord(args(), 60_000);
  assert.equal(refused.code, 2, refused.out + refused.err);
  assert.match(refused.err, /error \[BAD_CONFIG\]: .* holds an interrupted run \(its resume point: stage 'prune', step 7\)/);
  assert.ok(refused.err.includes(`gdp-coord --resume ${dir}`) && refused.err.includes('--discard-resume'), refused.err);
  assert.equal(refused.out, '', 'no config printed');

  const given = await coord(args('--discard-resume'), 60_000);
  assert.equal(given.code, 0, given.out + given.err);
  assert.ok(
    given.err.includes(
      `gdp-coord: warning: the earlier run was interrupted (its resume point: stage 'prune', step 7): this run replaces ${join(dir, 'resume.safetensors')} as its first stage starts`,
    ),
    given.err,
  );
  assert.deepEqual(snapshot(), before, 'a dry run changes nothing');

  const both = await coord([...args('--discard-resume'), '--resume', dir], 60_000);
  assert.equal(both.code, 2, both.err);
  assert.match(both.err, /BAD_FLAG.*'--discard-resume' cannot be used with option '--resume/);
});
