import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The test pattern: a byte that differs by sample, channel, row and column, so any move of a pixel shows. */
export function patternByte(sample: number, c: number, y: number, x: number): number {
  return (sample * 37 + c * 85 + y * 7 + x * 3) & 255;
}

/** Records in the real binary layout: label byte(s), then R, G, B planes of 32x32, row-major. */
export function cifarRecords(labels: number[][], firstSample: number): Buffer {
  const labelBytes = labels[0].length;
  const rec = labelBytes + 3072;
  const buf = Buffer.alloc(labels.length * rec);
  labels.forEach((ls, r) => {
    ls.forEach((l, b) => (buf[r * rec + b] = l));
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < 32; y++) for (let x = 0; x < 32; x++) buf[r * rec + labelBytes + c * 1024 + y * 32 + x] = patternByte(firstSample + r, c, y, x);
  });
  return buf;
}

export const CIFAR10_TRAIN_LABELS = [3, 7, 0, 9, 1, 5];
export const CIFAR10_TEST_LABELS = [2, 8, 4];

/** A parent folder holding cifar-10-batches-bin/ with 6 training records over five batches and 3 test records. */
export function writeTinyCifar10(): { parent: string; folder: string } {
  const parent = mkdtempSync(join(tmpdir(), 'gdp-cifar10-'));
  const folder = join(parent, 'cifar-10-batches-bin');
  mkdirSync(folder);
  const perBatch = [[0, 1], [2], [3], [4], [5]];
  perBatch.forEach((samples, b) => {
    writeFileSync(
      join(folder, `data_batch_${b + 1}.bin`),
      cifarRecords(
        samples.map((s) => [CIFAR10_TRAIN_LABELS[s]]),
        samples[0],
      ),
    );
  });
  writeFileSync(
    join(folder, 'test_batch.bin'),
    cifarRecords(
      CIFAR10_TEST_LABELS.map((l) => [l]),
      100,
    ),
  );
  return { parent, folder };
}

export const CIFAR100_TRAIN_LABELS = [
  [4, 30],
  [19, 99],
  [0, 1],
  [11, 55],
];
export const CIFAR100_TEST_LABELS = [
  [7, 64],
  [2, 12],
];

export function writeTinyCifar100(): { parent: string; folder: string } {
  const parent = mkdtempSync(join(tmpdir(), 'gdp-cifar100-'));
  const folder = join(parent, 'cifar-100-binary');
  mkdirSync(folder);
  writeFileSync(join(folder, 'train.bin'), cifarRecords(CIFAR100_TRAIN_LABELS, 0));
  writeFileSync(join(folder, 'test.bin'), cifarRecords(CIFAR100_TEST_LABELS, 100));
  return { parent, folder };
}
