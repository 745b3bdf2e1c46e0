import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GdpError } from '../errors.js';
import { checkedIndices, type Batch, type Dataset, type DatasetPair } from './dataset.js';
import type { DecodePool } from './decode_pool.js';
import { CIFAR10_NORM, CIFAR100_NORM, CIFAR_IMAGE_BYTES, CIFAR_SIDE, type Normalisation } from './transforms.js';

export type CifarVariant = 'cifar10' | 'cifar100';

/** The binary distributions (cifar-10-binary.tar.gz, cifar-100-binary.tar.gz) as extracted. */
interface CifarLayout {
  folder: string;
  train: string[];
  test: string[];
  /** Label bytes before the image; the last one is the class (CIFAR-100: coarse, then fine). */
  labelBytes: number;
  numClasses: number;
  /** Upper bounds of every label byte, in record order. */
  labelRanges: number[];
  norm: Normalisation;
}

const LAYOUTS: Record<CifarVariant, CifarLayout> = {
  cifar10: {
    folder: 'cifar-10-batches-bin',
    train: [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`),
    test: ['test_batch.bin'],
    labelBytes: 1,
    numClasses: 10,
    labelRanges: [10],
    norm: CIFAR10_NORM,
  },
  cifar100: {
    folder: 'cifar-100-binary',
    train: ['train.bin'],
    test: ['test.bin'],
    labelBytes: 2,
    numClasses: 100,
    labelRanges: [20, 100],
    norm: CIFAR100_NORM,
  },
};

function describeLayout(v: CifarVariant): string {
  const l = LAYOUTS[v];
  const labels = l.labelBytes === 1 ? '1 label byte (0-9)' : '2 label bytes (coarse 0-19, fine 0-99)';
  return `${l.folder}/{${[...l.train, ...l.test].join(',')}}, records of ${labels} + 3072 image bytes (R, G, B planes of 32x32)`;
}

/** The folder holding the batch files: `dir` itself or its `cifar-10-batches-bin` / `cifar-100-binary` child. */
export function resolveCifarFolder(variant: CifarVariant, dir: string): string {
  const l = LAYOUTS[variant];
  for (const candidate of [join(dir, l.folder), dir]) if (existsSync(join(candidate, l.train[0]))) return candidate;
  throw new GdpError('BAD_DATA', `${variant}: no ${l.train[0]} in ${dir} or ${join(dir, l.folder)}; expected ${describeLayout(variant)}`);
}

interface CifarSplit {
  planes: Uint8Array;
  labels: Int32Array;
}

function readSplit(variant: CifarVariant, folder: string, files: string[]): CifarSplit {
  const l = LAYOUTS[variant];
  const recordBytes = l.labelBytes + CIFAR_IMAGE_BYTES;
  const contents = files.map((f) => {
    const path = join(folder, f);
    let bytes: Buffer;
    try {
      bytes = readFileSync(path);
    } catch (err) {
      throw new GdpError(
        'BAD_DATA',
        `${variant}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); expected ${describeLayout(variant)}`,
      );
    }
    if (bytes.length === 0 || bytes.length % recordBytes !== 0) {
      throw new GdpError(
        'BAD_DATA',
        `${variant}: ${path} has ${bytes.length} bytes, not a positive multiple of the ${recordBytes}-byte record; expected ${describeLayout(variant)}`,
      );
    }
    return { path, bytes };
  });
  const total = contents.reduce((s, c) => s + c.bytes.length / recordBytes, 0);
  const planes = new Uint8Array(total * CIFAR_IMAGE_BYTES);
  const labels = new Int32Array(total);
  let k = 0;
  for (const { path, bytes } of contents) {
    for (let r = 0; r < bytes.length; r += recordBytes, k++) {
      for (let b = 0; b < l.labelBytes; b++) {
        if (bytes[r + b] >= l.labelRanges[b]) {
          throw new GdpError(
            'BAD_DATA',
            `${variant}: ${path} record ${r / recordBytes} has label byte ${b} = ${bytes[r + b]}, outside [0, ${l.labelRanges[b]}); expected ${describeLayout(variant)}`,
          );
        }
      }
      labels[k] = bytes[r + l.labelBytes - 1];
      planes.set(bytes.subarray(r + l.labelBytes, r + recordBytes), k * CIFAR_IMAGE_BYTES);
    }
  }
  return { planes, labels };
}

/** CIFAR images held as their raw bytes; `load` gathers the requested records and decodes them in the pool. */
export class CifarDataset implements Dataset {
  readonly shape: [number, number, number] = [CIFAR_SIDE, CIFAR_SIDE, 3];
  readonly size: number;
  readonly labels: Int32Array;
  private readonly planes: Uint8Array;

  constructor(
    readonly name: string,
    split: CifarSplit,
    readonly numClasses: number,
    private readonly norm: Normalisation,
    private readonly pool: DecodePool,
  ) {
    this.planes = split.planes;
    this.labels = split.labels;
    this.size = split.labels.length;
  }

  async load(indices: ArrayLike<number>, opts: { augment: boolean; seed: number }): Promise<Batch> {
    const n = indices.length;
    const { idx, y } = checkedIndices(this.name, this.labels, indices);
    const x = await this.pool.decode(n, (start, end) => {
      const planes = new Uint8Array((end - start) * CIFAR_IMAGE_BYTES);
      for (let i = start; i < end; i++) {
        const k = idx[i];
        planes.set(this.planes.subarray(k * CIFAR_IMAGE_BYTES, (k + 1) * CIFAR_IMAGE_BYTES), (i - start) * CIFAR_IMAGE_BYTES);
      }
      return { kind: 'cifar', planes, indices: idx.slice(start, end), augment: opts.augment, seed: opts.seed, norm: this.norm };
    });
    return { x, y, n };
  }
}

/** The paper's normalisation constants of CIFAR-10 or CIFAR-100. */
export function cifarNormalisation(variant: CifarVariant): Normalisation {
  return LAYOUTS[variant].norm;
}

/**
 * Reads CIFAR-10 or CIFAR-100 (binary version) from `dir`, normalised by `norm` (3 channels; default: the paper's
 * constants); the decoding runs on `pool`.
 */
export function loadCifar(variant: CifarVariant, dir: string, pool: DecodePool, norm?: Normalisation): DatasetPair {
  const l = LAYOUTS[variant];
  const folder = resolveCifarFolder(variant, dir);
  const n = norm ?? l.norm;
  return {
    train: new CifarDataset(`${variant}/train`, readSplit(variant, folder, l.train), l.numClasses, n, pool),
    test: new CifarDataset(`${variant}/test`, readSplit(variant, folder, l.test), l.numClasses, n, pool),
  };
}
