import type { Config } from '../config/schema.js';
import { GdpError } from '../errors.js';
import { modelInputShape, modelOptions } from '../models/registry.js';
import { cifarNormalisation, loadCifar } from './cifar.js';
import type { DatasetPair } from './dataset.js';
import { DecodePool } from './decode_pool.js';
import { folderImageSpec, folderPair, loadFolderPair, type FolderListing, type FolderSetup, type ImageFolderDataset } from './image_folder.js';
import { loadImageFolders } from './imagenet.js';
import { loadMnist, mnistNormalisation } from './mnist.js';
import { SubsetDataset } from './subset.js';
import { IMAGENET_NORM, type Normalisation } from './transforms.js';

export type { DatasetPair } from './dataset.js';
export { dataFingerprint } from './dataset.js';

export interface LoadDatasetOptions {
  /** `--data-dir`: overrides `data.dir`. */
  dataDir?: string;
  /** Overrides `data.num_workers` (0: decode in the calling thread). */
  numWorkers?: number;
  /**
   * Overrides the dataset's normalisation (constants, MNIST's own, `data.mean`/`data.std` or computed): what
   * `gdp-model eval` takes from a model file. One value per channel of the images, pixels in [0, 1].
   */
  norm?: Normalisation;
  /**
   * What the dataset's class count is checked against, for the error: a model file (`gdp-model eval`), which then
   * fails with SHAPE_MISMATCH naming it. Unset: the config's `model.num_class` (BAD_CONFIG).
   */
  classesOf?: string;
  /**
   * A folder run's listing of `data.dir` already read (`ImageFolderDataset.listing` of an earlier load of the same
   * folder): the datasets are built from it without reading the folder again. Other data types ignore it.
   */
  listing?: FolderListing;
}

/**
 * `data.type: "folder"`: image size and channels from the config, else the model's input; the normalisation from
 * `data.mean` / `data.std`, else computed from the training images. Throws BAD_CONFIG for a non-square model
 * input without `data.image_size`, or a mean with another channel count.
 */
function folderSetup(config: Config): FolderSetup {
  const d = config.data;
  // Both set (gdp-model eval sets them from the model file): the config's model need not be built.
  const [h, w, c] =
    d.image_size !== undefined && d.channels !== undefined
      ? [d.image_size, d.image_size, d.channels]
      : modelInputShape(config.model.name, modelOptions(config.model));
  if (d.image_size === undefined && h !== w)
    throw new GdpError('BAD_CONFIG', `data.image_size: '${config.model.name}' takes ${h}x${w} images; folder images are square, set data.image_size`);
  const channels = d.channels ?? (c === 1 ? 1 : 3);
  if (d.mean && d.mean.length !== channels)
    throw new GdpError('BAD_CONFIG', `data.mean: ${d.mean.length} value(s) for ${channels}-channel images (data.channels or the model's input)`);
  const spec = folderImageSpec(d.image_size ?? h, channels);
  return { name: 'folder', spec, norm: d.mean && d.std ? { mean: d.mean, std: d.std } : undefined };
}

/**
 * The train and test sets named by `config.data.type`. CIFAR, ImageNet and image folders decode and augment on a
 * pool of `data.num_workers` threads (at most one per core) shared by both sets; call `close()` when done. With
 * `data.test_subset`, the test set is that many samples in class proportion (`stratifiedSubset`). Throws BAD_CONFIG
 * when the data's class count is not `model.num_class` (SHAPE_MISMATCH naming `opts.classesOf` when given), and the
 * loaders' errors (BAD_DATA, FILE_NOT_FOUND...).
 */
export async function loadDataset(config: Config, opts: LoadDatasetOptions = {}): Promise<DatasetPair> {
  const type = config.data.type;
  let pair: DatasetPair;
  const norm = opts.norm;
  if (norm && norm.mean.length !== (type === 'mnist' ? 1 : type === 'folder' ? folderSetup(config).spec.channels : 3))
    throw new GdpError('BAD_CONFIG', `normalisation of ${norm.mean.length} channel(s) for ${type} images`);
  if (type === 'mnist') {
    pair = loadMnist(norm);
  } else {
    const dir = opts.dataDir ?? config.data.dir;
    if (!dir) throw new GdpError('BAD_CONFIG', `data.dir: ${type} needs a dataset folder (set data.dir in the config or pass --data-dir)`);
    const pool = new DecodePool(opts.numWorkers ?? config.data.num_workers);
    try {
      if (type === 'imagenet') pair = loadImageFolders(dir, pool, norm);
      else if (type === 'folder') {
        const setup = norm ? { ...folderSetup(config), norm } : folderSetup(config);
        pair = opts.listing ? folderPair(opts.listing, pool, setup) : loadFolderPair(dir, pool, setup);
      } else pair = loadCifar(type, dir, pool, norm);
    } catch (err) {
      await pool.close();
      throw err;
    }
    pair.close = () => pool.close();
  }
  if (pair.train.numClasses !== config.model.num_class) {
    await pair.close?.();
    const has = `${type} has ${pair.train.numClasses} classes`;
    if (opts.classesOf) throw new GdpError('SHAPE_MISMATCH', `${opts.classesOf} has ${config.model.num_class} classes, but ${has}`);
    throw new GdpError('BAD_CONFIG', `model.num_class: ${config.model.num_class}, but ${has}`);
  }
  const subset = config.data.test_subset;
  if (subset !== undefined && subset < pair.test.size) pair = { ...pair, test: new SubsetDataset(pair.test, subset) };
  return pair;
}

