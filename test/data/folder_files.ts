import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { extname, join } from 'node:path';
import sharp from 'sharp';
import { parseConfig } from '../../src/shared/config/load.js';
import type { Config } from '../../src/shared/config/schema.js';

/** Writes `pixels` (interleaved, `channels` per pixel) as PNG, lossless WebP or JPEG, by the file's extension. */
export async function writeImage(path: string, width: number, height: number, channels: 1 | 3, pixels: Uint8Array): Promise<void> {
  const img = sharp(Buffer.from(pixels), { raw: { width, height, channels } });
  const ext = extname(path).toLowerCase();
  if (ext === '.png') await img.png().toFile(path);
  else if (ext === '.webp') await img.webp({ lossless: true }).toFile(path);
  else if (ext === '.jpg' || ext === '.jpeg') await img.jpeg({ quality: 95 }).toFile(path);
  else throw new Error(`writeImage: no encoder for ${path}`);
}

export async function writeSolid(path: string, width: number, height: number, colour: readonly number[]): Promise<void> {
  const c = colour.length as 1 | 3;
  const pixels = new Uint8Array(width * height * c);
  for (let p = 0; p < pixels.length; p++) pixels[p] = colour[p % c];
  await writeImage(path, width, height, c, pixels);
}

/** A pattern every pixel of which differs from its neighbours: byte (13x + 7y + 50c + seed) mod 256. */
export function patternPixels(width: number, height: number, channels: 1 | 3, seed: number): Uint8Array {
  const out = new Uint8Array(width * height * channels);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) for (let c = 0; c < channels; c++) out[(y * width + x) * channels + c] = (13 * x + 7 * y + 50 * c + seed) % 256;
  return out;
}

export interface SolidImage {
  /** Path relative to the split folder: `<class>/<file>`. */
  file: string;
  width: number;
  height: number;
  colour: number[];
}

export interface SolidFolder {
  dir: string;
  /** Class folder names in label order (sorted). */
  classes: string[];
  /** Every image of each split in sample order, with its label. */
  train: (SolidImage & { label: number })[];
  val: (SolidImage & { label: number })[];
}

/** Class folders created out of sorted order, so that sorting shows; sizes of both orientations and several formats. */
const LAYOUT: { cls: string; train: [string, number, number][]; val: [string, number, number][] }[] = [
  {
    cls: 'zebra',
    train: [
      ['0.png', 30, 30],
      ['1.png', 18, 18],
      ['2.png', 64, 48],
    ],
    val: [['0.png', 33, 31]],
  },
  {
    cls: 'ant',
    train: [
      ['0.png', 40, 30],
      ['1.webp', 24, 36],
    ],
    val: [['0.png', 36, 36]],
  },
  {
    cls: 'moth',
    train: [
      ['0.png', 32, 32],
      ['1.png', 50, 20],
    ],
    val: [['0.png', 20, 28]],
  },
];

/**
 * DIR/{train,val}/<class>/ of solid-colour images (1 or 3 channels, a different colour per image) and a text file
 * that must be ignored; returns DIR with the expected samples. Solid colours survive any resize and crop exactly.
 */
export async function writeSolidFolder(channels: 1 | 3): Promise<SolidFolder> {
  const dir = mkdtempSync(join(tmpdir(), 'gdp-folder-'));
  const classes = LAYOUT.map((l) => l.cls).sort();
  const out: SolidFolder = { dir, classes, train: [], val: [] };
  let k = 0;
  for (const l of LAYOUT) {
    for (const split of ['train', 'val'] as const) {
      mkdirSync(join(dir, split, l.cls), { recursive: true });
      for (const [name, width, height] of l[split]) {
        k++;
        // WebP has no greyscale: a grey image would come back through RGB.
        const file = `${l.cls}/${channels === 1 ? name.replace('.webp', '.png') : name}`;
        const colour = channels === 3 ? [(37 * k) % 256, (91 * k + 20) % 256, (53 * k + 100) % 256] : [(41 * k + 10) % 256];
        await writeSolid(join(dir, split, file), width, height, colour);
        out[split].push({ file, width, height, colour, label: classes.indexOf(l.cls) });
      }
    }
    writeFileSync(join(dir, 'train', l.cls, 'notes.txt'), 'not an image');
  }
  for (const split of ['train', 'val'] as const) out[split].sort((a, b) => a.label - b.label || (a.file < b.file ? -1 : 1));
  return out;
}

/** An eval-only config of `cifar.resnet20` with 3 classes on the folder `dir` (batches of 4, decoding in-thread). */
export function solidFolderConfig(dir: string): Config {
  return parseConfig({
    base: { task_name: 'eval' },
    model: { name: 'cifar.resnet20', num_class: 3 },
    train: { max_epoch: 0 },
    data: { type: 'folder', dir, batch_size: 4, test_batch_size: 4, num_workers: 0 },
    loss: { criterion: 'softmax' },
  });
}
