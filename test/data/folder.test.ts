import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, test } from 'node:test';
import { startInProcess } from '../../src/coordinator/in_process.js';
import { RunFiles } from '../../src/coordinator/run_files.js';
import { trainStage } from '../../src/coordinator/train_stage.js';
import { applyOverrides, parseConfig, readConfigFile } from '../../src/shared/config/load.js';
import { dataFingerprint, sampleSeed, type DatasetPair } from '../../src/shared/data/dataset.js';
import { ImageFolderDataset } from '../../src/shared/data/image_folder.js';
import { loadDataset } from '../../src/shared/data/index.js';
import { IMAGENET_NORM, padCropAugment } from '../../src/shared/data/transforms.js';
import { GdpError } from '../../src/shared/errors.js';
import { parseSafetensors } from '../../src/shared/io/safetensors.js';
import { checkModelFitsData } from '../../src/shared/models/registry.js';
import { Rng } from '../../src/shared/rng.js';
import { maxAbsDiff, useBackend } from '../helpers.js';
import { ROOT } from '../dist/cli_helpers.js';
import { patternPixels, writeImage, writeSolid, writeSolidFolder, type SolidFolder, type SolidImage } from './folder_files.js';
import { writeTinyImageFolder } from './image_files.js';
import { padCropReference } from './pad_crop_reference.js';

function folderConfig(dir: string, data: Record<string, unknown> = {}, model: { name: string; num_class: number } = { name: 'cifar.resnet20', num_class: 3 }) {
  return parseConfig({
    base: { task_name: 'folder_test' },
    model,
    train: { max_epoch: 1, steplr: [[1, 0.1]] },
    data: { type: 'folder', batch_size: 4, test_batch_size: 4, num_workers: 0, dir, ...data },
    loss: { criterion: 'softmax' },
  });
}

const all = (n: number) => Array.from({ length: n }, (_, i) => i);
const normalisationOf = (pair: DatasetPair) => (pair.train as ImageFolderDataset).normalisation();

/** Mean and population std per channel of solid images, each image weighing the same (it fills size x size). */
function directStats(images: readonly SolidImage[]): { mean: number[]; std: number[] } {
  const c = images[0].colour.length;
  const mean = new Array<number>(c).fill(0);
  const sq = new Array<number>(c).fill(0);
  for (const im of images)
    for (let k = 0; k < c; k++) {
      mean[k] += im.colour[k] / 255 / images.length;
      sq[k] += (im.colour[k] / 255) ** 2 / images.length;
    }
  return { mean, std: mean.map((m, k) => Math.sqrt(sq[k] - m * m)) };
}

function assertBadData(pattern: RegExp | string) {
  return (err: unknown) => {
    assert.ok(err instanceof GdpError, String(err));
    assert.equal(err.code, 'BAD_DATA', err.message);
    if (typeof pattern === 'string') assert.ok(err.message.includes(pattern), err.message);
    else assert.match(err.message, pattern);
    return true;
  };
}

/** Bit-for-bit equality of two float arrays, reporting the first difference. */
function assertSameBits(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, `${what}: lengths`);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) assert.fail(`${what}: element ${i} differs: ${a[i]} vs ${b[i]}`);
}

const TWO_CLASSES = { name: 'cifar.resnet20', num_class: 2 };

/** Patterned RGB images: train a/0.png is exactly 16x16, so at image_size 16 its evaluation image is the file. */
async function writePatternFolder(): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'gdp-folder-pattern-'));
  const files: [string, number, number][] = [
    ['train/a/0.png', 16, 16],
    ['train/a/1.png', 40, 30],
    ['train/b/0.png', 70, 90],
    ['train/b/1.png', 100, 64],
    ['val/a/0.png', 20, 20],
    ['val/b/0.png', 30, 30],
  ];
  for (const [i, [file, w, h]] of files.entries()) {
    mkdirSync(join(dir, file, '..'), { recursive: true });
    await writeImage(join(dir, file), w, h, 3, patternPixels(w, h, 3, 17 * i));
  }
  return dir;
}

