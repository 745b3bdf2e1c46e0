import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/shared/backend.js';
import { parseConfig } from '../../src/shared/config/load.js';
import type { ConfigInput } from '../helpers.js';
import type { Config } from '../../src/shared/config/schema.js';
import type { Batch, Dataset, DatasetPair } from '../../src/shared/data/dataset.js';
import { loadMnist } from '../../src/shared/data/mnist.js';
import { ARCHITECTURES } from '../../src/shared/models/registry.js';
import { BatchNorm2d, Conv2d, GlobalAvgPool, Linear } from '../../src/shared/nn/layers.js';
import { Module, type Ops } from '../../src/shared/nn/module.js';
import type { Rng } from '../../src/shared/rng.js';

export const TINY = 'test.tiny8';

/** conv-bn-relu x2, global pool, linear: the layers of the CIFAR ResNets on 8x8 digits, fast on the cpu backend. */
export class TinyNet extends Module {
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm2d;
  readonly pool = new GlobalAvgPool();
  readonly linear: Linear;
  constructor(classes: number, rng: Rng) {
    super();
    this.conv1 = this.addChild('conv1', new Conv2d(1, 6, 3, rng, { padding: 1 }));
    this.bn1 = this.addChild('bn1', new BatchNorm2d(6));
    this.conv2 = this.addChild('conv2', new Conv2d(6, 6, 3, rng, { padding: 1 }));
    this.bn2 = this.addChild('bn2', new BatchNorm2d(6));
    this.addChild('pool', this.pool);
    this.linear = this.addChild('linear', new Linear(6, classes, rng));
  }
  apply<T>(x: T, F: Ops<T>): T {
    let y = F.relu(F.layer(this.bn1, F.layer(this.conv1, x)));
    y = F.relu(F.layer(this.bn2, F.layer(this.conv2, y)));
    return F.layer(this.linear, F.flatten(F.layer(this.pool, y)));
  }
}

ARCHITECTURES[TINY] = { inputShape: [8, 8, 1], defaultClasses: 10, build: (c, rng) => new TinyNet(c, rng) };

class SmallDataset implements Dataset {
  readonly size: number;
  readonly shape: [number, number, number] = [8, 8, 1];
  readonly numClasses = 10;
  constructor(
    readonly name: string,
    private readonly x: Float32Array,
    readonly labels: Int32Array,
  ) {
    this.size = labels.length;
  }
  async load(indices: ArrayLike<number>): Promise<Batch> {
    const n = indices.length;
    const x = new Float32Array(n * 64);
    const y = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      x.set(this.x.subarray(indices[i] * 64, indices[i] * 64 + 64), i * 64);
      y[i] = this.labels[indices[i]];
    }
    return { x, y, n };
  }
}

/** The centre 24x24 of a digit averaged over 3x3 cells: 8x8. */
async function shrink(d: Dataset, n: number, name: string): Promise<SmallDataset> {
  const b = await d.load(Array.from({ length: n }, (_, i) => i * Math.floor(d.size / n)), { augment: false, seed: 0 });
  const x = new Float32Array(n * 64);
  for (let k = 0; k < n; k++) {
    for (let r = 0; r < 8; r++) {
      for (let c = 0; c < 8; c++) {
        let s = 0;
        for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) s += b.x[k * 784 + (2 + r * 3 + i) * 28 + (2 + c * 3 + j)];
        x[k * 64 + r * 8 + c] = s / 9;
      }
    }
  }
  return new SmallDataset(name, x, b.y);
}

let data: DatasetPair | undefined;
export async function tinyData(): Promise<DatasetPair> {
  if (!data) {
    const m = loadMnist();
    data = { train: await shrink(m.train, 256, 'tiny/train'), test: await shrink(m.test, 64, 'tiny/test') };
  }
  return data;
}

/** The tiny data with one NaN pixel in every training batch: a machine whose copy or decoder is broken. */
export async function nanData(): Promise<DatasetPair> {
  const d = await tinyData();
  const train: Dataset = Object.assign(Object.create(d.train) as Dataset, {
    load: async (indices: ArrayLike<number>, o: { augment: boolean; seed: number }) => {
      const b = await d.train.load(indices, o);
      b.x[0] = NaN;
      return b;
    },
  });
  return { train, test: d.test };
}

export async function setup(): Promise<void> {
  await initBackend('cpu');
}

export function tinyConfig(over: Partial<Record<keyof ConfigInput, unknown>> = {}): Config {
  return parseConfig({
    base: { task_name: 'tiny', seed: 3 },
    model: { name: TINY, num_class: 10 },
    train: { max_epoch: 1, steplr: [[1, 0.1]], momentum: 0.9, weight_decay: 5e-4 },
    data: { type: 'mnist', batch_size: 8, test_batch_size: 16 },
    loss: { criterion: 'softmax' },
    // ~26 floats per bucket: every vector travels in several buckets.
    dist: { checksum_every: 1, bucket_mib: 0.0001, heartbeat_ms: 200 },
    ...over,
  });
}

export const noLog = (): void => {};

export { maxAbsDiff } from '../helpers.js';

export function numTensors(): number {
  return tf.memory().numTensors;
}

import type { Coordinator } from '../../src/coordinator/cluster.js';
import type { Transport } from '../../src/shared/protocol/transport.js';
import { memoryPair } from '../../src/shared/protocol/transport.js';
import type { RingListenSettings } from '../../src/worker/ring_member.js';
import { WorkerSession } from '../../src/worker/session.js';

/** Connects one in-process worker to `coordinator`, optionally through a transport wrapper. */
export function connectWorker(
  coordinator: Coordinator,
  id: string,
  opts: {
    wrap?: (t: Transport) => Transport;
    protocol?: number;
    log?: (l: string) => void;
    loadData?: (config: Config) => Promise<DatasetPair>;
    memoryLimit?: number;
    ring?: RingListenSettings;
  } = {},
): { session: WorkerSession; done: Promise<unknown> } {
  const [c, w] = memoryPair(['memory:coordinator', `memory:${id}`]);
  coordinator.accept(c);
  const session = new WorkerSession(opts.wrap ? opts.wrap(w) : w, {
    workerId: id,
    backend: 'cpu',
    gpu: null,
    host: 'test',
    pid: process.pid,
    loadData: opts.loadData ?? tinyData,
    protocol: opts.protocol,
    memoryLimit: opts.memoryLimit,
    log: opts.log ?? noLog,
    ring: opts.ring,
  });
  // Settles (never rejects) with the session's end: undefined or the error.
  const done = session.run().then(
    () => undefined,
    (e: unknown) => e,
  );
  return { session, done };
}
