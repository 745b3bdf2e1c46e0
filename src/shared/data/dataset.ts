import { createHash } from 'node:crypto';
import { GdpError } from '../errors.js';
/** A batch in the model's layout: images NHWC, normalised, and integer labels. */
export interface Batch {
  x: Float32Array;
  y: Int32Array;
  n: number;
}

/**
 * A dataset is indexed by sample number, so that the coordinator can hand out shards as index lists and every
 * worker (each with its own copy of the data) builds the same images. Augmentation draws from a seed derived
 * from (seed, sample index), never from which worker happens to run the sample.
 */
export interface Dataset {
  readonly name: string;
  readonly size: number;
  /** One image, HWC. */
  readonly shape: [number, number, number];
  readonly numClasses: number;
  readonly labels: Int32Array;
  /**
   * What else two copies must agree on besides sizes, shape, classes and labels (image folders: the file names in
   * sample order and the transform settings); hashed into `dataFingerprint`.
   */
  readonly identity?: string;
  load(indices: ArrayLike<number>, opts: { augment: boolean; seed: number }): Promise<Batch>;
  /**
   * The start-up check of what `load` reads beyond the loader's own checks, when it is cheap enough for every start
   * (image folders: each file's first bytes, `checkImageHeaders`). Throws BAD_DATA naming the file.
   */
  checkFiles?(): void;
}

export interface DatasetPair {
  train: Dataset;
  test: Dataset;
  /** Stops the decode threads, if any (idle threads never hold the process open, but tests should not wait). */
  close?(): Promise<void>;
}

/** Mixes a seed and a sample index into an independent 32-bit seed (murmur3 finaliser). */
export function sampleSeed(seed: number, index: number): number {
  let h = (Math.imul(seed ^ 0x5bd1e995, 0x9e3779b1) + index) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * Checks that every index is a whole number in [0, size) and returns them as Int32Array with their labels. Indices
 * come from the network, so the dataset checks them before touching any memory; one out of range throws BAD_MESSAGE.
 */
export function checkedIndices(name: string, labels: Int32Array, indices: ArrayLike<number>): { idx: Int32Array; y: Int32Array } {
  const n = indices.length;
  const idx = new Int32Array(n);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const k = indices[i];
    if (!Number.isInteger(k) || k < 0 || k >= labels.length) {
      throw new GdpError('BAD_MESSAGE', `${name}: sample index ${k} is not a whole number in [0, ${labels.length})`);
    }
    idx[i] = k;
    y[i] = labels[k];
  }
  return { idx, y };
}

/**
 * What two machines must agree on to train together: sizes, image shape, classes, a digest of every label and of
 * each set's `identity`.
 * Workers load their own copy of the data; a different copy (another split, a truncated download) is refused when
 * the worker joins, not discovered hours later.
 */
export function dataFingerprint(pair: DatasetPair): string {
  const h = createHash('sha256');
  for (const d of [pair.train, pair.test]) {
    h.update(`${d.size}/${d.shape.join('x')}/${d.numClasses};`);
    h.update(new Uint8Array(d.labels.buffer, d.labels.byteOffset, d.labels.byteLength));
    if (d.identity !== undefined) h.update(`;${d.identity}`);
  }
  return `train ${pair.train.size}, test ${pair.test.size}, labels ${h.digest('hex').slice(0, 16)}`;
}
