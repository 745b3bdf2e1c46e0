import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { editDistance, nearestKey } from '../../src/shared/config/issues.js';
import { applyOverrides, loadConfig, parseConfig, readConfigFile } from '../../src/shared/config/load.js';
import { configNotes } from '../../src/shared/config/notes.js';
import { GdpError } from '../../src/shared/errors.js';

/** The paper's VGG-16 demo config (run/vgg16/prune.json with multi_gpus off), verbatim. */
const VGG16_DEMO = JSON.parse(
  `{"base": {"task_name": "vgg16_cifar10", "cuda": true, "seed": 0, "checkpoint_path": "", "epoch": 0, "model_saving_interval": 80, "multi_gpus": false, "fp16": false}, "model": {"name": "cifar.vgg16", "num_class": 10, "pretrained": false}, "train": {"trainer": "normal", "max_epoch": 160, "optim": "sgd", "steplr": [[80, 0.1], [120, 0.01], [160, 0.001]], "weight_decay": 5e-4, "momentum": 0.9, "nesterov": false}, "data": {"type": "cifar10", "shuffle": true, "batch_size": 128, "test_batch_size": 128, "num_workers": 8}, "loss": {"criterion": "softmax"}, "gbn": {"sparse_lambda": 1e-3, "flops_eta": 0, "lr_min": 1e-3, "lr_max": 1e-2, "tock_epoch": 10, "T": 10, "p": 0.005, "finetune_epoch": 40}}`,
);

// dist/test/config/ -> repository root
const ROOT = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..', '..');

function rejectsWith(fn: () => unknown, code: string, ...mustMention: string[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof GdpError, `expected GdpError, got ${String(err)}`);
    assert.equal(err.code, code);
    for (const s of mustMention) assert.ok(err.message.includes(s), `message should mention '${s}': ${err.message}`);
    return true;
  });
}

