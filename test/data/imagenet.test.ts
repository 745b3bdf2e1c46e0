import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseConfig } from '../../src/shared/config/load.js';
import { sampleSeed, type DatasetPair } from '../../src/shared/data/dataset.js';
import { DecodePool } from '../../src/shared/data/decode_pool.js';
import { loadImageFolders } from '../../src/shared/data/imagenet.js';
import { loadDataset } from '../../src/shared/data/index.js';
import { IMAGENET_NORM, randomResizedCropRect } from '../../src/shared/data/transforms.js';
import { GdpError } from '../../src/shared/errors.js';
import { Rng } from '../../src/shared/rng.js';
import { CLASSES, writeSplitJpeg, writeTinyImageFolder, type Rgb } from './image_files.js';

const SIDE = 224;
const inThread = new DecodePool(0);

function normalised(rgb: Rgb): number[] {
  return rgb.map((v, c) => (v / 255 - IMAGENET_NORM.mean[c]) / IMAGENET_NORM.std[c]);
}

/** Mean colour (normalised) of image i of a batch, and the largest deviation of any pixel from it. */
function colourStats(x: Float32Array, i: number): { mean: number[]; spread: number } {
  const per = SIDE * SIDE * 3;
  const mean = [0, 0, 0];
  for (let p = 0; p < per; p++) mean[p % 3] += x[i * per + p] / (SIDE * SIDE);
  let spread = 0;
  for (let p = 0; p < per; p++) spread = Math.max(spread, Math.abs(x[i * per + p] - mean[p % 3]));
  return { mean, spread };
}

function imageConfig(dir: string, numClass: number) {
  return parseConfig({
    base: { task_name: 'imagenet_test' },
    model: { name: 'resnet50', num_class: numClass },
    train: { max_epoch: 1, steplr: [[1, 0.1]] },
    data: { type: 'imagenet', batch_size: 4, test_batch_size: 4, num_workers: 0, dir },
    loss: { criterion: 'softmax' },
  });
}