/**
 * The normalisation a run of `config` trains with when it is known without reading images: `data.mean`/`data.std`,
 * the paper's constants (CIFAR, ImageNet), or MNIST's own (computed from the bundled digits). Undefined for a folder
 * run without `data.mean`/`data.std`, computed from its images (`resolveNormalisation`). Per channel, pixels in [0, 1].
 */
export function configNormalisation(config: Config): Normalisation | undefined {
  const d = config.data;
  switch (d.type) {
    case 'mnist':
      return mnistNormalisation();
    case 'cifar10':
    case 'cifar100':
      return cifarNormalisation(d.type);
    case 'imagenet':
      return IMAGENET_NORM;
    case 'folder':
      return d.mean && d.std ? { mean: d.mean, std: d.std } : undefined;
  }
}

/** Whether a run of `config` computes its normalisation from its training images: a folder run without `data.mean`/`data.std`. */
export function computesNormalisation(config: Config): boolean {
  return config.data.type === 'folder' && !(config.data.mean && config.data.std);
}

export interface ResolvedNormalisation {
  norm: Normalisation;
  /** Where it comes from, for messages: `data.mean/data.std`, `the cifar10 constants`, `computed from N training images of DIR`. */
  source: string;
}

/** `configNormalisation` with its source, for messages; undefined when it is computed from the images. */
function knownNormalisation(config: Config): ResolvedNormalisation | undefined {
  const d = config.data;
  const norm = configNormalisation(config);
  if (!norm) return undefined;
  return { norm, source: d.type === 'folder' ? 'data.mean/data.std' : d.type === 'mnist' ? "MNIST's training digits" : `the ${d.type} constants` };
}

export interface LoadRunDataOptions {
  /** `--data-dir`: overrides `data.dir`. */
  dataDir?: string;
  /**
   * Told the normalisation as soon as it is decided: before any data is read when it is known, else once computed,
   * before the pair is built again with it.
   */
  decided?: (normalisation: ResolvedNormalisation) => void;
}

export interface RunData {
  /**
   * The train set and the full test set (`data.test_subset` not applied), closed: sizes, shapes, labels and
   * `dataFingerprint`. A computed normalisation is built in as given, as the workers build theirs once it is in
   * the config (`data.mean`/`data.std`), so that the fingerprints agree.
   */
  pair: DatasetPair;
  normalisation: ResolvedNormalisation;
}

/**
 * A run's data as its start reads it, each part once: the dataset loaded (a folder listed once), the training
 * images' first bytes checked (`Dataset.checkFiles`; the test set's are the caller's to check), and the
 * normalisation decided from that same copy: `configNormalisation`, else (a folder run without
 * `data.mean`/`data.std`) computed from the training images after their header check (decoded on
 * `data.num_workers` threads), and the pair built again from the same listing with it as given. Decodes nothing
 * when the normalisation is known. `opts.decided` is told it as soon as it is decided.
 * @throws GdpError loadDataset's errors; BAD_DATA naming a training file that is no image or does not decode, or a
 * channel of one value in every image.
 */
export async function loadRunData(config: Config, opts: LoadRunDataOptions = {}): Promise<RunData> {
  const d = config.data;
  // Checked against the full test set: the caller takes data.test_subset as loadDataset does.
  const full = { ...config, data: { ...d, test_subset: undefined } };
  const known = knownNormalisation(config);
  if (known) opts.decided?.(known);
  const first = await loadDataset(full, { dataDir: opts.dataDir, numWorkers: known ? 0 : undefined });
  try {
    // The cheap header check first, so that a file that is no image is named as such rather than as a failed decode.
    first.train.checkFiles?.();
    if (known) return { pair: first, normalisation: known };
    const train = first.train as ImageFolderDataset;
    const norm = await train.normalisation();
    const normalisation = { norm, source: `computed from the training images of ${opts.dataDir ?? d.dir}` };
    opts.decided?.(normalisation);
    const pair = await loadDataset(full, { dataDir: opts.dataDir, numWorkers: 0, norm, listing: train.listing });
    await pair.close?.();
    return { pair, normalisation };
  } finally {
    await first.close?.();
  }
}

/**
 * The normalisation of a run of `config`, decided once: `configNormalisation`, else (a folder run without
 * `data.mean`/`data.std`) computed from the training images by `loadRunData`. Per channel, pixels in [0, 1].
 * @throws GdpError loadRunData's errors.
 */
export async function resolveNormalisation(config: Config, opts: Pick<LoadDatasetOptions, 'dataDir'> = {}): Promise<ResolvedNormalisation> {
  return knownNormalisation(config) ?? (await loadRunData(config, opts)).normalisation;
}
