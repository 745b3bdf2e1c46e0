import { Rng } from '../rng.js';
import { sampleSeed } from './dataset.js';

/**
 * Per-channel mean and std of a dataset (one value per channel: RGB, or one for greyscale), applied to pixels scaled
 * to [0, 1] (torchvision's Normalize).
 */
export interface Normalisation {
  mean: readonly number[];
  std: readonly number[];
}

/** `mean [..], std [..]` (6 significant digits), for messages. */
export function describeNormalisation(n: Normalisation): string {
  const list = (v: readonly number[]) => `[${v.map((x) => x.toPrecision(6)).join(', ')}]`;
  return `mean ${list(n.mean)}, std ${list(n.std)}`;
}

/** The constants of the paper's loaders (loader/cifar10.py, cifar100.py, imagenet.py). */
export const CIFAR10_NORM: Normalisation = { mean: [0.4914, 0.4822, 0.4465], std: [0.247, 0.243, 0.261] };
export const CIFAR100_NORM: Normalisation = { mean: [0.5071, 0.4867, 0.4408], std: [0.2675, 0.2565, 0.2761] };
export const IMAGENET_NORM: Normalisation = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

/** A (channels x 256) table byte -> normalised float, channel c at [256c, 256c + 256), so the per-pixel work is one lookup. */
export function normalisationTable(norm: Normalisation): Float32Array {
  const channels = norm.mean.length;
  const lut = new Float32Array(channels * 256);
  for (let c = 0; c < channels; c++) for (let b = 0; b < 256; b++) lut[c * 256 + b] = (b / 255 - norm.mean[c]) / norm.std[c];
  return lut;
}

export const CIFAR_SIDE = 32;
export const CIFAR_PIXELS = CIFAR_SIDE * CIFAR_SIDE;
/** Image bytes of one CIFAR record: R plane, G plane, B plane, each 32x32 row-major. */
export const CIFAR_IMAGE_BYTES = 3 * CIFAR_PIXELS;
export const CIFAR_PAD = 4;

/**
 * torchvision's RandomCrop(side, padding=pad) then RandomHorizontalFlip, drawn in that order from the sample's Rng:
 * the crop's corner in the padded image (0..2*pad each) and whether to mirror.
 */
export interface PadCrop {
  top: number;
  left: number;
  flip: boolean;
}

export function padCropAugment(rng: Rng, pad: number): PadCrop {
  const span = 2 * pad + 1;
  const top = rng.int(span);
  const left = rng.int(span);
  return { top, left, flip: rng.next() < 0.5 };
}

/** CIFAR's RandomCrop(32, padding=4) and flip. */
export function cifarAugment(rng: Rng): PadCrop {
  return padCropAugment(rng, CIFAR_PAD);
}

/**
 * Writes one square image of interleaved bytes (`side` x `side` x `channels`, HWC) into `out` at `offset` as
 * normalised floats, cropped from the image zero-padded by `pad` at `a`'s corner and mirrored if `a.flip`
 * (torchvision pads the PIL image black, so padding is byte 0 before normalisation).
 */
export function padCropInto(
  raw: Uint8Array,
  side: number,
  channels: number,
  pad: number,
  a: PadCrop,
  lut: Float32Array,
  out: Float32Array,
  offset: number,
): void {
  for (let y = 0; y < side; y++) {
    const sy = y + a.top - pad;
    for (let x = 0; x < side; x++) {
      const sx = (a.flip ? side - 1 - x : x) + a.left - pad;
      const inside = sy >= 0 && sy < side && sx >= 0 && sx < side;
      const src = (sy * side + sx) * channels;
      const dst = offset + (y * side + x) * channels;
      for (let c = 0; c < channels; c++) out[dst + c] = lut[c * 256 + (inside ? raw[src + c] : 0)];
    }
  }
}

