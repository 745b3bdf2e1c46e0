import type { Config } from '../config/schema.js';
import { GdpError } from '../errors.js';
import type { DatasetPair } from './dataset.js';
import { loadMnist } from './mnist.js';

/**
 * The train/test datasets a config names, loaded from this machine's own copy (every worker loads its data
 * itself; only sample indices travel). `dataDir` is the --data-dir flag, which wins over `data.dir`.
 */
export async function loadDataset(config: Config, dataDir?: string): Promise<DatasetPair> {
  void dataDir;
  switch (config.data.type) {
    case 'mnist':
      return loadMnist();
    default:
      throw new GdpError('DATASET_UNAVAILABLE', `data.type '${config.data.type}' is not available in this build (only 'mnist' is)`);
  }
}
