import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseConfig } from '../../src/shared/config/load.js';
import { GdpError } from '../../src/shared/errors.js';
import { archSpec, buildModel, checkModelFitsData } from '../../src/shared/models/registry.js';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkBatchFits, checkDataSizes, checkInitialWeights, checkPrunable, runStartChecks } from '../../src/coordinator/start_checks.js';
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