describe('image folders (data.type folder)', () => {
  let colour: SolidFolder;
  let grey: SolidFolder;
  let pattern: string;
  const dirs: string[] = [];
  before(async () => {
    colour = await writeSolidFolder(3);
    grey = await writeSolidFolder(1);
    pattern = await writePatternFolder();
    dirs.push(colour.dir, grey.dir, pattern);
  });
  after(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('loads size x size x channels at 16 and 32, 1 and 3 channels, classes by sorted folder name, normalised by the training set', async () => {
    for (const [fx, channels] of [
      [colour, 3],
      [grey, 1],
    ] as const) {
      for (const size of [16, 32]) {
        const what = `${channels} channel(s) at ${size}`;
        const pair = await loadDataset(folderConfig(fx.dir, { image_size: size, channels }));
        try {
          assert.deepEqual(pair.train.shape, [size, size, channels]);
          assert.equal(pair.train.numClasses, 3);
          assert.deepEqual(fx.classes, ['ant', 'moth', 'zebra']);
          assert.deepEqual(
            Array.from(pair.train.labels),
            fx.train.map((s) => s.label),
            what,
          );
          assert.deepEqual(
            Array.from(pair.test.labels),
            fx.val.map((s) => s.label),
            what,
          );
          const want = directStats(fx.train);
          const norm = await normalisationOf(pair);
          for (let c = 0; c < channels; c++) {
            assert.ok(Math.abs(norm.mean[c] - want.mean[c]) < 1e-6, `${what} mean ${c}: ${norm.mean[c]} vs ${want.mean[c]}`);
            assert.ok(Math.abs(norm.std[c] - want.std[c]) < 1e-6, `${what} std ${c}: ${norm.std[c]} vs ${want.std[c]}`);
          }
          const per = size * size * channels;
          for (const [ds, images] of [
            [pair.test, fx.val],
            [pair.train, fx.train],
          ] as const) {
            const b = await ds.load(all(ds.size), { augment: false, seed: 0 });
            assert.equal(b.x.length, ds.size * per);
            assert.deepEqual(
              Array.from(b.y),
              images.map((s) => s.label),
            );
            for (let i = 0; i < b.n; i++)
              for (let p = 0; p < per; p++) {
                const c = p % channels;
                const v = (images[i].colour[c] / 255 - want.mean[c]) / want.std[c];
                if (Math.abs(b.x[i * per + p] - v) > 1e-5) assert.fail(`${what} ${ds.name} #${i} value ${p}: ${b.x[i * per + p]} vs ${v}`);
              }
          }
          const aug = await pair.train.load([4, 0, 2], { augment: true, seed: 3 });
          assert.equal(aug.x.length, 3 * per);
          assert.deepEqual(
            Array.from(aug.y),
            [4, 0, 2].map((k) => fx.train[k].label),
          );
        } finally {
          await pair.close?.();
        }
      }
    }
    // Either file kind at either channel count: grey files give three equal channels, colour files one.
    const asRgb = await loadDataset(folderConfig(grey.dir, { image_size: 16, channels: 3 }));
    const x = (await asRgb.test.load([0], { augment: false, seed: 0 })).x;
    const norm = await normalisationOf(asRgb);
    for (let p = 0; p < x.length; p += 3)
      for (let c = 0; c < 3; c++) assert.ok(Math.abs(x[p + c] * norm.std[c] + norm.mean[c] - grey.val[0].colour[0] / 255) < 1e-5);
    const asGrey = await loadDataset(folderConfig(colour.dir, { image_size: 16, channels: 1 }));
    assert.equal((await asGrey.test.load([0, 1], { augment: true, seed: 1 })).x.length, 2 * 16 * 16);
  });

  it('pads and crops small images: augmented pixels are the evaluation pixels moved by the drawn crop and flip, padding black', async () => {
    const norm = { mean: [0.5, 0.4, 0.3], std: [0.25, 0.2, 0.3] };
    const pair = await loadDataset(folderConfig(pattern, { image_size: 16, channels: 3, ...norm }, TWO_CLASSES));
    const spec = (pair.train as ImageFolderDataset).spec;
    assert.deepEqual([spec.augment, spec.pad], ['pad_crop', 2]);
    const raw = patternPixels(16, 16, 3, 0);
    const value = (byte: number, c: number) => (byte / 255 - norm.mean[c]) / norm.std[c];
    const plain = (await pair.train.load([0], { augment: false, seed: 0 })).x;
    // A 16x16 file at image_size 16 is used as it is.
    for (let p = 0; p < raw.length; p++) assert.ok(Math.abs(plain[p] - value(raw[p], p % 3)) < 1e-6, `plain value ${p}`);
    let flips = 0;
    let shifted = 0;
    for (let seed = 0; seed < 24; seed++) {
      const a = padCropAugment(new Rng(sampleSeed(seed, 0)), 2);
      if (a.flip) flips++;
      if (a.top !== 2 || a.left !== 2) shifted++;
      const x = (await pair.train.load([0], { augment: true, seed })).x;
      assert.ok(
        maxAbsDiff(
          x,
          padCropReference(
            plain,
            16,
            3,
            2,
            a,
            [0, 1, 2].map((c) => value(0, c)),
          ),
        ) < 1e-6,
        `seed ${seed}`,
      );
    }
    assert.ok(flips > 0 && flips < 24, `flips ${flips}/24`);
    assert.ok(shifted > 12, `shifted ${shifted}/24`);
  });

  it('builds the same augmented pixels on any pool thread as in the calling thread, pad+crop and resized crop', async () => {
    for (const [size, augment] of [
      [16, 'pad_crop'],
      [64, 'resized_crop'],
    ] as const) {
      const inThread = await loadDataset(folderConfig(pattern, { image_size: size, channels: 3 }, TWO_CLASSES));
      const pooled = await loadDataset(folderConfig(pattern, { image_size: size, channels: 3, num_workers: 2 }, TWO_CLASSES));
      try {
        assert.equal((pooled.train as ImageFolderDataset).spec.augment, augment);
        const indices = [3, 0, 2, 1, 3, 0];
        const a = await inThread.train.load(indices, { augment: true, seed: 21 });
        // Two batches in flight at once, split differently over the threads.
        const [b, c] = await Promise.all([
          pooled.train.load(indices, { augment: true, seed: 21 }),
          pooled.train.load(indices.slice().reverse(), { augment: true, seed: 21 }),
        ]);
        assertSameBits(a.x, b.x, `${augment}: pool vs in-thread`);
        const per = size * size * 3;
        assertSameBits(a.x.subarray(0, per), c.x.subarray(5 * per, 6 * per), `${augment}: reversed batch`);
        assert.deepEqual(await normalisationOf(pooled), await normalisationOf(inThread));
        // The repeated sample 3 is the same pixels at positions 0 and 4: its draw depends on the sample only.
        assertSameBits(a.x.subarray(0, per), a.x.subarray(4 * per, 5 * per), `${augment}: repeated sample`);
      } finally {
        await pooled.close?.();
      }
    }
  });

  it('is ImageNet at 224 RGB with the ImageNet constants: the same batches as data.type imagenet', async () => {
    const dir = await writeTinyImageFolder();
    dirs.push(dir);
    const imagenet = await loadDataset(
      parseConfig({
        base: { task_name: 'imagenet_test' },
        model: { name: 'resnet50', num_class: 3 },
        train: { max_epoch: 1, steplr: [[1, 0.1]] },
        data: { type: 'imagenet', batch_size: 4, test_batch_size: 4, num_workers: 0, dir },
        loss: { criterion: 'softmax' },
      }),
    );
    const folder = await loadDataset(folderConfig(dir, { mean: [...IMAGENET_NORM.mean], std: [...IMAGENET_NORM.std] }, { name: 'resnet50', num_class: 3 }));
    assert.deepEqual(folder.train.shape, [224, 224, 3]);
    for (const augment of [true, false]) {
      for (const split of ['train', 'test'] as const) {
        const idx = all(imagenet[split].size).reverse();
        const a = await imagenet[split].load(idx, { augment, seed: 8 });
        const b = await folder[split].load(idx, { augment, seed: 8 });
        assertSameBits(a.x, b.x, `${split} augment ${augment}`);
        assert.deepEqual(a.y, b.y);
      }
    }
  });

  it('stops with BAD_DATA naming a truncated JPEG, while computing the normalisation and when loading it', async () => {
    const fx = await writeSolidFolder(3);
    dirs.push(fx.dir);
    const bad = join(fx.dir, 'train', 'ant', '2.jpg');
    await writeSolid(bad, 64, 64, [10, 200, 30]);
    const bytes = readFileSync(bad);
    writeFileSync(bad, bytes.subarray(0, bytes.length >> 1));
    const computed = await loadDataset(folderConfig(fx.dir));
    assert.equal((computed.train as ImageFolderDataset).files[2], bad);
    // Any first load computes the normalisation over every training image.
    await assert.rejects(computed.test.load([0], { augment: false, seed: 0 }), assertBadData(bad));
    for (const numWorkers of [0, 2]) {
      const pair = await loadDataset(folderConfig(fx.dir, { num_workers: numWorkers, mean: [0.5, 0.5, 0.5], std: [0.2, 0.2, 0.2] }));
      try {
        assert.equal((await pair.train.load([0, 1, 3], { augment: true, seed: 0 })).n, 3);
        await assert.rejects(pair.train.load([0, 2, 3], { augment: true, seed: 0 }), assertBadData(bad));
      } finally {
        await pair.close?.();
      }
    }
  });

  it('rejects an empty class folder, a validation class training lacks, and folders without images', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gdp-folder-bad-'));
    dirs.push(dir);
    const load = () => loadDataset(folderConfig(dir));
    for (const f of ['train/a/0.png', 'train/b/0.png', 'train/c/0.png', 'val/a/0.png']) {
      mkdirSync(join(dir, f, '..'), { recursive: true });
      await writeSolid(join(dir, f), 8, 8, [1, 2, 3]);
    }
    assert.equal((await load()).train.size, 3);
    mkdirSync(join(dir, 'val', 'd'));
    await writeSolid(join(dir, 'val', 'd', '0.png'), 8, 8, [1, 2, 3]);
    await assert.rejects(load(), assertBadData(`${join(dir, 'val')} has class folder(s) d missing from ${join(dir, 'train')}`));
    rmSync(join(dir, 'val', 'd'), { recursive: true });
    rmSync(join(dir, 'train', 'b', '0.png'));
    writeFileSync(join(dir, 'train', 'b', 'readme.txt'), 'x');
    await assert.rejects(load(), assertBadData(`class folder ${join(dir, 'train', 'b')} has no images`));
    rmSync(join(dir, 'train'), { recursive: true });
    mkdirSync(join(dir, 'train'));
    await assert.rejects(load(), assertBadData(`${join(dir, 'train')} has no class folders`));
    await writeSolid(join(dir, 'train', 'loose.png'), 8, 8, [1, 2, 3]);
    await assert.rejects(load(), assertBadData(`${join(dir, 'train')} holds 1 image file(s) but no class folders`));
    rmSync(join(dir, 'val'), { recursive: true });
    await assert.rejects(load(), assertBadData(`${join(dir, 'val')} is not a folder`));
  });

  it('rejects folder keys for other data types, a mean without std, and a mean for another channel count', async () => {
    const base = { base: { task_name: 't' }, model: { name: 'cifar.resnet20', num_class: 10 }, train: { max_epoch: 0 }, loss: { criterion: 'softmax' } };
    const data = { batch_size: 4, test_batch_size: 4 };
    assert.throws(() => parseConfig({ ...base, data: { ...data, type: 'cifar10', image_size: 32 } }), /data\.image_size: applies to data\.type 'folder' only/);
    assert.throws(() => parseConfig({ ...base, data: { ...data, type: 'folder', mean: [0.5] } }), /data\.std: data\.mean and data\.std go together/);
    assert.throws(
      () => parseConfig({ ...base, data: { ...data, type: 'folder', channels: 1, mean: [0.5, 0.5, 0.5], std: [1, 1, 1] } }),
      /data\.mean: 3 value\(s\) for 1 channel/,
    );
    // The channel count defaults to the model's input: mnist.resnet20 takes one.
    const cfg = folderConfig(grey.dir, { mean: [0.5, 0.5, 0.5], std: [1, 1, 1] }, { name: 'mnist.resnet20', num_class: 3 });
    await assert.rejects(loadDataset(cfg), /data\.mean: 3 value\(s\) for 1-channel images/);
  });

  it('fingerprints file names and image settings: an equal copy agrees, a renamed file or another size does not', async () => {
    const copy = mkdtempSync(join(tmpdir(), 'gdp-folder-copy-'));
    dirs.push(copy);
    cpSync(colour.dir, copy, { recursive: true });
    const print = async (dir: string, size = 16) => dataFingerprint(await loadDataset(folderConfig(dir, { image_size: size, channels: 3 })));
    const original = await print(colour.dir);
    assert.equal(await print(copy), original);
    assert.notEqual(await print(colour.dir, 32), original);
    // Same labels, same order, another file: sample 0 would be another image on this machine.
    renameSync(join(copy, 'train', 'ant', '0.png'), join(copy, 'train', 'ant', '00.png'));
    assert.notEqual(await print(copy), original);
  });
});

