import assert from 'node:assert/strict';
import { rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadCifar } from '../../src/shared/data/cifar.js';
import { sampleSeed, type DatasetPair } from '../../src/shared/data/dataset.js';
import { DecodePool } from '../../src/shared/data/decode_pool.js';
import { cifarAugment } from '../../src/shared/data/transforms.js';
import { GdpError } from '../../src/shared/errors.js';
import { Rng } from '../../src/shared/rng.js';
import { maxAbsDiff } from '../helpers.js';
import {
  CIFAR100_TEST_LABELS,
  CIFAR100_TRAIN_LABELS,
  CIFAR10_TEST_LABELS,
  CIFAR10_TRAIN_LABELS,
  cifarRecords,
  patternByte,
  writeTinyCifar10,
  writeTinyCifar100,
} from './cifar_files.js';
import { padCropReference } from './pad_crop_reference.js';

const inThread = new DecodePool(0);
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tiny10(): { parent: string; folder: string } {
  const t = writeTinyCifar10();
  dirs.push(t.parent);
  return t;
}

/** Pixel (y, x, c) of sample i of a batch of 32x32x3 images. */
function px(x: Float32Array, i: number, y: number, xx: number, c: number): number {
  return x[((i * 32 + y) * 32 + xx) * 3 + c];
}

function rejects(fn: () => unknown, ...mustMention: string[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof GdpError, `expected GdpError, got ${String(err)}`);
    assert.equal(err.code, 'BAD_DATA');
    for (const s of mustMention) assert.ok(err.message.includes(s), `message should mention ${s}: ${err.message}`);
    return true;
  });
}

describe('CIFAR-10 binary', () => {
  const { parent, folder } = tiny10();
  const pair: DatasetPair = loadCifar('cifar10', parent, inThread);

  it('reads every batch file in order, with labels, sizes and shapes', () => {
    assert.equal(pair.train.size, 6);
    assert.equal(pair.test.size, 3);
    assert.deepEqual(Array.from(pair.train.labels), CIFAR10_TRAIN_LABELS);
    assert.deepEqual(Array.from(pair.test.labels), CIFAR10_TEST_LABELS);
    assert.deepEqual(pair.train.shape, [32, 32, 3]);
    assert.equal(pair.train.numClasses, 10);
  });

  it('accepts the extracted folder itself', () => {
    const direct = loadCifar('cifar10', folder, inThread);
    assert.deepEqual(Array.from(direct.train.labels), CIFAR10_TRAIN_LABELS);
  });

  it('normalises planar bytes into NHWC with the paper constants', async () => {
    const b = await pair.train.load([4, 1], { augment: false, seed: 0 });
    assert.equal(b.n, 2);
    assert.equal(b.x.length, 2 * 32 * 32 * 3);
    assert.deepEqual(Array.from(b.y), [CIFAR10_TRAIN_LABELS[4], CIFAR10_TRAIN_LABELS[1]]);
    // Sample 1, row 2, column 3, green: byte (1*37 + 85 + 14 + 9) & 255 = 145.
    assert.equal(patternByte(1, 1, 2, 3), 145);
    assert.ok(Math.abs(px(b.x, 1, 2, 3, 1) - (145 / 255 - 0.4822) / 0.243) < 1e-6);
    for (const [i, s] of [
      [0, 4],
      [1, 1],
    ] as const)
      for (const [y, x] of [
        [0, 0],
        [31, 31],
        [17, 5],
      ] as const) {
        assert.ok(Math.abs(px(b.x, i, y, x, 0) - (patternByte(s, 0, y, x) / 255 - 0.4914) / 0.247) < 1e-6);
        assert.ok(Math.abs(px(b.x, i, y, x, 2) - (patternByte(s, 2, y, x) / 255 - 0.4465) / 0.261) < 1e-6);
      }
  });

  it('augments deterministically per (seed, sample index), not per batch position', async () => {
    const a = await pair.train.load([0, 1, 2, 3], { augment: true, seed: 11 });
    const again = await pair.train.load([0, 1, 2, 3], { augment: true, seed: 11 });
    assert.deepEqual(a.x, again.x);
    const alone = await pair.train.load([2], { augment: true, seed: 11 });
    assert.deepEqual(alone.x, a.x.subarray(2 * 3072, 3 * 3072));
    const other = await pair.train.load([0, 1, 2, 3], { augment: true, seed: 12 });
    assert.notDeepEqual(other.x, a.x);
  });

  it('crops from the zero-padded image and flips: augmented pixels are the plain ones moved', async () => {
    const plain = (await pair.train.load([3], { augment: false, seed: 0 })).x;
    const pad = [0, 1, 2].map((c) => (0 - [0.4914, 0.4822, 0.4465][c]) / [0.247, 0.243, 0.261][c]);
    let flips = 0;
    let shifted = 0;
    for (let seed = 0; seed < 24; seed++) {
      const a = cifarAugment(new Rng(sampleSeed(seed, 3)));
      if (a.flip) flips++;
      if (a.top !== 4 || a.left !== 4) shifted++;
      const x = (await pair.train.load([3], { augment: true, seed })).x;
      assert.ok(maxAbsDiff(x, padCropReference(plain, 32, 3, 4, a, pad)) < 1e-6, `seed ${seed}`);
    }
    // The check above would pass for an identity "augmentation" only if no seed moved anything.
    assert.ok(flips > 0 && flips < 24, `flips ${flips}/24`);
    assert.ok(shifted > 12, `shifted ${shifted}/24`);
  });

  it('draws crops over the full 9x9 range and flips about half the time', () => {
    const tops = new Set<number>();
    const lefts = new Set<number>();
    let flips = 0;
    for (let i = 0; i < 2000; i++) {
      const a = cifarAugment(new Rng(sampleSeed(7, i)));
      tops.add(a.top);
      lefts.add(a.left);
      if (a.flip) flips++;
    }
    assert.deepEqual(
      [...tops].sort((a, b) => a - b),
      [0, 1, 2, 3, 4, 5, 6, 7, 8],
    );
    assert.deepEqual(
      [...lefts].sort((a, b) => a - b),
      [0, 1, 2, 3, 4, 5, 6, 7, 8],
    );
    assert.ok(flips > 900 && flips < 1100, `flips ${flips}/2000`);
  });

  it('rejects out-of-range sample indices', async () => {
    await assert.rejects(pair.train.load([6], { augment: false, seed: 0 }), { name: 'GdpError', code: 'BAD_MESSAGE', message: /sample index 6 / });
    await assert.rejects(pair.train.load([0.5], { augment: false, seed: 0 }), { name: 'GdpError', code: 'BAD_MESSAGE', message: /sample index 0.5 / });
  });
});

