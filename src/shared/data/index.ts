import type { Config } from '../config/schema.js';
import { GdpError } from '../errors.js';
import { modelInputShape, modelOptions } from '../models/registry.js';
import { loadCifar } from './cifar.js';
import type { DatasetPair } from './dataset.js';
import { DecodePool } from './decode_pool.js';
import { folderImageSpec, loadFolderPair, type FolderSetup } from './image_folder.js';
import { loadImageFolders } from './imagenet.js';
import { loadMnist } from './mnist.js';
import { SubsetDataset } from './subset.js';

export type { DatasetPair } from './dataset.js';
export { dataFingerprint } from './dataset.js';

export interface LoadDatasetOptions {
  /** `--data-dir`: overrides `data.dir`. */
  dataDir?: string;
  /** Overrides `data.num_workers` (0: decode in the calling thread). */
  numWorkers?: number;
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
 * `data.test_subset`, the test set is that many samples in class proportion (`stratifiedSubset`).
 */
export async function loadDataset(config: Config, opts: LoadDatasetOptions = {}): Promise<DatasetPair> {
  const type = config.data.type;
  let pair: DatasetPair;
  if (type === 'mnist') {
    pair = loadMnist();
  } else {
    const dir = opts.dataDir ?? config.data.dir;
    if (!dir) throw new GdpError('BAD_CONFIG', `data.dir: ${type} needs a dataset folder (set data.dir in the config or pass --data-dir)`);
    const pool = new DecodePool(opts.numWorkers ?? config.data.num_workers);
    try {
      if (type === 'imagenet') pair = loadImageFolders(dir, pool);
      else if (type === 'folder') pair = loadFolderPair(dir, pool, folderSetup(config));
      else pair = loadCifar(type, dir, pool);
    } catch (err) {
      await pool.close();
      throw err;
    }
    pair.close = () => pool.close();
  }
  if (pair.train.numClasses !== config.model.num_class) {
    await pair.close?.();
    throw new GdpError('BAD_CONFIG', `model.num_class: ${config.model.num_class}, but ${type} has ${pair.train.numClasses} classes`);
  }
  const subset = config.data.test_subset;
  if (subset !== undefined && subset < pair.test.size) pair = { ...pair, test: new SubsetDataset(pair.test, subset) };
  return pair;
}