describe('paper config parity', () => {
  it("loads the paper's VGG-16 demo unchanged, keeping its values", () => {
    const c = parseConfig(structuredClone(VGG16_DEMO));
    assert.equal(c.base.task_name, 'vgg16_cifar10');
    assert.equal(c.base.cuda, true);
    assert.equal(c.model.name, 'cifar.vgg16');
    assert.deepEqual(c.train.steplr, [
      [80, 0.1],
      [120, 0.01],
      [160, 0.001],
    ]);
    assert.equal(c.train.weight_decay, 5e-4);
    assert.equal(c.data.num_workers, 8);
    assert.equal(c.gbn?.p, 0.005);
    assert.equal(c.gbn?.T, 10);
    assert.equal(c.gbn?.finetune_epoch, 40);
    // Keys the paper does not have take their defaults.
    assert.deepEqual(c.stages, ['train']);
    assert.equal(c.data.dir, undefined);
  });

  it('names an unknown key by its path', () => {
    const raw = structuredClone(VGG16_DEMO);
    raw.gbn.tock_epochs = 10;
    rejectsWith(() => parseConfig(raw), 'BAD_CONFIG', 'gbn', "'tock_epochs'");
    const top = { ...structuredClone(VGG16_DEMO), optimiser: {} };
    rejectsWith(() => parseConfig(top), 'BAD_CONFIG', "'optimiser'");
  });

  it('names a wrongly typed key by its path', () => {
    const raw = structuredClone(VGG16_DEMO);
    raw.data.batch_size = '128';
    rejectsWith(() => parseConfig(raw), 'BAD_CONFIG', 'data.batch_size');
    const steps = structuredClone(VGG16_DEMO);
    steps.train.steplr[1][1] = 'x';
    rejectsWith(() => parseConfig(steps), 'BAD_CONFIG', 'train.steplr.1.1');
  });

  it('validates model.width_mult, model.input_size and gbn.round_to', () => {
    const raw = applyOverrides(structuredClone(VGG16_DEMO), ['model.name=mobilenet_v2', 'model.width_mult=0.5', 'model.input_size=32', 'gbn.round_to=8']);
    const c = parseConfig(raw);
    assert.deepEqual([c.model.width_mult, c.model.input_size, c.gbn?.round_to], [0.5, 32, 8]);
    assert.deepEqual([parseConfig(structuredClone(VGG16_DEMO)).model.width_mult, parseConfig(structuredClone(VGG16_DEMO)).gbn?.round_to], [undefined, 1]);
    rejectsWith(() => parseConfig(applyOverrides(structuredClone(VGG16_DEMO), ['model.width_mult=0'])), 'BAD_CONFIG', 'model.width_mult');
    rejectsWith(() => parseConfig(applyOverrides(structuredClone(VGG16_DEMO), ['model.input_size=31.5'])), 'BAD_CONFIG', 'model.input_size');
    rejectsWith(() => parseConfig(applyOverrides(structuredClone(VGG16_DEMO), ['gbn.round_to=0'])), 'BAD_CONFIG', 'gbn.round_to');
  });

  it('a --set to null removes the key, so that it takes its default (the whole-pass Tick without tick_batches)', () => {
    const raw = applyOverrides(structuredClone(VGG16_DEMO), ['gbn.tick_batches=10', 'gbn.round_to=4']);
    assert.deepEqual([parseConfig(raw).gbn?.tick_batches, parseConfig(raw).gbn?.round_to], [10, 4]);
    const unset = applyOverrides(raw, ['gbn.tick_batches=null', 'gbn.round_to=null']);
    assert.equal('tick_batches' in (unset.gbn as object), false);
    assert.deepEqual([parseConfig(unset).gbn?.tick_batches, parseConfig(unset).gbn?.round_to], [undefined, 1]);
  });

  it("validates the paper's Tick switches (gbn.tick_trains, tick_decay_frozen, prune_count, min_filters, minimal_rounding); defaults are gdp's", () => {
    const withSets = (...sets: string[]) => parseConfig(applyOverrides(structuredClone(VGG16_DEMO), sets));
    const d = withSets().gbn!;
    assert.deepEqual([d.tick_trains, d.tick_decay_frozen, d.prune_count, d.min_filters, d.minimal_rounding], ['gates', false, 'alive', 1, 'ceil']);
    const sets = ['gbn.tick_trains=all_but_conv', 'gbn.tick_decay_frozen=true', 'gbn.prune_count=lagged', 'gbn.min_filters=3', 'gbn.minimal_rounding=floor'];
    const c = withSets(...sets).gbn!;
    assert.deepEqual([c.tick_trains, c.tick_decay_frozen, c.prune_count, c.min_filters, c.minimal_rounding], ['all_but_conv', true, 'lagged', 3, 'floor']);
    rejectsWith(() => withSets('gbn.tick_trains=convs'), 'BAD_CONFIG', 'gbn.tick_trains');
    rejectsWith(() => withSets('gbn.tick_decay_frozen=yes'), 'BAD_CONFIG', 'gbn.tick_decay_frozen');
    rejectsWith(() => withSets('gbn.prune_count=paper'), 'BAD_CONFIG', 'gbn.prune_count');
    rejectsWith(() => withSets('gbn.minimal_rounding=round'), 'BAD_CONFIG', 'gbn.minimal_rounding');
    for (const bad of ['0', '2.5', '-1']) rejectsWith(() => withSets(`gbn.min_filters=${bad}`), 'BAD_CONFIG', 'gbn.min_filters');
  });

  it('applies --set overrides and validates the result', () => {
    const raw = applyOverrides(structuredClone(VGG16_DEMO), ['gbn.p=0.01', 'data.dir=/x', 'stages=["prune","finetune"]']);
    const c = parseConfig(raw);
    assert.equal(c.gbn?.p, 0.01);
    assert.equal(c.data.dir, '/x');
    assert.deepEqual(c.stages, ['prune', 'finetune']);
    // The original object is untouched.
    assert.equal(VGG16_DEMO.gbn.p, 0.005);
    rejectsWith(() => parseConfig(applyOverrides(structuredClone(VGG16_DEMO), ['gbn.p=2'])), 'BAD_CONFIG', 'gbn.p');
    rejectsWith(() => parseConfig(applyOverrides(structuredClone(VGG16_DEMO), ['data.colour=1'])), 'BAD_CONFIG', 'data', "'colour'");
    rejectsWith(() => parseConfig(applyOverrides(structuredClone(VGG16_DEMO), ['data.type=svhn'])), 'BAD_CONFIG', 'data.type');
    rejectsWith(() => applyOverrides(structuredClone(VGG16_DEMO), ['gbn.p']), 'BAD_FLAG', 'gbn.p');
    rejectsWith(() => applyOverrides(structuredClone(VGG16_DEMO), ['gbn.p.x=1']), 'BAD_FLAG', "'p' is not a section");
  });
});

