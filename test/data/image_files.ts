import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';

export type Rgb = [number, number, number];

export async function writeSolidJpeg(path: string, width: number, height: number, rgb: Rgb): Promise<void> {
  await sharp({ create: { width, height, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } })
    .jpeg({ quality: 95 })
    .toFile(path);
}

/** A JPEG whose left half is `left` and right half is `right` (the split is at width/2). */
export async function writeSplitJpeg(path: string, width: number, height: number, left: Rgb, right: Rgb): Promise<void> {
  const raw = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) raw.set(x < width / 2 ? left : right, (y * width + x) * 3);
  await sharp(raw, { raw: { width, height, channels: 3 } })
    .jpeg({ quality: 95 })
    .toFile(path);
}

/** Classes created out of order, so that sorting them is visible; sizes differ in both orientations. */
export const CLASSES: { wnid: string; rgb: Rgb; sizes: [number, number][] }[] = [
  {
    wnid: 'n03000000',
    rgb: [20, 40, 230],
    sizes: [
      [300, 200],
      [120, 90],
    ],
  },
  {
    wnid: 'n01000000',
    rgb: [230, 30, 40],
    sizes: [
      [260, 380],
      [224, 224],
    ],
  },
  { wnid: 'n02000000', rgb: [40, 200, 60], sizes: [[500, 333]] },
];

/** DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG of solid colours; returns DIR. */
export async function writeTinyImageFolder(): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'gdp-imagenet-'));
  for (const split of ['train', 'val']) {
    for (const c of CLASSES) {
      const folder = join(dir, split, c.wnid);
      mkdirSync(folder, { recursive: true });
      const sizes = split === 'train' ? c.sizes : c.sizes.slice(0, 1);
      for (let i = 0; i < sizes.length; i++) await writeSolidJpeg(join(folder, `${c.wnid}_${i}.JPEG`), sizes[i][0], sizes[i][1], c.rgb);
    }
  }
  return dir;
}
