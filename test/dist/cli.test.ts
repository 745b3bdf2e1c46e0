import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import '../../src/coordinator/all_stages.js';
import { assertStagesAvailable } from '../../src/coordinator/stages.js';
import { GdpError } from '../../src/shared/errors.js';
import { initBackend } from '../../src/shared/backend.js';
import { saveModelFile } from '../../src/shared/io/model_file.js';
import { tfjsDirWriter } from '../../src/shared/io/tfjs_files.js';
import { buildModel } from '../../src/shared/models/registry.js';
import { convFlattenDense } from '../io/tfjs_models.js';
import { alive, coord, ROOT, smokeArgs, worker, workerPids } from './cli_helpers.js';

await initBackend('cpu');

test('--dry-run prints the resolved config, without --workers; the default config is found from any cwd', async () => {
  const r = await coord(['--dry-run', '--set', 'stages=["train"]', '--set', 'train.momentum=0.5'], 30000);
  assert.equal(r.code, 0, r.err);
  const config = JSON.parse(r.out);
  assert.equal(config.model.name, 'mnist.resnet20');
  assert.equal(config.train.momentum, 0.5);
  assert.equal(config.dist.bucket_mib, 16);
});

test("--dry-run: the paper's device hints base.cuda and base.multi_gpus are accepted and noted once each on stderr", async () => {
  const r = await coord(['--dry-run', '--set', 'stages=["train"]', '--set', 'base.cuda=true', '--set', 'base.multi_gpus=true'], 30000);
  assert.equal(r.code, 0, r.err);
  assert.equal(JSON.parse(r.out).base.cuda, true);
  assert.equal(r.err.match(/gdp-coord: config: base\.cuda is true: .*--backend and --gpu/g)?.length, 1, r.err);
  assert.equal(r.err.match(/gdp-coord: config: base\.multi_gpus is true: .*--workers N/g)?.length, 1, r.err);
});

test('an invalid config is a clear error with the key path and a non-zero exit', async () => {
  const r = await coord(['--workers', '1', '--dry-run', '--set', 'train.momentum=7'], 30000);
  assert.equal(r.code, 2);
  assert.match(r.err, /BAD_CONFIG.*\n\s+train\.momentum: /);
  const flags = await coord(['--workers', 'two', '--dry-run'], 30000);
  assert.notEqual(flags.code, 0);
});