describe("every key of the paper's schema gdp accepts has the paper's meaning or is refused", () => {
  const withSets = (...sets: string[]) => parseConfig(applyOverrides(structuredClone(VGG16_DEMO), sets));

  it('base.epoch > 0 needs starting weights (base.checkpoint_path or model.weights)', () => {
    rejectsWith(() => withSets('base.epoch=1'), 'BAD_CONFIG', 'base.epoch', 'base.checkpoint_path', 'model.weights', '--resume');
    assert.equal(withSets('base.epoch=1', 'base.checkpoint_path=w.safetensors').base.epoch, 1);
    assert.equal(withSets('base.epoch=80', 'model.weights=w.safetensors').base.epoch, 80);
    assert.equal(withSets('base.epoch=0').base.epoch, 0);
  });

  it('base.epoch without a train stage is accepted with a note that it does not apply', () => {
    const c = withSets('base.epoch=80', 'model.weights=w.safetensors', 'stages=["prune","finetune"]');
    assert.equal(configNotes(c).filter((n) => n.includes('base.epoch')).length, 1);
    assert.deepEqual(
      configNotes(withSets('base.epoch=80', 'model.weights=w.safetensors')).filter((n) => n.includes('base.epoch')),
      [],
    );
  });

  it('model.pretrained: true is refused, pointing to model.weights (gdp downloads nothing)', () => {
    rejectsWith(() => withSets('model.pretrained=true'), 'BAD_CONFIG', 'model.pretrained', 'model.weights');
    rejectsWith(() => withSets('model.pretrained=true', 'model.weights=w.safetensors'), 'BAD_CONFIG', 'model.pretrained');
    assert.equal(withSets('model.pretrained=false').model.pretrained, false);
  });

  it('base.fp16: true is refused, pointing to dist.grad_dtype (gdp and the paper train in float32)', () => {
    rejectsWith(() => withSets('base.fp16=true'), 'BAD_CONFIG', 'base.fp16', 'dist.grad_dtype');
    assert.equal(withSets('base.fp16=false').base.fp16, false);
  });

  it("the paper's prune.json (cuda and multi_gpus on) loads, with one note for each naming the flags that govern them", () => {
    const paper = applyOverrides(structuredClone(VGG16_DEMO), ['base.multi_gpus=true']);
    const notes = configNotes(parseConfig(paper));
    assert.equal(notes.length, 2);
    assert.match(notes[0], /base\.cuda .*--backend .*--gpu/);
    assert.match(notes[1], /base\.multi_gpus .*--workers/);
    assert.deepEqual(configNotes(withSets('base.cuda=false')), []);
  });
});

