import type { DatasetPair } from './dataset.js';
import type { DecodePool } from './decode_pool.js';
import { folderImageSpec, loadFolderPair, type FolderSetup } from './image_folder.js';
import { IMAGENET_NORM, type Normalisation } from './transforms.js';

/**
 * ImageNet is an image-folder dataset at 224x224 RGB with the paper's normalisation constants: training takes
 * torchvision's RandomResizedCrop(224) and flip, evaluation Resize(256) and CenterCrop(224).
 */
export const IMAGENET: FolderSetup = { name: 'imagenet', spec: folderImageSpec(224, 3), norm: IMAGENET_NORM };

/**
 * ImageNet as torchvision's ImageFolder sees it: `dir/train/<wnid>/*.JPEG` and `dir/val/<wnid>/*.JPEG`, decoded
 * on `pool`, normalised by `norm` (default: the paper's constants). Throws BAD_DATA as `loadFolderPair` does.
 */
export function loadImageFolders(dir: string, pool: DecodePool, norm?: Normalisation): DatasetPair {
  return loadFolderPair(dir, pool, norm ? { ...IMAGENET, norm } : IMAGENET);
}
