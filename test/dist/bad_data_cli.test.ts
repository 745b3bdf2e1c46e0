import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { writeSolidFolder } from '../data/folder_files.js';
import { alive, coord, workerPids } from './cli_helpers.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A config file for gdp-coord: mnist.resnet20 on a folder of 3 classes, 2 steps; its logs in a fresh folder. */
/** A folder-run config in a fresh folder; `norm` sets data.mean/data.std (else computed from the images at start). */
function configFile(norm: { mean?: number[]; std?: number[] } = {}): { file: string; logDir: string } {
  const logDir = mkdtempSync(join(tmpdir(), 'gdp-bad-cli-'));
  dirs.push(logDir);
  const file = join(logDir, 'cfg.json');
  const config = {
    base: { task_name: 'bad', seed: 0, log_dir: logDir },
    model: { name: 'mnist.resnet20', num_class: 3 },
    train: { max_epoch: 1, steplr: [[1, 0.05]], max_steps_per_epoch: 2 },
    data: { type: 'folder', batch_size: 4, test_batch_size: 4, num_workers: 0, ...norm },
    loss: { criterion: 'softmax' },
    stages: ['train'],
  };
  writeFileSync(file, JSON.stringify(config));
  return { file, logDir };
}

test('--dry-run: a folder image that holds text fails the data check with BAD_DATA naming it, exit 2', async () => {
  const fx = await writeSolidFolder(1);
  dirs.push(fx.dir);
  const broken = join(fx.dir, 'train', 'moth', 'broken.png');
  writeFileSync(broken, 'hello, not an image\n');
  const { file } = configFile();
  const r = await coord(['--dry-run', '--config', file, '--data-dir', fx.dir], 120000);
  assert.equal(r.code, 2, `exit ${r.code}\n${r.out}\n${r.err}`);
  assert.ok(r.err.includes(`error [BAD_DATA]: folder/train: ${broken} is not an image`), r.err);
});

test('--local: an image that does not decode (a cut PNG) ends the run with BAD_DATA naming it, exit 2, without waiting for workers', async () => {
  const fx = await writeSolidFolder(1);
  dirs.push(fx.dir);
  const bad = join(fx.dir, 'train', fx.train[2].file);
  const bytes = readFileSync(bad);
  writeFileSync(bad, bytes.subarray(0, bytes.length >> 1));
  // With the normalisation given, the coordinator decodes nothing at start: the worker meets the cut PNG first.
  const { file } = configFile({ mean: [0.5], std: [0.25] });
  const args = ['--workers', '2', '--local', '--listen', '127.0.0.1:0', '--backend', 'wasm', '--no-dashboard', '--config', file, '--data-dir', fx.dir];
  const r = await coord(args, 180000);
  assert.equal(r.code, 2, `exit ${r.code} ${r.signal}\n${r.out}\n${r.err}`);
  // Which worker draws the file depends on the order they joined in.
  const failed = new RegExp(`error \\[BAD_DATA\\]: worker local(\\d): cannot decode image ${bad.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`).exec(r.err);
  assert.ok(failed, r.err);
  assert.doesNotMatch(r.out, /redoing it|paused|WORKERS_EXITED/, r.out);
  // The other worker, still connected, hears that the run failed, not that it finished.
  assert.match(r.out, new RegExp(`\\[local${1 - Number(failed[1])}\\] coordinator ended the session: the run failed: BAD_DATA`), r.out);
  for (const pid of workerPids(r.out)) assert.ok(!alive(pid), `worker ${pid} still running`);
});