describe('shipped configs', () => {
  const dir = join(ROOT, 'configs');
  const files = readdirSync(dir).filter((f) => f.endsWith('.json'));

  it('are all there', () => {
    for (const f of ['cifar10-resnet56.json', 'cifar10-vgg16.json', 'imagenet-resnet50.json', 'mnist-resnet20.json']) assert.ok(files.includes(f), f);
  });

  for (const f of files) {
    it(`${f} loads under the strict schema`, () => {
      // A config naming the user's own TF.js model (model.file) is checked by the schema alone: the model is theirs.
      const raw = readConfigFile(join(dir, f));
      const c = (raw.model as { file?: string }).file ? parseConfig(raw, f) : loadConfig(join(dir, f));
      if (c.stages.includes('prune')) assert.ok(c.gbn, `${f}: pruning needs a gbn section`);
      if (c.stages[0] !== 'train' && c.stages.includes('prune')) assert.ok(c.model.weights, `${f}: pruning without training needs model.weights`);
      if (c.gbn?.target_flops !== undefined) for (const s of c.gbn.save_points) assert.ok(s >= c.gbn.target_flops, `${f}: save point ${s} below the target`);
    });
  }

  it("keeps the paper's ResNet-56 Tick-Tock settings", () => {
    const c = loadConfig(join(dir, 'cifar10-resnet56.json'));
    assert.deepEqual(
      { ...c.gbn, criterion: undefined, minimal_ratio: undefined, finetune_momentum: undefined, max_ticks: undefined },
      {
        sparse_lambda: 1e-3,
        flops_eta: 0,
        lr_min: 1e-3,
        lr_max: 1e-2,
        tock_epoch: 10,
        T: 10,
        p: 0.002,
        finetune_epoch: 40,
        target_flops: 0.3,
        save_points: [0.4, 0.38, 0.35, 0.32, 0.3],
        tick_batches: 391,
        // the paper's Tick (freeze_conv): measured better than gdp's gates-only Tick on long schedules (README, Pruning)
        tick_trains: 'all_but_conv',
        round_to: 1, // gdp's default: no rounding, as the paper
        // gdp's defaults (the paper's code differs: see the keys' doc comments and README, Pruning)
        min_filters: 1,
        minimal_rounding: 'ceil',
        tick_decay_frozen: false,
        prune_count: 'alive',
        criterion: undefined,
        minimal_ratio: undefined,
        finetune_momentum: undefined,
        max_ticks: undefined,
      },
    );
  });

  it('the shipped VGG-16 config is the demo plus gdp keys only', () => {
    const shipped = readConfigFile(join(dir, 'cifar10-vgg16.json')) as Record<string, Record<string, unknown>>;
    for (const [section, values] of Object.entries(VGG16_DEMO as Record<string, Record<string, unknown>>))
      for (const [key, value] of Object.entries(values)) assert.deepEqual(shipped[section][key], value, `${section}.${key}`);
  });
});