describe('CIFAR-100 binary', () => {
  const t = writeTinyCifar100();
  dirs.push(t.parent);

  it('uses the fine label and the CIFAR-100 constants, from the parent or the folder', async () => {
    for (const dir of [t.parent, t.folder]) {
      const pair = loadCifar('cifar100', dir, inThread);
      assert.equal(pair.train.numClasses, 100);
      assert.deepEqual(
        Array.from(pair.train.labels),
        CIFAR100_TRAIN_LABELS.map((l) => l[1]),
      );
      assert.deepEqual(
        Array.from(pair.test.labels),
        CIFAR100_TEST_LABELS.map((l) => l[1]),
      );
      const b = await pair.test.load([1], { augment: false, seed: 0 });
      // Test sample 1 was written as pattern sample 101; row 5, column 9, blue.
      const byte = patternByte(101, 2, 5, 9);
      assert.ok(Math.abs(px(b.x, 0, 5, 9, 2) - (byte / 255 - 0.4408) / 0.2761) < 1e-6);
    }
  });
});

describe('malformed CIFAR files', () => {
  it('names a missing batch file', () => {
    const { parent, folder } = tiny10();
    rmSync(join(folder, 'data_batch_3.bin'));
    rejects(() => loadCifar('cifar10', parent, inThread), join(folder, 'data_batch_3.bin'), 'data_batch_1.bin');
  });

  it('names a missing folder with the expected layout', () => {
    const { parent } = tiny10();
    rejects(() => loadCifar('cifar100', parent, inThread), parent, 'cifar-100-binary', 'train.bin');
  });

  it('names a file whose size is not a whole number of records', () => {
    const { parent, folder } = tiny10();
    truncateSync(join(folder, 'test_batch.bin'), 3 * 3073 - 1);
    rejects(() => loadCifar('cifar10', parent, inThread), join(folder, 'test_batch.bin'), '3073-byte record');
  });

  it('names an empty file', () => {
    const { parent, folder } = tiny10();
    writeFileSync(join(folder, 'data_batch_5.bin'), Buffer.alloc(0));
    rejects(() => loadCifar('cifar10', parent, inThread), join(folder, 'data_batch_5.bin'));
  });

  it('names a file with a label out of range', () => {
    const { parent, folder } = tiny10();
    writeFileSync(join(folder, 'data_batch_2.bin'), cifarRecords([[10]], 0));
    rejects(() => loadCifar('cifar10', parent, inThread), join(folder, 'data_batch_2.bin'), '= 10');
    const t = writeTinyCifar100();
    dirs.push(t.parent);
    writeFileSync(
      join(t.folder, 'test.bin'),
      cifarRecords(
        [
          [3, 40],
          [20, 5],
        ],
        0,
      ),
    );
    rejects(() => loadCifar('cifar100', t.parent, inThread), join(t.folder, 'test.bin'), 'record 1');
    // CIFAR-10 files read as CIFAR-100 (a 3073-byte record is not 3074) are caught by their size.
    writeFileSync(join(t.folder, 'train.bin'), cifarRecords([[1], [2]], 0));
    rejects(() => loadCifar('cifar100', t.parent, inThread), join(t.folder, 'train.bin'), '3074-byte record');
  });
});
