import { readFile } from 'node:fs/promises';
import sharp from 'sharp';
import { GdpError } from '../errors.js';
import { Rng } from '../rng.js';
import { sampleSeed } from './dataset.js';
import { centerCropRect, padCropAugment, padCropInto, randomResizedCropRect, resizeShorterSide } from './transforms.js';

/**
 * How image files become model inputs: plain data, sent to the pool threads with every task.
 * - evaluation (and pad_crop's base image): the shorter side resized to `resize`, then the centre `size` x `size`;
 * - training, `resized_crop`: torchvision's RandomResizedCrop(size) then RandomHorizontalFlip (the ImageNet recipe);
 * - training, `pad_crop`: the evaluation image zero-padded by `pad`, RandomCrop(size) then RandomHorizontalFlip
 *   (the CIFAR recipe, for small images where an 8%-area crop would keep a few pixels).
 */
export interface ImageSpec {
  /** Side of the square output, pixels. */
  size: number;
  /** 3: sRGB; 1: greyscale (libvips' luminance of the colour image). */
  channels: 1 | 3;
  augment: 'resized_crop' | 'pad_crop';
  /** The shorter side before the centre crop, pixels (ImageNet: 256 for 224). */
  resize: number;
  /** pad_crop's zero padding on every side, pixels. */
  pad: number;
}

/** Floats per decoded sample: size x size x channels. */
export function imageSampleSize(spec: ImageSpec): number {
  return spec.size * spec.size * spec.channels;
}

// Each file is decoded once per epoch: libvips' operation cache would only hold memory.
sharp.cache(false);

/**
 * Decodes one image file (any format sharp reads: JPEG, PNG, WebP, TIFF) into `out` at `offset` as normalised HWC
 * floats of `spec.size` x `spec.size` x `spec.channels`, transformed as `ImageSpec` says; the training draws come
 * from Rng(sampleSeed(seed, index)), so they depend on the sample, not on the thread. Resampling is libvips' linear
 * kernel (antialiased when shrinking, like torchvision's bilinear resize of PIL images). EXIF orientation is
 * ignored, as PIL does. `lut` is `normalisationTable` of the dataset's normalisation (one table per channel).
 * Throws GdpError BAD_DATA naming the file when it cannot be read or decoded.
 */
export async function decodeImageInto(
  file: string,
  index: number,
  opts: { augment: boolean; seed: number; lut: Float32Array; spec: ImageSpec },
  out: Float32Array,
  offset: number,
): Promise<void> {
  const { spec, lut } = opts;
  const side = spec.size;
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    throw new GdpError('BAD_DATA', `cannot read image ${file}: ${(err as Error).message}`);
  }
  const rng = opts.augment ? new Rng(sampleSeed(opts.seed, index)) : undefined;
  let raw: Buffer;
  try {
    // 'truncated' aborts on cut-off files but tolerates the minor warnings some real ImageNet JPEGs raise.
    const img = sharp(bytes, { failOn: 'truncated' });
    const meta = await img.metadata();
    const width = meta.width;
    const height = meta.height;
    if (!width || !height) throw new GdpError('BAD_DATA', 'the image header holds no width or height');
    const resize = { fit: 'fill' as const, kernel: 'linear' as const };
    if (rng && spec.augment === 'resized_crop') {
      const rect = randomResizedCropRect(width, height, rng);
      const flip = rng.next() < 0.5;
      img.extract(rect).resize(side, side, resize);
      if (flip) img.flop();
    } else {
      const size = resizeShorterSide(width, height, spec.resize);
      img.resize(size.width, size.height, resize).extract(centerCropRect(size.width, size.height, side));
    }
    // Greyscale, CMYK and alpha images exist: always end as sRGB or one grey channel.
    img.removeAlpha().toColourspace(spec.channels === 3 ? 'srgb' : 'b-w');
    raw = await img.raw().toBuffer();
  } catch (err) {
    throw new GdpError('BAD_DATA', `cannot decode image ${file}: ${(err as Error).message}`);
  }
  const expected = imageSampleSize(spec);
  if (raw.length !== expected) {
    throw new GdpError('BAD_DATA', `decoding image ${file} gave ${raw.length} bytes, expected ${expected} (${side}x${side}x${spec.channels})`);
  }
  if (rng && spec.augment === 'pad_crop') {
    padCropInto(raw, side, spec.channels, spec.pad, padCropAugment(rng, spec.pad), lut, out, offset);
    return;
  }
  const c = spec.channels;
  for (let p = 0; p < expected; p += c) for (let k = 0; k < c; k++) out[offset + p + k] = lut[k * 256 + raw[p + k]];
}
