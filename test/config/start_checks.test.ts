import assert from 'node:assert/strict';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { mock, test } from 'node:test';
import { parseConfig } from '../../src/shared/config/load.js';
import { GdpError } from '../../src/shared/errors.js';
import { archSpec, buildModel, checkModelFitsData } from '../../src/shared/models/registry.js';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkBatchFits, checkDataSizes, checkInitialWeights, checkPrunable, runStartChecks } from '../../src/coordinator/start_checks.js';
import { dataFingerprint, loadDataset } from '../../src/shared/data/index.js';
import { writeSolidFolder } from '../data/folder_files.js';
import { resolveModelGraph } from '../../src/shared/config/model_graph.js';
import { tfjsDirWriter } from '../../src/shared/io/tfjs_files.js';
import { convFlattenDense } from '../io/tfjs_models.js';
import { initBackend } from '../../src/shared/backend.js';
import { serializeSafetensors } from '../../src/shared/io/safetensors.js';
import { exportTorchState } from '../../src/shared/io/torch_state.js';

await initBackend('cpu');

const BASE = {
  base: { task_name: 't' },
  model: { name: 'mnist.resnet20', num_class: 10 },
  train: { max_epoch: 1, steplr: [[1, 0.1]] },
  data: { type: 'mnist', batch_size: 8, test_batch_size: 8 },
  loss: { criterion: 'softmax' },
};

const code =
  (c: string, ...mention: string[]) =>
  (e: unknown) =>
    e instanceof GdpError && e.code === c && mention.every((m) => e.message.includes(m));

test('inputs that would fail a run later fail at start, naming the key', () => {
  assert.throws(() => parseConfig({ ...BASE, stages: ['train', 'prune'] }), code('BAD_CONFIG', "gbn: stages 'prune' and 'finetune' need a 'gbn' section"));
  assert.throws(() => parseConfig({ ...BASE, stages: ['finetune'] }), code('BAD_CONFIG', 'gbn'));
  assert.throws(
    () => parseConfig({ ...BASE, dist: { heartbeat_ms: 2000, heartbeat_timeout_ms: 5000 } }),
    code('BAD_CONFIG', 'dist.heartbeat_timeout_ms: heartbeat_timeout_ms must be at least 3 heartbeat_ms'),
  );
  assert.equal(parseConfig(BASE).dist.heartbeat_timeout_ms, 30000);
  // Names of Object.prototype members are not architectures.
  for (const name of ['constructor', 'toString', '__proto__']) assert.throws(() => archSpec(name), code('UNKNOWN_ARCH', `'${name}'`));
});

test('the model must take the data: image shape and number of classes', () => {
  const c = parseConfig(BASE);
  assert.doesNotThrow(() => checkModelFitsData(c, { shape: [28, 28, 1], numClasses: 10 }));
  assert.throws(
    () => checkModelFitsData(c, { shape: [32, 32, 3], numClasses: 10 }),
    code('BAD_CONFIG', "model.name: 'mnist.resnet20' takes 28x28x1 images", '32x32x3'),
  );
  assert.throws(() => checkModelFitsData(c, { shape: [28, 28, 1], numClasses: 100 }), code('BAD_CONFIG', 'model.num_class: 10 outputs', '100 classes'));
});

test('the training batch split over the workers must fit the backend: the workers the error asks for are enough', () => {
  const c = parseConfig({ ...BASE, data: { ...BASE.data, batch_size: 4096, test_batch_size: 64 } });
  let need = 0;
  assert.throws(
    () => checkBatchFits(c, 1, 'wasm'),
    (e: unknown) => {
      assert.ok(code('BATCH_TOO_LARGE', 'data.batch_size 4096 on 1 worker', 'shards of 4096 samples', '4.00 GiB')(e), String(e));
      need = Number(/at least (\d+) workers/.exec((e as Error).message)?.[1]);
      return true;
    },
  );
  assert.ok(need > 1);
  assert.doesNotThrow(() => checkBatchFits(c, need, 'wasm'));
  assert.throws(() => checkBatchFits(c, need - 1, 'wasm'), code('BATCH_TOO_LARGE', `split over ${need - 1} workers`));
  assert.doesNotThrow(() => checkBatchFits(c, 1, 'cpu'));
  // Evaluation shards are checked too (a forward pass).
  const t = parseConfig({ ...BASE, data: { ...BASE.data, test_batch_size: 20000 } });
  assert.throws(() => checkBatchFits(t, 1, 'wasm'), code('BATCH_TOO_LARGE', 'data.test_batch_size 20000', 'a forward pass'));
});