/**
 * Writes `n` channel-planar CIFAR images (`planes`, n x 3072 bytes) as normalised NHWC floats into `out`. With
 * augmentation, sample i takes its crop and flip from Rng(sampleSeed(seed, indices[i])); the zero padding is
 * black before normalisation, as torchvision pads the PIL image.
 */
export function cifarToNhwc(
  planes: Uint8Array,
  indices: ArrayLike<number>,
  opts: { augment: boolean; seed: number; lut: Float32Array },
  out: Float32Array,
): void {
  const { lut } = opts;
  const n = indices.length;
  const S = CIFAR_SIDE;
  for (let i = 0; i < n; i++) {
    const src = i * CIFAR_IMAGE_BYTES;
    const dst = i * CIFAR_IMAGE_BYTES;
    if (!opts.augment) {
      for (let p = 0; p < CIFAR_PIXELS; p++) {
        const o = dst + 3 * p;
        out[o] = lut[planes[src + p]];
        out[o + 1] = lut[256 + planes[src + CIFAR_PIXELS + p]];
        out[o + 2] = lut[512 + planes[src + 2 * CIFAR_PIXELS + p]];
      }
      continue;
    }
    const a = cifarAugment(new Rng(sampleSeed(opts.seed, indices[i])));
    for (let y = 0; y < S; y++) {
      const sy = y + a.top - CIFAR_PAD;
      for (let x = 0; x < S; x++) {
        const sx = (a.flip ? S - 1 - x : x) + a.left - CIFAR_PAD;
        const o = dst + 3 * (y * S + x);
        if (sy < 0 || sy >= S || sx < 0 || sx >= S) {
          out[o] = lut[0];
          out[o + 1] = lut[256];
          out[o + 2] = lut[512];
        } else {
          const p = src + sy * S + sx;
          out[o] = lut[planes[p]];
          out[o + 1] = lut[256 + planes[p + CIFAR_PIXELS]];
          out[o + 2] = lut[512 + planes[p + 2 * CIFAR_PIXELS]];
        }
      }
    }
  }
}

export interface Rect {
  left: number;
  top: number;
  width: number;
  height: number;
}

/**
 * torchvision's RandomResizedCrop.get_params: up to 10 tries at a crop of uniform area fraction in `scale` and
 * log-uniform aspect ratio in `ratio` that fits the image; else a centre crop clamped to the ratio range.
 */
export function randomResizedCropRect(
  width: number,
  height: number,
  rng: Rng,
  scale: readonly [number, number] = [0.08, 1],
  ratio: readonly [number, number] = [3 / 4, 4 / 3],
): Rect {
  const area = width * height;
  const logLo = Math.log(ratio[0]);
  const logHi = Math.log(ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const targetArea = area * (scale[0] + rng.next() * (scale[1] - scale[0]));
    const aspect = Math.exp(logLo + rng.next() * (logHi - logLo));
    const w = Math.round(Math.sqrt(targetArea * aspect));
    const h = Math.round(Math.sqrt(targetArea / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const top = rng.int(height - h + 1);
      const left = rng.int(width - w + 1);
      return { left, top, width: w, height: h };
    }
  }
  const inRatio = width / height;
  let w = width;
  let h = height;
  if (inRatio < ratio[0]) h = Math.round(w / ratio[0]);
  else if (inRatio > ratio[1]) w = Math.round(h * ratio[1]);
  return { left: Math.floor((width - w) / 2), top: Math.floor((height - h) / 2), width: w, height: h };
}

/** torchvision's Resize(shorter): the shorter side becomes `shorter`, the longer keeps the aspect (truncated). */
export function resizeShorterSide(width: number, height: number, shorter: number): { width: number; height: number } {
  if (width <= height) return { width: shorter, height: Math.floor((shorter * height) / width) };
  return { width: Math.floor((shorter * width) / height), height: shorter };
}

/** torchvision's CenterCrop offsets (rounded half-way). */
export function centerCropRect(width: number, height: number, size: number): Rect {
  return { left: Math.round((width - size) / 2), top: Math.round((height - size) / 2), width: size, height: size };
}