test('--dry-run runs the start-up checks a real start runs: each failure exits non-zero naming what fails', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gdp-dry-'));
  try {
    const cifar20 = join(dir, 'cifar20.safetensors');
    const model = buildModel('cifar.resnet20', { seed: 1 });
    await saveModelFile(cifar20, model, { arch: 'cifar.resnet20', numClasses: 10 });
    model.dispose();
    const noBn = convFlattenDense([28, 28, 1], 10);
    await noBn.save(tfjsDirWriter(join(dir, 'nobn')));
    noBn.dispose();
    const cases: [string[], number, RegExp][] = [
      [['--set', 'model.name=cifar.resnet56'], 2, /BAD_CONFIG.*model\.name: 'cifar\.resnet56' takes 32x32x3 images/],
      [['--set', `model.weights=${join(dir, 'absent.safetensors')}`], 1, /FILE_NOT_FOUND.*absent\.safetensors/],
      [['--set', `model.weights=${cifar20}`], 1, /ARCH_MISMATCH.*cifar20\.safetensors.*'cifar\.resnet20'.*'mnist\.resnet20'/],
      [['--set', 'data.type=cifar10', '--set', 'model.name=cifar.resnet20', '--set', `data.dir=${join(dir, 'no-cifar')}`], 1, /BAD_DATA.*no-cifar/],
      // The batch: one wasm worker cannot hold a training step on 4096 MNIST digits (no allocation: an estimate).
      [['--workers', '1', '--local', '--backend', 'wasm', '--set', 'data.batch_size=4096'], 1, /BATCH_TOO_LARGE.*data\.batch_size 4096 on 1 worker makes shards of 4096 samples.*limit of 4\.00 GiB.*more workers/],
      // Without --local the shard size is known from --workers too; the check assumes the workers' default, wasm.
      [['--workers', '1', '--set', 'data.batch_size=4096'], 1, /BATCH_TOO_LARGE.*data\.batch_size 4096 on 1 worker.*wasm backend's memory limit/],
      // A model without BatchNorm has nothing to prune: refused before the train stage, with the reasons.
      [
        ['--set', 'stages=["train","prune"]', '--set', 'model.name=graph', '--set', `model.file=${join(dir, 'nobn', 'model.json')}`],
        2,
        /NOTHING_TO_PRUNE.*Gate Decorator prunes the channels of BatchNorm layers.*'@conv' \(4 channels from 'conv'\): 'out' reads it without a BN/,
      ],
      [['--set', 'data.batch_size=100000'], 2, /BAD_CONFIG.*data\.batch_size: 100000 is larger than the training set \(\d+ samples\)/],
      [['--set', 'data.test_subset=100000'], 2, /BAD_CONFIG.*data\.test_subset: 100000 is larger than the test set \(\d+ samples\)/],
    ];
    for (const [args, code, message] of cases) {
      const r = await coord(['--dry-run', '--set', 'stages=["train"]', ...args], 60000);
      // Input errors: exit 2 for a bad config; the others' status follows the error catalogue (1 or 2), never 0.
      if (code === 2) assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
      else assert.ok(r.code === 1 || r.code === 2, `${args.join(' ')}: exit ${r.code}: ${r.err}`);
      assert.match(r.err, message);
      assert.equal(r.out, '', 'a failed dry run prints no config');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--dry-run says which backend the shard-size check assumed, or why it skipped it', async () => {
  const remote = await coord(['--dry-run', '--workers', '2', '--set', 'stages=["train"]'], 30000);
  assert.equal(remote.code, 0, remote.err);
  assert.match(remote.err, /gdp-coord: shard-size memory check: 2 worker\(s\) fit on the wasm backend \(assumed: the workers' default/);
  const none = await coord(['--dry-run', '--set', 'stages=["train"]'], 30000);
  assert.match(none.err, /gdp-coord: shard-size memory check skipped: without --workers the shard size is not known/);
  const cpu = await coord(['--dry-run', '--workers', '1', '--local', '--backend', 'cpu', '--set', 'stages=["train"]'], 30000);
  assert.match(cpu.err, /gdp-coord: shard-size memory check skipped: gdp knows no memory limit for the cpu backend/);
});

test("commander's own rejections are BAD_FLAG with exit 2, naming the flag; --help still exits 0", async () => {
  const cases: [(args: string[], timeoutMs: number) => Promise<{ code: number | null; err: string }>, string[], RegExp][] = [
    [coord, ['--wokers', '2'], /^gdp-coord: error \[BAD_FLAG\]: unknown option '--wokers'\n\(Did you mean --workers\?\)/],
    [coord, ['--backend', 'foo'], /^gdp-coord: error \[BAD_FLAG\]: option '--backend <name>' argument 'foo' is invalid/],
    [coord, ['--workers', 'two'], /^gdp-coord: error \[BAD_FLAG\]: .*--workers must be a positive integer, got 'two'/],
    [coord, ['--local', '--in-process', '--workers', '1', '--dry-run'], /^gdp-coord: error \[BAD_FLAG\]: option '--local' cannot be used with option '--in-process'/],
    [worker, [], /^gdp-worker: error \[BAD_FLAG\]: required option '--connect <url>' not specified/],
    [worker, ['--connect', 'ws://127.0.0.1:1', '--gpu', '-1'], /^gdp-worker: error \[BAD_FLAG\]: .*--gpu must be a GPU index/],
  ];
  for (const [bin, args, message] of cases) {
    const r = await bin(args, 30000);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
    assert.match(r.err, message);
  }
  for (const bin of [coord, worker]) {
    const help = await bin(['--help'], 30000);
    assert.equal(help.code, 0, help.err);
    assert.match(help.out, /^Usage: gdp-(coord|worker) \[options\]/);
  }
});

test('--config naming a missing file is FILE_NOT_FOUND, exit 2; a --set mistake names the --set', async () => {
  const r = await coord(['--dry-run', '--config', 'nope.json'], 30000);
  assert.equal(r.code, 2, r.err);
  assert.match(r.err, /^gdp-coord: error \[FILE_NOT_FOUND\]: cannot read config file nope\.json/);
  const set = await coord(['--dry-run', '--set', 'gbn.targt_flops=0.5'], 30000);
  assert.equal(set.code, 2, set.err);
  assert.match(set.err, /BAD_CONFIG\]: invalid --set on .*\n\s+gbn: unknown key 'targt_flops' \(from --set gbn\.targt_flops=0\.5\); did you mean 'target_flops'\?/);
});

test("a config's relative model.file is found next to the config from any cwd, and tfjs prints no Node.js banner", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gdp-own-'));
  try {
    const net = tf.sequential({ layers: [tf.layers.conv2d({ inputShape: [28, 28, 1], filters: 4, kernelSize: 3 }), tf.layers.flatten(), tf.layers.dense({ units: 10 })] });
    await net.save(tfjsDirWriter(join(dir, 'net')));
    net.dispose();
    const own = JSON.parse(readFileSync(join(ROOT, 'configs', 'own-model.json'), 'utf8'));
    own.model.file = 'net/model.json';
    const config = join(dir, 'own.json');
    writeFileSync(config, JSON.stringify(own));
    // The helpers run the command in the temporary folder's parent: 'net/model.json' is not there.
    const r = await coord(['--dry-run', '--config', config, '--set', 'stages=["train"]'], 60000);
    assert.equal(r.code, 0, r.err);
    assert.equal(JSON.parse(r.out).model.file, join(dir, 'net', 'model.json'));
    assert.doesNotMatch(r.out + r.err, /looks like you are running TensorFlow\.js in Node\.js/);
    // A --set path stays relative to the working directory.
    const set = await coord(['--dry-run', '--config', config, '--set', 'model.file=net/model.json'], 60000);
    assert.equal(set.code, 2, set.err);
    assert.match(set.err, /FILE_NOT_FOUND.*cannot read model net\/model\.json/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('without --dry-run, --workers is required', async () => {
  const r = await coord(['--set', 'stages=["train"]'], 30000);
  assert.equal(r.code, 2);
  assert.match(r.err, /BAD_FLAG.*--workers <n> is required/);
});

test('an unknown stage is BAD_CONFIG; one without a registered runner (a bug of the build) INTERNAL at start-up', async () => {
  const r = await coord(['--dry-run', '--set', 'stages=["distill"]'], 30000);
  assert.equal(r.code, 2);
  assert.match(r.err, /BAD_CONFIG.*stages\.0: Invalid option/s);
  assert.doesNotThrow(() => assertStagesAvailable(['train']));
  assert.throws(() => assertStagesAvailable(['train', 'distill']), (e: unknown) => e instanceof GdpError && e.code === 'INTERNAL' && /'distill'/.test(e.message));
});

test('--local: Ctrl-C (SIGINT to the process group, as a terminal sends it) ends the coordinator and then its workers', async () => {
  const logDir = mkdtempSync(join(tmpdir(), 'gdp-cli-'));
  try {
    let sent = false;
    const r = await coord(
      smokeArgs(logDir),
      120000,
      (out, kill) => {
        if (!sent && /train epoch 1\/\d+ step 1\//.test(out)) {
          sent = true;
          kill('SIGINT');
        }
      },
      undefined,
      true,
    );
    assert.ok(sent, r.out + r.err);
    assert.equal(r.code, 130, r.out + r.err);
    // The workers are in their own group: the coordinator stops them, rather than each leaving mid-step.
    assert.doesNotMatch(r.out, /redoing it|paused before|SIGINT: leaving/, r.out);
    const pids = workerPids(r.out);
    assert.equal(pids.length, 2);
    for (const pid of pids) assert.ok(!alive(pid), `worker ${pid} still running`);
  } finally {
    rmSync(logDir, { recursive: true, force: true });
  }
});

test('without --local: prints the exact worker command, and SIGTERM while waiting ends it', async () => {
  let command = '';
  const r = await coord(['--workers', '1', '--listen', '127.0.0.1:0', '--backend', 'cpu', '--set', 'stages=["train"]'], 60000, (out, kill) => {
    const m = /gdp-worker --connect ws:\/\/127\.0\.0\.1:(\d+)/.exec(out);
    if (m && !command) {
      command = m[0];
      kill('SIGTERM');
    }
  });
  assert.ok(Number(/:(\d+)$/.exec(command)?.[1]) > 0, r.out);
  assert.match(r.out, /backend cpu/);
  assert.equal(r.code, 143, r.out + r.err);
});
