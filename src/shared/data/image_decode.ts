import { readFile } from 'node:fs/promises';
import sharp from 'sharp';
import { GdpError } from '../errors.js';
import { Rng } from '../rng.js';
import { sampleSeed } from './dataset.js';
import { centerCropRect, randomResizedCropRect, resizeShorterSide } from './transforms.js';

/** The ImageNet input side and the side the validation images are resized to before the centre crop. */
export const IMAGE_SIDE = 224;
export const VAL_RESIZE = 256;

// Each file is decoded once per epoch: libvips' operation cache would only hold memory.
sharp.cache(false);

/**
 * Decodes one image file into `out` at `offset` as normalised HWC floats of IMAGE_SIDE x IMAGE_SIDE x 3.
 * Training: torchvision's RandomResizedCrop(224) then RandomHorizontalFlip, drawn from Rng(sampleSeed(seed,
 * index)). Evaluation: Resize(256) then CenterCrop(224). Resampling is libvips' linear kernel (antialiased when
 * shrinking, like torchvision's bilinear resize of PIL images). EXIF orientation is ignored, as PIL does.
 */
export async function decodeImageInto(
  file: string,
  index: number,
  opts: { augment: boolean; seed: number; lut: Float32Array },
  out: Float32Array,
  offset: number,
): Promise<void> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    throw new GdpError('BAD_DATA', `cannot read image ${file}: ${(err as Error).message}`);
  }
  let raw: Buffer;
  try {
    // 'truncated' aborts on cut-off files but tolerates the minor warnings some real ImageNet JPEGs raise.
    const img = sharp(bytes, { failOn: 'truncated' });
    const meta = await img.metadata();
    const width = meta.width;
    const height = meta.height;
    if (!width || !height) throw new Error('no image dimensions');
    const resize = { fit: 'fill' as const, kernel: 'linear' as const };
    if (opts.augment) {
      const rng = new Rng(sampleSeed(opts.seed, index));
      const rect = randomResizedCropRect(width, height, rng);
      const flip = rng.next() < 0.5;
      img.extract(rect).resize(IMAGE_SIDE, IMAGE_SIDE, resize);
      if (flip) img.flop();
    } else {
      const size = resizeShorterSide(width, height, VAL_RESIZE);
      img.resize(size.width, size.height, resize).extract(centerCropRect(size.width, size.height, IMAGE_SIDE));
    }
    // Greyscale and CMYK JPEGs exist in ImageNet: always end as 3-channel sRGB.
    raw = await img.removeAlpha().toColourspace('srgb').raw().toBuffer();
  } catch (err) {
    throw new GdpError('BAD_DATA', `cannot decode image ${file}: ${(err as Error).message}`);
  }
  const expected = IMAGE_SIDE * IMAGE_SIDE * 3;
  if (raw.length !== expected) throw new GdpError('BAD_DATA', `decoding image ${file} gave ${raw.length} bytes, expected ${expected} (224x224 RGB)`);
  const { lut } = opts;
  for (let p = 0; p < expected; p += 3) {
    out[offset + p] = lut[raw[p]];
    out[offset + p + 1] = lut[256 + raw[p + 1]];
    out[offset + p + 2] = lut[512 + raw[p + 2]];
  }
}
