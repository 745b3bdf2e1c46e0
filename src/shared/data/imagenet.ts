import { readdirSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { GdpError } from '../errors.js';
import { checkedIndices, type Batch, type Dataset, type DatasetPair } from './dataset.js';
import type { DecodePool } from './decode_pool.js';
import { IMAGE_SIDE } from './image_decode.js';
import { IMAGENET_NORM, type Normalisation } from './transforms.js';

/** The extensions torchvision's ImageFolder accepts (case-insensitive). */
const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp']);

const LAYOUT = 'DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG (class index = sorted class folder order)';

function listDir(path: string): string[] {
  try {
    return readdirSync(path).sort();
  } catch (err) {
    throw new GdpError('BAD_DATA', `imagenet: cannot list ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); expected ${LAYOUT}`);
  }
}

function isDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

interface ImageFolder {
  files: string[];
  labels: Int32Array;
}

/** The class folders of `root`, sorted (code-unit order, as Python's sorted() for ASCII wnids). */
export function imageFolderClasses(root: string): string[] {
  const classes = listDir(root).filter((c) => isDir(join(root, c)));
  if (classes.length === 0) throw new GdpError('BAD_DATA', `imagenet: ${root} has no class folders; expected ${LAYOUT}`);
  return classes;
}

/** Every image file under `root/<class>/`, classes numbered by their position in `classes`. */
export function scanImageFolder(root: string, classes: readonly string[]): ImageFolder {
  const files: string[] = [];
  const labels: number[] = [];
  classes.forEach((c, label) => {
    const folder = join(root, c);
    if (!isDir(folder)) return;
    for (const f of listDir(folder)) {
      if (!IMAGE_EXTENSIONS.has(extname(f).toLowerCase())) continue;
      files.push(join(folder, f));
      labels.push(label);
    }
  });
  if (files.length === 0) throw new GdpError('BAD_DATA', `imagenet: no image files under ${root}; expected ${LAYOUT}`);
  return { files, labels: Int32Array.from(labels) };
}

/** A folder of class subfolders of images, decoded and cropped on demand in the pool. */
export class ImageFolderDataset implements Dataset {
  readonly shape: [number, number, number] = [IMAGE_SIDE, IMAGE_SIDE, 3];
  readonly size: number;
  readonly labels: Int32Array;
  readonly files: readonly string[];

  constructor(
    readonly name: string,
    folder: ImageFolder,
    readonly numClasses: number,
    private readonly norm: Normalisation,
    private readonly pool: DecodePool,
  ) {
    this.files = folder.files;
    this.labels = folder.labels;
    this.size = folder.files.length;
  }

  async load(indices: ArrayLike<number>, opts: { augment: boolean; seed: number }): Promise<Batch> {
    const n = indices.length;
    const { idx, y } = checkedIndices(this.name, this.labels, indices);
    const x = await this.pool.decode(n, 'image', (start, end) => ({
      kind: 'image',
      files: Array.from(idx.subarray(start, end), (k) => this.files[k]),
      indices: idx.slice(start, end),
      augment: opts.augment,
      seed: opts.seed,
      norm: this.norm,
    }));
    return { x, y, n };
  }
}

/**
 * ImageNet as torchvision's ImageFolder sees it: `dir/train/<wnid>/*.JPEG` and `dir/val/<wnid>/*.JPEG`. The
 * classes are the train folder's, so a validation folder missing a class still numbers the rest right.
 */
export function loadImageFolders(dir: string, pool: DecodePool): DatasetPair {
  const trainRoot = join(dir, 'train');
  const valRoot = join(dir, 'val');
  for (const root of [trainRoot, valRoot]) if (!isDir(root)) throw new GdpError('BAD_DATA', `imagenet: ${root} is not a folder; expected ${LAYOUT}`);
  const classes = imageFolderClasses(trainRoot);
  const known = new Set(classes);
  const stray = imageFolderClasses(valRoot).filter((c) => !known.has(c));
  if (stray.length) throw new GdpError('BAD_DATA', `imagenet: ${valRoot} has class folder(s) ${stray.slice(0, 5).join(', ')} missing from ${trainRoot}`);
  return {
    train: new ImageFolderDataset('imagenet/train', scanImageFolder(trainRoot, classes), classes.length, IMAGENET_NORM, pool),
    test: new ImageFolderDataset('imagenet/val', scanImageFolder(valRoot, classes), classes.length, IMAGENET_NORM, pool),
  };
}