describe('ImageNet folders', () => {
  let dir: string;
  let pair: DatasetPair;
  before(async () => {
    dir = await writeTinyImageFolder();
    pair = await loadDataset(imageConfig(dir, 3));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('numbers classes by sorted folder name', () => {
    // Sorted: n01 (red) 0, n02 (green) 1, n03 (blue) 2; files sorted within a class.
    assert.deepEqual(Array.from(pair.train.labels), [0, 0, 1, 2, 2]);
    assert.deepEqual(Array.from(pair.test.labels), [0, 1, 2]);
    assert.equal(pair.train.numClasses, 3);
    assert.deepEqual(pair.train.shape, [224, 224, 3]);
  });

  it('decodes every size to 224x224x3 with the right normalised colour, with and without augmentation', async () => {
    const byLabel = [CLASSES[1].rgb, CLASSES[2].rgb, CLASSES[0].rgb];
    for (const [ds, augment] of [
      [pair.train, true],
      [pair.train, false],
      [pair.test, false],
    ] as const) {
      const idx = Array.from({ length: ds.size }, (_, i) => i);
      const b = await ds.load(idx, { augment, seed: 3 });
      assert.equal(b.x.length, ds.size * SIDE * SIDE * 3);
      for (let i = 0; i < b.n; i++) {
        const { mean, spread } = colourStats(b.x, i);
        const want = normalised(byLabel[b.y[i]]);
        // JPEG keeps a solid colour within a few levels; 4/255 over std ~0.225 is 0.07.
        for (let c = 0; c < 3; c++) assert.ok(Math.abs(mean[c] - want[c]) < 0.07, `${ds.name} #${i} c${c}: ${mean[c]} vs ${want[c]}`);
        assert.ok(spread < 0.07, `${ds.name} #${i} is not solid: ${spread}`);
      }
    }
  });

  it('augments deterministically per (seed, index), and differently per seed', async () => {
    const split = join(dir, 'train', 'n02000000', 'n02000000_1.JPEG');
    await writeSplitJpeg(split, 400, 300, [250, 0, 0], [0, 0, 250]);
    const p = loadImageFolders(dir, inThread);
    const k = p.train.labels.length - 3; // n02_1 sorts after n02_0, before the two n03 files
    assert.equal((p.train as unknown as { files: string[] }).files[k], split);
    const a = await p.train.load([k], { augment: true, seed: 1 });
    const again = await p.train.load([k], { augment: true, seed: 1 });
    assert.deepEqual(a.x, again.x);
    const others = await Promise.all([2, 3, 4, 5].map((seed) => p.train.load([k], { augment: true, seed })));
    assert.ok(others.some((o) => !o.x.every((v, i) => v === a.x[i])));
  });

  it('crops and flips where the drawn rectangle says: red/blue columns land on the predicted side', async () => {
    const split = join(dir, 'train', 'n02000000', 'n02000000_1.JPEG');
    const p = loadImageFolders(dir, inThread);
    const k = (p.train as unknown as { files: string[] }).files.indexOf(split);
    const red = normalised([250, 0, 0])[0];
    const blue = normalised([0, 0, 250])[0];
    let flips = 0;
    for (let seed = 0; seed < 8; seed++) {
      const rng = new Rng(sampleSeed(seed, k));
      const rect = randomResizedCropRect(400, 300, rng);
      const flip = rng.next() < 0.5;
      if (flip) flips++;
      const x = (await p.train.load([k], { augment: true, seed })).x;
      let checked = 0;
      for (let col = 0; col < SIDE; col++) {
        const srcCol = rect.left + ((flip ? SIDE - 1 - col : col) + 0.5) * (rect.width / SIDE);
        if (Math.abs(srcCol - 200) < 6) continue; // resampling blurs the edge
        const r = x[(112 * SIDE + col) * 3];
        assert.ok(Math.abs(r - (srcCol < 200 ? red : blue)) < 0.3, `seed ${seed} column ${col}: ${r}`);
        checked++;
      }
      assert.ok(checked > 150);
    }
    assert.ok(flips > 0 && flips < 8, `flips ${flips}/8`);
  });

  it('centre-crops validation images after resizing the shorter side to 256', async () => {
    const split = join(dir, 'val', 'n01000000', 'n01000000_0.JPEG');
    await writeSplitJpeg(split, 512, 256, [250, 0, 0], [0, 0, 250]);
    const p = loadImageFolders(dir, inThread);
    const x = (await p.test.load([0], { augment: false, seed: 0 })).x;
    // 512x256 stays 512x256; the crop spans columns 144..367, so the red/blue edge (256) is at output column 112.
    const red = normalised([250, 0, 0])[0];
    const blue = normalised([0, 0, 250])[0];
    for (const col of [0, 100, 108]) assert.ok(Math.abs(x[(50 * SIDE + col) * 3] - red) < 0.1, `column ${col}`);
    for (const col of [116, 130, 223]) assert.ok(Math.abs(x[(50 * SIDE + col) * 3] - blue) < 0.1, `column ${col}`);
  });

  it('reports a corrupt or truncated JPEG with its path, in-thread and from the pool', async () => {
    const bad = join(dir, 'val', 'n02000000', 'n02000000_9.JPEG');
    writeFileSync(bad, 'this is not a jpeg');
    const good = readFileSync(join(dir, 'val', 'n03000000', 'n03000000_0.JPEG'));
    const cut = join(dir, 'val', 'n03000000', 'n03000000_9.JPEG');
    writeFileSync(cut, good.subarray(0, good.length >> 1));
    const pool = new DecodePool(2);
    try {
      for (const decoder of [inThread, pool]) {
        const p = loadImageFolders(dir, decoder);
        const files = (p.test as unknown as { files: string[] }).files;
        for (const path of [bad, cut]) {
          await assert.rejects(p.test.load([0, files.indexOf(path)], { augment: false, seed: 0 }), (err: unknown) => {
            assert.ok(err instanceof GdpError, String(err));
            assert.equal(err.code, 'BAD_DATA');
            assert.ok(err.message.includes(path), err.message);
            return true;
          });
        }
      }
    } finally {
      await pool.close();
      rmSync(bad);
      rmSync(cut);
    }
  });

  it('rejects a missing split folder and a class-count mismatch', async () => {
    await assert.rejects(loadDataset(imageConfig(dir, 1000)), /model\.num_class: 1000, but imagenet has 3 classes/);
    const empty = join(dir, 'nothing');
    mkdirSync(empty);
    await assert.rejects(loadDataset(imageConfig(empty, 3)), (err: unknown) => {
      assert.ok(err instanceof GdpError && err.code === 'BAD_DATA' && err.message.includes(join(empty, 'train')), String(err));
      return true;
    });
  });
});

describe('randomResizedCropRect', () => {
  it('stays inside the image with area and aspect in range, as torchvision', () => {
    const rng = new Rng(5);
    for (let i = 0; i < 2000; i++) {
      const w = 50 + rng.int(600);
      const h = 50 + rng.int(600);
      const r = randomResizedCropRect(w, h, rng);
      assert.ok(r.left >= 0 && r.top >= 0 && r.left + r.width <= w && r.top + r.height <= h, JSON.stringify({ w, h, r }));
      assert.ok(r.width > 0 && r.height > 0);
      // Rounding to whole pixels moves area and ratio a little off the sampled values.
      const area = (r.width * r.height) / (w * h);
      assert.ok(area > 0.07 && area <= 1, `area ${area}`);
      assert.ok(r.width / r.height > 0.7 && r.width / r.height < 1.43, `ratio ${r.width / r.height}`);
    }
  });

  it('falls back to a centre crop clamped to the ratio range for extreme shapes', () => {
    const r = randomResizedCropRect(1000, 10, new Rng(1));
    // No 8%+ crop of a 100:1 strip has an aspect ratio under 4/3, so the fallback keeps the height.
    assert.deepEqual(r, { left: Math.floor((1000 - 13) / 2), top: 0, width: 13, height: 10 });
  });
});