test('the smoke config with data.type folder trains a few steps on 2 in-process workers; its checkpoints record the normalisation', async () => {
  await useBackend('wasm');
  const fx = await writeSolidFolder(1);
  const logDir = mkdtempSync(join(tmpdir(), 'gdp-folder-run-'));
  const sets = [
    'data.type=folder',
    `data.dir=${fx.dir}`,
    'model.num_class=3',
    'stages=["train"]',
    'train.max_steps_per_epoch=2',
    'data.batch_size=4',
    'data.test_batch_size=4',
    'data.num_workers=1',
    `base.log_dir=${logDir}`,
  ];
  const config = parseConfig(applyOverrides(readConfigFile(join(ROOT, 'configs', 'smoke.json')), sets));
  // What each worker computed for itself before the run decided it; image size and channels default to
  // mnist.resnet20's 28x28x1.
  const own = await loadDataset(config, { numWorkers: 0 });
  assert.deepEqual(own.train.shape, [28, 28, 1]);
  checkModelFitsData(config, own.train);
  const computed = await normalisationOf(own);
  await own.close?.();
  const prints: string[] = [];
  // A worker reads its own --data-dir: the config it is sent carries no path.
  const loadData = async (c: typeof config) => {
    const pair = await loadDataset(c, { dataDir: fx.dir });
    prints.push(dataFingerprint(pair));
    return pair;
  };
  const log: string[] = [];
  const run = await startInProcess(config, { workers: 2, backend: 'wasm', loadData, log: (l) => log.push(l) });
  let data: DatasetPair | undefined;
  try {
    // The coordinator's view (sizes, fingerprint), of the config the run started with.
    data = await loadDataset(config, { numWorkers: 0 });
    // Decided at start, as gdp-coord's start decides it: in the config the workers are sent.
    assert.deepEqual({ mean: config.data.mean, std: config.data.std }, computed);
    assert.ok(
      log.some((l) => /^gdp-coord: input normalisation .*computed from the training images of /.test(l)),
      log.join('\n'),
    );
    await trainStage({
      cluster: run.coordinator,
      config,
      trainSize: data.train.size,
      testSize: data.test.size,
      files: new RunFiles(config),
      log: (l) => log.push(l),
    });
    assert.equal(run.coordinator.steps, 2);
    assert.equal(run.coordinator.workerIds.length, 2, log.join('\n'));
    assert.deepEqual(prints, [dataFingerprint(data), dataFingerprint(data)]);
    // Its checkpoints record the normalisation, as those of a run started by gdp-coord.
    const meta = parseSafetensors(readFileSync(join(logDir, 'smoke', 'train-epoch1.safetensors'))).metadata;
    assert.deepEqual([meta.input_mean, meta.input_std], [JSON.stringify(computed.mean), JSON.stringify(computed.std)]);
    const epochs = JSON.parse(readFileSync(join(logDir, 'smoke', 'log.json'), 'utf8'));
    assert.equal(epochs.length, 1);
    assert.ok(Number.isFinite(epochs[0].train_loss) && epochs[0].train_loss > 0, JSON.stringify(epochs[0]));
    assert.ok(epochs[0]['acc@1'] >= 0 && epochs[0]['acc@1'] <= 1);
  } finally {
    await run.close();
    await data?.close?.();
    rmSync(fx.dir, { recursive: true, force: true });
    rmSync(logDir, { recursive: true, force: true });
  }
});
