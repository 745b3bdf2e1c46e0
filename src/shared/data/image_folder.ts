import { createHash } from 'node:crypto';
import { readdirSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { GdpError } from '../errors.js';
import { checkedIndices, type Batch, type Dataset, type DatasetPair } from './dataset.js';
import type { DecodePool } from './decode_pool.js';
import { checkImageHeaders } from './image_headers.js';
import type { ImageSpec } from './image_decode.js';
import { stratifiedSubset } from './subset.js';
import type { Normalisation } from './transforms.js';

/** The extensions read as images (case-insensitive): what sharp decodes. Other files in a class folder are ignored. */
const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.webp', '.tif', '.tiff'];
const IMAGE_EXTENSION_SET = new Set(IMAGE_EXTENSIONS);

/** A dataset of class folders: what it is called in messages, how its images are made, its normalisation. */
export interface FolderSetup {
  /** `imagenet` or `folder`: names the datasets (`<name>/train`, `<name>/val`) and starts every error message. */
  name: string;
  spec: ImageSpec;
  /** Fixed constants; undefined: computed from the training images (`folderNormalisation`) on first use. */
  norm?: Normalisation;
}

/** Image sides from this up train with random resized crops; smaller ones with pad+crop. */
const RESIZED_CROP_MIN_SIDE = 64;

/**
 * The transforms for `size` x `size` x `channels` images: from RESIZED_CROP_MIN_SIDE up the ImageNet recipe (random
 * resized crop; evaluation resizes the shorter side to size * 256/224 and centre-crops), below it the CIFAR recipe
 * (the evaluation image, shorter side resized to `size` and centre-cropped, zero-padded by size/8 rounded, random
 * crop). Both flip horizontally. At 224 this is exactly ImageNet's (resize 256, crop 224).
 */
export function folderImageSpec(size: number, channels: 1 | 3): ImageSpec {
  if (size >= RESIZED_CROP_MIN_SIDE) return { size, channels, augment: 'resized_crop', resize: Math.round((size * 256) / 224), pad: 0 };
  return { size, channels, augment: 'pad_crop', resize: size, pad: Math.max(1, Math.round(size / 8)) };
}

function layout(name: string): string {
  return `DIR/train/<class>/* and DIR/val/<class>/* (${IMAGE_EXTENSIONS.join(', ')}; class index = sorted class folder order) for ${name}`;
}

function listDir(name: string, path: string): string[] {
  try {
    return readdirSync(path).sort();
  } catch (err) {
    throw new GdpError('BAD_DATA', `${name}: cannot list ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); expected ${layout(name)}`);
  }
}

function isDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

const isImage = (file: string): boolean => IMAGE_EXTENSION_SET.has(extname(file).toLowerCase());

/** The class folders of `root`, sorted (code-unit order, as Python's sorted() for ASCII names). */
function classFolders(name: string, root: string): string[] {
  const entries = listDir(name, root);
  const classes = entries.filter((c) => isDir(join(root, c)));
  if (classes.length > 0) return classes;
  const loose = entries.filter(isImage).length;
  if (loose > 0)
    throw new GdpError('BAD_DATA', `${name}: ${root} holds ${loose} image file(s) but no class folders: put each class's images in ${root}/<class>/`);
  throw new GdpError('BAD_DATA', `${name}: ${root} has no class folders; expected ${layout(name)}`);
}

/** The images of one split, as paths and as names relative to the split's folder (what the fingerprint hashes). */
interface ScannedSplit {
  files: string[];
  relative: string[];
  labels: Int32Array;
}

/** Every image under `root/<class>/` for the class folders present, numbered by their position in `classes`. */
function scanSplit(name: string, root: string, present: readonly string[], classes: readonly string[]): ScannedSplit {
  const index = new Map(classes.map((c, i) => [c, i]));
  const files: string[] = [];
  const relative: string[] = [];
  const labels: number[] = [];
  for (const c of present) {
    const folder = join(root, c);
    const images = listDir(name, folder).filter(isImage);
    if (images.length === 0) throw new GdpError('BAD_DATA', `${name}: class folder ${folder} has no images (${IMAGE_EXTENSIONS.join(', ')})`);
    for (const f of images) {
      files.push(join(folder, f));
      relative.push(`${c}/${f}`);
      labels.push(index.get(c)!);
    }
  }
  return { files, relative, labels: Int32Array.from(labels) };
}

/**
 * A split of class folders of images, decoded, transformed and normalised on demand in the decode pool. Sample k
 * is the k-th file in (sorted class, sorted file name) order.
 */
export class ImageFolderDataset implements Dataset {
  readonly shape: [number, number, number];
  readonly size: number;
  readonly labels: Int32Array;
  readonly files: readonly string[];
  readonly identity: string;

  constructor(
    readonly name: string,
    /** The listing of both splits this set was built from: builds the pair again without reading the folder. */
    readonly listing: FolderListing,
    split: ScannedSplit,
    readonly numClasses: number,
    readonly spec: ImageSpec,
    /** The normalisation, possibly computed on first call (memoised by the caller). */
    readonly normalisation: () => Promise<Normalisation>,
    private readonly pool: DecodePool,
    setupText: string,
  ) {
    this.shape = [spec.size, spec.size, spec.channels];
    this.files = split.files;
    this.labels = split.labels;
    this.size = split.files.length;
    const h = createHash('sha256').update(setupText);
    for (const r of split.relative) h.update(`${r}\n`);
    this.identity = `${setupText} files ${h.digest('hex').slice(0, 16)}`;
  }

  async load(indices: ArrayLike<number>, opts: { augment: boolean; seed: number }): Promise<Batch> {
    const { idx, y } = checkedIndices(this.name, this.labels, indices);
    const x = await this.decode(idx, opts, await this.normalisation());
    return { x, y, n: idx.length };
  }

  /** Throws BAD_DATA naming the first file whose first bytes are no JPEG, PNG, WebP or TIFF (checkImageHeaders). */
  checkFiles(): void {
    checkImageHeaders(this.name, this.files);
  }

  /** Samples `idx` (already checked) as NHWC floats normalised by `norm`, decoded in the pool. */
  decode(idx: Int32Array, opts: { augment: boolean; seed: number }, norm: Normalisation): Promise<Float32Array> {
    return this.pool.decode(idx.length, (start, end) => ({
      kind: 'image',
      files: Array.from(idx.subarray(start, end), (k) => this.files[k]),
      indices: idx.slice(start, end),
      augment: opts.augment,
      seed: opts.seed,
      norm,
      spec: this.spec,
    }));
  }
}

/** At most this many training images are decoded for the normalisation; beyond it, a stratified subset of them. */
const NORM_SAMPLE_LIMIT = 10_000;
const NORM_BATCH = 64;

/**
 * Per-channel mean and population std of the pixel values (bytes / 255) of the training images as evaluation sees
 * them (resized and centre-cropped to the spec's size, no augmentation): every image up to NORM_SAMPLE_LIMIT, else
 * `stratifiedSubset` of that many. Sums run in float64 in sample order, so every worker gets the same constants.
 * Throws BAD_DATA naming a file that does not decode, or a channel with one value in every image (std 0).
 */
async function folderNormalisation(train: ImageFolderDataset): Promise<Normalisation> {
  const c = train.spec.channels;
  const idx = train.size > NORM_SAMPLE_LIMIT ? stratifiedSubset(train.labels, NORM_SAMPLE_LIMIT) : Int32Array.from({ length: train.size }, (_, i) => i);
  const identity: Normalisation = { mean: new Array<number>(c).fill(0), std: new Array<number>(c).fill(1) };
  const sum = new Float64Array(c);
  const sq = new Float64Array(c);
  for (let s = 0; s < idx.length; s += NORM_BATCH) {
    const x = await train.decode(idx.subarray(s, s + NORM_BATCH), { augment: false, seed: 0 }, identity);
    for (let p = 0; p < x.length; p += c) {
      for (let k = 0; k < c; k++) {
        const v = x[p + k];
        sum[k] += v;
        sq[k] += v * v;
      }
    }
  }
  const count = idx.length * train.spec.size * train.spec.size;
  const mean = Array.from(sum, (s) => s / count);
  const std = Array.from(sq, (q, k) => Math.sqrt(Math.max(0, q / count - mean[k] * mean[k])));
  const flat = std.findIndex((v) => !(v > 1e-6));
  if (flat >= 0) {
    throw new GdpError(
      'BAD_DATA',
      `${train.name}: channel ${flat} has the value ${mean[flat].toFixed(4)} in every training image (std 0), so it cannot be normalised: set data.mean and data.std`,
    );
  }
  return { mean, std };
}

/** The class folders and images of both splits of a folder dataset, as read from disk once (`listFolderPair`). */
export interface FolderListing {
  /** The training split's class folders, sorted: class k is `classes[k]`. */
  classes: readonly string[];
  train: ScannedSplit;
  val: ScannedSplit;
}

/**
 * Lists class folders as torchvision's ImageFolder sees them: `dir/train/<class>/*` and `dir/val/<class>/*`, classes
 * numbered by sorted train folder name, so a validation split missing a class still numbers the rest right. `name`
 * (`FolderSetup.name`) starts every error message.
 * @throws GdpError BAD_DATA for a missing split folder, a split without class folders, a class folder without images,
 * or a validation class that training lacks.
 */
function listFolderPair(dir: string, name: string): FolderListing {
  const trainRoot = join(dir, 'train');
  const valRoot = join(dir, 'val');
  for (const root of [trainRoot, valRoot]) if (!isDir(root)) throw new GdpError('BAD_DATA', `${name}: ${root} is not a folder; expected ${layout(name)}`);
  const classes = classFolders(name, trainRoot);
  const known = new Set(classes);
  const valClasses = classFolders(name, valRoot);
  const stray = valClasses.filter((c) => !known.has(c));
  if (stray.length) throw new GdpError('BAD_DATA', `${name}: ${valRoot} has class folder(s) ${stray.slice(0, 5).join(', ')} missing from ${trainRoot}`);
  return { classes, train: scanSplit(name, trainRoot, classes, classes), val: scanSplit(name, valRoot, valClasses, classes) };
}

/**
 * The train and val datasets of `listing`, decoded on `pool` as `setup` says; reads nothing from disk. Without
 * `setup.norm`, the normalisation is computed from the training images on first use (`folderNormalisation`), once
 * for both sets.
 */
export function folderPair(listing: FolderListing, pool: DecodePool, setup: FolderSetup): DatasetPair {
  const { name, spec } = setup;
  const { classes } = listing;
  let computed: Promise<Normalisation> | undefined;
  const given = setup.norm;
  const normalisation = (): Promise<Normalisation> => (given ? Promise.resolve(given) : (computed ??= folderNormalisation(train)));
  // What a worker's copy must match besides labels: sample k must be the same file, transformed the same way.
  const setupText = `${spec.size}x${spec.size}x${spec.channels} ${spec.augment} resize ${spec.resize} pad ${spec.pad} norm ${given ? JSON.stringify(given) : 'from train'} classes ${createHash('sha256').update(classes.join('\n')).digest('hex').slice(0, 16)}`;
  const train: ImageFolderDataset = new ImageFolderDataset(`${name}/train`, listing, listing.train, classes.length, spec, normalisation, pool, setupText);
  const test = new ImageFolderDataset(`${name}/val`, listing, listing.val, classes.length, spec, normalisation, pool, setupText);
  return { train, test };
}

/**
 * The train and val datasets of the class folders under `dir` (`listFolderPair`, then `folderPair`).
 * @throws GdpError BAD_DATA as listFolderPair.
 */
export function loadFolderPair(dir: string, pool: DecodePool, setup: FolderSetup): DatasetPair {
  return folderPair(listFolderPair(dir, setup.name), pool, setup);
}