describe('--set mistakes name the --set, not the config file', () => {
  const shipped = join(ROOT, 'configs', 'mnist-resnet20.json');

  it("an unknown key names its --set and the section's nearest key", () => {
    rejectsWith(
      () => loadConfig(shipped, ['gbn.targt_flops=0.5']),
      'BAD_CONFIG',
      'invalid --set on',
      "gbn: unknown key 'targt_flops' (from --set gbn.targt_flops=0.5); did you mean 'target_flops'?",
    );
    rejectsWith(() => loadConfig(shipped, ['gnb.p=0.1']), 'BAD_CONFIG', "unknown key 'gnb' (from --set gnb.p=0.1); did you mean 'gbn'?");
    // Nothing near: no suggestion.
    assert.throws(
      () => loadConfig(shipped, ['data.zzzzzzzz=1']),
      (e: unknown) => e instanceof GdpError && e.message.includes("unknown key 'zzzzzzzz' (from --set data.zzzzzzzz=1)") && !e.message.includes('did you mean'),
    );
  });

  it('a bad value names its --set; a mistake in the file itself names the file', () => {
    rejectsWith(() => loadConfig(shipped, ['train.max_epoch=1', 'train.momentum=7']), 'BAD_CONFIG', 'train.momentum: ', '(from --set train.momentum=7)');
    const dir = mkdtempSync(join(tmpdir(), 'gdp-config-set-'));
    try {
      const file = join(dir, 'c.json');
      writeFileSync(file, JSON.stringify({ ...VGG16_DEMO, train: { ...VGG16_DEMO.train, momentm: 0.9 } }));
      assert.throws(
        () => loadConfig(file, ['train.momentum=7']),
        (e: unknown) =>
          e instanceof GdpError &&
          e.message.startsWith(`invalid ${file}:`) &&
          /train: unknown key 'momentm'; did you mean 'momentum'\?(\n|$)/.test(e.message) &&
          e.message.includes('(from --set train.momentum=7)'),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a check between keys names the --set of either key, not only of the key it reports', () => {
    const dir = mkdtempSync(join(tmpdir(), 'gdp-config-pair-'));
    try {
      const file = join(dir, 'folder.json');
      writeFileSync(file, JSON.stringify({ ...VGG16_DEMO, data: { ...VGG16_DEMO.data, type: 'folder', dir: 'images' } }));
      // The issue: data.mean from --set without data.std, reported at data.std, blamed the file.
      assert.throws(
        () => loadConfig(file, ['data.mean=[0.5,0.5,0.5]']),
        (e: unknown) =>
          e instanceof GdpError &&
          e.code === 'BAD_CONFIG' &&
          e.message.startsWith(`invalid --set on ${file}:`) &&
          e.message.includes('data.std: data.mean and data.std go together (from --set data.mean=[0.5,0.5,0.5])'),
        'mean without std',
      );
      rejectsWith(
        () => loadConfig(file, ['data.std=[0.2]']),
        'BAD_CONFIG',
        'invalid --set on',
        'data.mean: data.mean and data.std go together (from --set data.std=[0.2])',
      );
      rejectsWith(
        () => loadConfig(file, ['data.mean=[0.5]', 'data.std=[0.2,0.2,0.2]']),
        'BAD_CONFIG',
        'data.std: 3 value(s), data.mean has 1 (from --set data.std=[0.2,0.2,0.2])',
      );
      rejectsWith(() => loadConfig(file, ['data.channels=1', 'data.mean=[0.5,0.5,0.5]', 'data.std=[0.2,0.2,0.2]']), 'BAD_CONFIG', '(from --set data.mean=');
      writeFileSync(file, JSON.stringify({ ...VGG16_DEMO, data: { ...VGG16_DEMO.data, type: 'folder', dir: 'images', channels: 1, mean: [0.5], std: [0.2] } }));
      rejectsWith(
        () => loadConfig(file, ['data.type=mnist']),
        'BAD_CONFIG',
        'invalid --set on',
        "data.mean: applies to data.type 'folder' only, not 'mnist' (from --set data.type=mnist)",
      );
      rejectsWith(() => loadConfig(file, ['data.channels=3']), 'BAD_CONFIG', 'data.mean: 1 value(s) for 3 channel(s) (from --set data.channels=3)');
      // The other checks between keys: the section they need, and the weights a continuation needs.
      writeFileSync(file, JSON.stringify({ ...VGG16_DEMO, gbn: undefined }));
      rejectsWith(
        () => loadConfig(file, ['stages=["train","prune"]']),
        'BAD_CONFIG',
        'invalid --set on',
        `gbn: stages 'prune' and 'finetune' need a 'gbn' section (from --set stages=["train","prune"])`,
      );
      writeFileSync(file, JSON.stringify({ ...VGG16_DEMO, base: { ...VGG16_DEMO.base, epoch: 4, checkpoint_path: 'w.safetensors' } }));
      rejectsWith(
        () => loadConfig(file, ['base.checkpoint_path=']),
        'BAD_CONFIG',
        'invalid --set on',
        'base.epoch: continuing from epoch',
        '(from --set base.checkpoint_path=)',
      );
      rejectsWith(
        () => loadConfig(file, ['dist.heartbeat_ms=20000']),
        'BAD_CONFIG',
        'invalid --set on',
        'dist.heartbeat_timeout_ms: ',
        '(from --set dist.heartbeat_ms=20000)',
      );
      rejectsWith(
        () => loadConfig(file, ['train.steplr=null']),
        'BAD_CONFIG',
        'invalid --set on',
        'train: train needs a learning-rate schedule',
        '(from --set train.steplr=null)',
      );
      // A mistake of the file alone still names the file.
      writeFileSync(file, JSON.stringify({ ...VGG16_DEMO, data: { ...VGG16_DEMO.data, type: 'folder', dir: 'images', mean: [0.5] } }));
      assert.throws(
        () => loadConfig(file, ['train.momentum=0.5']),
        (e: unknown) =>
          e instanceof GdpError && e.message.startsWith(`invalid ${file}:`) && /data\.std: data\.mean and data\.std go together(\n|$)/.test(e.message),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a value starting like JSON must be JSON: BAD_CONFIG naming the --set and the parse error', () => {
    rejectsWith(() => applyOverrides(structuredClone(VGG16_DEMO), ['stages=[train]']), 'BAD_CONFIG', '--set stages=[train]', 'not JSON', 'Unexpected token');
    rejectsWith(() => applyOverrides(structuredClone(VGG16_DEMO), ['gbn={"p": 0.1']), 'BAD_CONFIG', '--set gbn={"p": 0.1');
    // Other text is still a plain string.
    assert.equal((applyOverrides(structuredClone(VGG16_DEMO), ['base.task_name=run-2']).base as { task_name: string }).task_name, 'run-2');
  });

  it('nearestKey suggests within a third of the length in edits (swaps count one)', () => {
    assert.equal(editDistance('targt_flops', 'target_flops'), 1);
    assert.equal(editDistance('momnetum', 'momentum'), 1);
    assert.equal(editDistance('abc', ''), 3);
    assert.equal(nearestKey('momnetum', ['momentum', 'nesterov']), 'momentum');
    assert.equal(nearestKey('x', ['T', 'p']), undefined);
    assert.equal(nearestKey('lr_mx', ['lr_max', 'lr_min']), 'lr_max');
  });
});

describe('files named in a config', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gdp-config-paths-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, model: Record<string, unknown>, data: Record<string, unknown> = {}) => {
    const file = join(dir, name);
    writeFileSync(file, JSON.stringify({ ...VGG16_DEMO, model: { ...VGG16_DEMO.model, ...model }, data: { ...VGG16_DEMO.data, ...data } }));
    return file;
  };

  it("relative paths in a config file are relative to the file's folder; --set values to the working directory", () => {
    const file = write('rel.json', { weights: 'w/start.safetensors' }, { dir: '../cifar' });
    const c = loadConfig(file);
    assert.equal(c.model.weights, join(dir, 'w', 'start.safetensors'));
    assert.equal(c.data.dir, resolve(dir, '..', 'cifar'));
    const abs = write('abs.json', { weights: '/srv/w.safetensors' });
    assert.equal(loadConfig(abs).model.weights, '/srv/w.safetensors');
    const set = loadConfig(file, ['model.weights=here.safetensors', 'data.dir=data', 'base.checkpoint_path=c.safetensors']);
    assert.equal(set.model.weights, 'here.safetensors');
    assert.equal(set.data.dir, 'data');
    assert.equal(set.base.checkpoint_path, 'c.safetensors');
  });

  it('a relative base.log_dir in a config file is relative to its folder too; unset, it is logs/ of the working directory', () => {
    const file = join(dir, 'logdir.json');
    writeFileSync(file, JSON.stringify({ ...VGG16_DEMO, base: { ...VGG16_DEMO.base, log_dir: 'runs' } }));
    assert.equal(loadConfig(file).base.log_dir, join(dir, 'runs'));
    assert.equal(loadConfig(file, ['base.log_dir=out']).base.log_dir, 'out', '--set: the working directory');
    assert.equal(loadConfig(write('nolog.json', {})).base.log_dir, 'logs');
    assert.equal(loadConfig(join(ROOT, 'configs', 'mnist-resnet20.json')).base.log_dir, 'logs', 'the embedded default job writes to ./logs');
  });

  it('the shipped configs name the same folders from their own folder as before from the repository root', () => {
    assert.equal(loadConfig(join(ROOT, 'configs', 'cifar10-resnet56.json')).data.dir, join(ROOT, 'data'));
    const imagenet = loadConfig(join(ROOT, 'configs', 'imagenet-resnet50.json'));
    assert.equal(imagenet.model.weights, join(ROOT, 'weights', 'resnet50-torchvision.safetensors'));
    assert.equal(imagenet.data.dir, join(ROOT, 'data', 'imagenet12'));
  });

  it('a missing config file or model.file is FILE_NOT_FOUND naming the file', () => {
    rejectsWith(() => readConfigFile(join(dir, 'nope.json')), 'FILE_NOT_FOUND', 'nope.json');
    rejectsWith(() => loadConfig(join(dir, 'nope.json')), 'FILE_NOT_FOUND', 'nope.json');
    const file = write('graph.json', { name: 'graph', file: 'absent/model.json' });
    rejectsWith(() => loadConfig(file), 'FILE_NOT_FOUND', 'model.file: ', join(dir, 'absent', 'model.json'));
    rejectsWith(() => loadConfig(file, ['model.file=elsewhere/model.json']), 'FILE_NOT_FOUND', join('elsewhere', 'model.json'));
  });
});