test('the starting weights are read and checked against the config before any worker joins', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gdp-weights-'));
  try {
    const plainOf = (arch: string) => {
      const m = buildModel(arch, { seed: 2 });
      const file = join(dir, `${arch}.safetensors`);
      writeFileSync(file, serializeSafetensors(exportTorchState(m), { format: 'pt' }));
      m.dispose();
      return file;
    };
    const other = plainOf('cifar.resnet20');
    assert.throws(
      () => checkInitialWeights(parseConfig({ ...BASE, model: { ...BASE.model, weights: other } })),
      code('SHAPE_MISMATCH', 'cifar.resnet20.safetensors', 'conv1'),
    );
    const own = plainOf('mnist.resnet20');
    assert.doesNotThrow(() => checkInitialWeights(parseConfig({ ...BASE, model: { ...BASE.model, weights: own } })));
    assert.throws(
      () => checkInitialWeights(parseConfig({ ...BASE, model: { ...BASE.model, num_class: 100, weights: own } })),
      code('SHAPE_MISMATCH', '10 classes', 'num_class is 100'),
    );
    assert.doesNotThrow(() => checkInitialWeights(parseConfig(BASE)));
    // A file inside the run's own log folder: the new run would rewrite the results it came from.
    const logDir = join(dir, 'logs');
    const inside = join(logDir, 't', 'pruned.safetensors');
    mkdirSync(join(logDir, 't'), { recursive: true });
    copyFileSync(own, inside);
    const from = (task: string, weights: string) => parseConfig({ ...BASE, base: { task_name: task, log_dir: logDir }, model: { ...BASE.model, weights } });
    assert.throws(() => checkInitialWeights(from('t', inside)), code('BAD_CONFIG', 'model.weights', inside, 'set base.task_name'));
    assert.doesNotThrow(() => checkInitialWeights(from('t2', inside)), 'another task name writes elsewhere');
    assert.doesNotThrow(() => checkInitialWeights(from('t', own)), 'a file outside the folder');
    const continued = parseConfig({ ...BASE, base: { task_name: 't', log_dir: logDir, epoch: 1, checkpoint_path: inside } });
    assert.doesNotThrow(() => checkInitialWeights(continued), "base.epoch continues in the folder, as the paper's main.py");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const GBN = { gbn: { sparse_lambda: 1e-3, lr_min: 1e-3, lr_max: 2e-2, tock_epoch: 1, T: 3, p: 0.1, finetune_epoch: 1, target_flops: 0.5 } };

test('a run with a prune stage needs a prunable channel group: a model without BatchNorm fails at start with the reasons', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gdp-noprune-'));
  try {
    const stock = convFlattenDense([28, 28, 1], 10);
    await stock.save(tfjsDirWriter(join(dir, 'net')));
    stock.dispose();
    const model = { name: 'graph', num_class: 10, file: join(dir, 'net', 'model.json') };
    const withPrune = resolveModelGraph(parseConfig({ ...BASE, ...GBN, model, stages: ['train', 'prune'] }));
    assert.throws(
      () => checkPrunable(withPrune),
      code('NOTHING_TO_PRUNE', "stages include 'prune'", 'Gate Decorator prunes the channels of BatchNorm layers', "group '@conv' (4 channels from 'conv')"),
    );
    assert.throws(
      () => checkPrunable(withPrune),
      (e: unknown) => /'@conv'[^;]*: 'out' reads it without a BN in between/.test((e as Error).message),
    );
    assert.throws(
      () => checkPrunable(withPrune),
      (e: unknown) => /'@out'[^;]*: it is the network output/.test((e as Error).message),
    );
    // Without a prune stage the same model trains.
    assert.doesNotThrow(() => checkPrunable(resolveModelGraph(parseConfig({ ...BASE, model, stages: ['train'] }))));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  // A built-in network has a BN after every convolution.
  assert.doesNotThrow(() => checkPrunable(parseConfig({ ...BASE, ...GBN, stages: ['train', 'prune'] })));
});

test('data.batch_size and data.test_subset must fit the training and test sets, naming the key and both sizes', () => {
  const sizes = { train: 60000, test: 10000 };
  const c = (data: object) => parseConfig({ ...BASE, data: { ...BASE.data, ...data } });
  assert.throws(() => checkDataSizes(c({ batch_size: 60001 }), sizes), code('BAD_CONFIG', 'data.batch_size: 60001', 'training set (60000 samples)'));
  assert.throws(() => checkDataSizes(c({ test_subset: 10001 }), sizes), code('BAD_CONFIG', 'data.test_subset: 10001', 'test set (10000 samples)'));
  assert.doesNotThrow(() => checkDataSizes(c({ batch_size: 60000, test_subset: 10000 }), sizes));
});

test('the data check (a start, --dry-run) reads every image header: a folder image holding text stops it with BAD_DATA naming the file', async () => {
  const fx = await writeSolidFolder(1);
  try {
    const config = parseConfig({
      ...BASE,
      model: { name: 'mnist.resnet20', num_class: 3 },
      data: { type: 'folder', batch_size: 4, test_batch_size: 4, num_workers: 0 },
    });
    const data = await runStartChecks(config, { dataDir: fx.dir, resumed: false });
    assert.equal(data.train.size, fx.train.length);
    const broken = join(fx.dir, 'val', 'moth', 'broken.png');
    writeFileSync(broken, 'not a picture');
    await assert.rejects(runStartChecks(config, { dataDir: fx.dir, resumed: false }), code('BAD_DATA', 'folder/val: ', broken, 'is not an image'));
  } finally {
    rmSync(fx.dir, { recursive: true, force: true });
  }
});

/** A start's config of a 3-class folder run on cifar.resnet20 (32x32x3), `extra` over its data section. */
const folderRun = (dir: string, extra: Record<string, unknown> = {}) =>
  parseConfig({
    ...BASE,
    base: { task_name: 'fp', log_dir: `${dir}.logs` },
    model: { name: 'cifar.resnet20', num_class: 3 },
    data: { type: 'folder', dir, batch_size: 4, test_batch_size: 4, num_workers: 0, ...extra },
  });

/**
 * Runs `f` with node:fs's readdirSync and openSync counted (every ESM importer sees the spies: syncBuiltinESMExports),
 * and returns how often each listed folder and each opened file under `root` was, by path relative to `root`.
 */
async function countReads(root: string, f: () => Promise<unknown>): Promise<{ listed: Map<string, number>; opened: Map<string, number> }> {
  const listed = new Map<string, number>();
  const opened = new Map<string, number>();
  const count = (into: Map<string, number>, path: unknown) => {
    const p = String(path);
    if (!p.startsWith(`${root}/`)) return;
    const rel = p.slice(root.length + 1);
    into.set(rel, (into.get(rel) ?? 0) + 1);
  };
  const readdir = fs.readdirSync;
  const open = fs.openSync;
  mock.method(fs, 'readdirSync', (path: fs.PathLike, ...rest: unknown[]) => (count(listed, path), (readdir as (...a: unknown[]) => unknown)(path, ...rest)));
  mock.method(fs, 'openSync', (path: fs.PathLike, ...rest: unknown[]) => (count(opened, path), (open as (...a: unknown[]) => unknown)(path, ...rest)));
  syncBuiltinESMExports();
  try {
    await f();
  } finally {
    mock.restoreAll();
    syncBuiltinESMExports();
  }
  return { listed, opened };
}

test('a folder start lists the folder and reads each image header once, with or without data.mean/std, and computes the same normalisation', async () => {
  const fx = await writeSolidFolder(3);
  try {
    const folders = ['train', 'val', ...fx.classes.flatMap((c) => [`train/${c}`, `val/${c}`])].sort();
    const images = [...fx.train.map((i) => `train/${i.file}`), ...fx.val.map((i) => `val/${i.file}`)].sort();
    // What a worker computed for itself before the start decided it.
    const own = await loadDataset(folderRun(fx.dir));
    const computed = await (own.train as unknown as { normalisation(): Promise<unknown> }).normalisation();
    await own.close?.();
    for (const extra of [{}, { mean: [0.5, 0.25, 0.125], std: [0.2, 0.3, 0.4] }]) {
      const config = folderRun(fx.dir, extra);
      const { listed, opened } = await countReads(fx.dir, () => runStartChecks(config, { resumed: false }));
      assert.deepEqual([...listed.keys()].sort(), folders);
      assert.ok(
        [...listed.values()].every((n) => n === 1),
        `folder listings: ${JSON.stringify([...listed])}`,
      );
      assert.deepEqual([...opened.keys()].sort(), images);
      assert.ok(
        [...opened.values()].every((n) => n === 1),
        `header reads: ${JSON.stringify([...opened])}`,
      );
      if (!('mean' in extra)) assert.deepEqual({ mean: config.data.mean, std: config.data.std }, computed);
    }
  } finally {
    rmSync(fx.dir, { recursive: true, force: true });
  }
});

test("a folder start's fingerprint is the one earlier gdp versions gave and the workers' copies give, for a given and a computed normalisation", async () => {
  const fx = await writeSolidFolder(3);
  try {
    // Fingerprints of this folder as gdp gave them when the start read the folder twice (36e5dd4): a resumed run's
    // workers, and the workers of a run that started then, must still agree with the coordinator.
    const cases = [
      { extra: {}, print: 'train 7, test 3, labels 3fe02c825efb1d7c' },
      { extra: { mean: [0.5, 0.25, 0.125], std: [0.2, 0.3, 0.4] }, print: 'train 7, test 3, labels 4169d6e8c0cd7490' },
      { extra: { test_subset: 2 }, print: 'train 7, test 2, labels 90eb3a08801f16d2' },
    ];
    for (const { extra, print } of cases) {
      const config = folderRun(fx.dir, extra);
      const data = await runStartChecks(config, { resumed: false });
      assert.equal(dataFingerprint(data), print, JSON.stringify(extra));
      // A worker loads the config the start fixed (a computed normalisation written into it).
      const worker = await loadDataset(config);
      assert.equal(dataFingerprint(worker), print);
      await worker.close?.();
    }
  } finally {
    rmSync(fx.dir, { recursive: true, force: true });
  }
});
