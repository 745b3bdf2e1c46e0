/**
 * Images per second of the data pipeline: CIFAR augmentation (pad, crop, flip, normalise) and ImageNet decode +
 * random resized crop, in the calling thread and on the piscina pool. Synthetic files in a temporary folder.
 *   node dist/bench/data.js [--threads N] [--cifar-batches N] [--jpegs N]
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { loadCifar } from '../src/shared/data/cifar.js';
import type { Dataset } from '../src/shared/data/dataset.js';
import { DecodePool } from '../src/shared/data/decode_pool.js';
import { loadImageFolders } from '../src/shared/data/imagenet.js';
import { Rng } from '../src/shared/rng.js';

const { values } = parseArgs({
  options: {
    threads: { type: 'string', default: String(availableParallelism()) },
    'cifar-batches': { type: 'string', default: '40' },
    jpegs: { type: 'string', default: '96' },
  },
});
const threads = Number(values.threads);
const cifarBatches = Number(values['cifar-batches']);
const jpegs = Number(values.jpegs);

/** Throughput, and the share of wall time the calling (training) thread itself was busy. */
async function imagesPerSecond(ds: Dataset, batch: number, batches: number, prefetch: boolean): Promise<{ rate: number; busy: number }> {
  const rng = new Rng(1);
  const indices = () => Array.from({ length: batch }, () => rng.int(ds.size));
  await ds.load(indices(), { augment: true, seed: 0 }); // warm-up: thread start, sharp load
  const t0 = performance.now();
  const elu0 = performance.eventLoopUtilization();
  // With prefetch the next batch is requested before the current one is awaited, as a training loop would.
  let next = prefetch ? ds.load(indices(), { augment: true, seed: 1 }) : undefined;
  for (let b = 0; b < batches; b++) {
    const current = next ?? ds.load(indices(), { augment: true, seed: b + 1 });
    next = prefetch && b + 1 < batches ? ds.load(indices(), { augment: true, seed: b + 2 }) : undefined;
    await current;
  }
  const busy = performance.eventLoopUtilization(elu0).utilization;
  return { rate: (batch * batches) / ((performance.now() - t0) / 1000), busy };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'gdp-bench-data-'));
  const pools = [new DecodePool(0), new DecodePool(threads)];
  try {
    const rng = new Rng(7);
    const cifar = join(dir, 'cifar-10-batches-bin');
    mkdirSync(cifar);
    const records = Buffer.alloc(2000 * 3073);
    for (let i = 0; i < records.length; i++) records[i] = i % 3073 === 0 ? rng.int(10) : rng.int(256);
    for (const f of ['data_batch_1', 'data_batch_2', 'data_batch_3', 'data_batch_4', 'data_batch_5', 'test_batch'])
      writeFileSync(join(cifar, `${f}.bin`), records);

    // ImageNet-like JPEGs: ~500x375, smooth noise so the decoder has real work.
    for (let i = 0; i < jpegs; i++) {
      const folder = join(dir, 'imagenet', i % 2 ? 'val' : 'train', `n0${i % 4}`);
      mkdirSync(folder, { recursive: true });
      const w = 400 + rng.int(200);
      const h = 300 + rng.int(150);
      const raw = Buffer.alloc(w * h * 3);
      for (let p = 0; p < raw.length; p++) raw[p] = (128 + 100 * Math.sin(p / 997 + i) + rng.int(40)) & 255;
      await sharp(raw, { raw: { width: w, height: h, channels: 3 } })
        .jpeg({ quality: 90 })
        .toFile(join(folder, `img_${i}.JPEG`));
    }
    for (const split of ['train', 'val']) for (let c = 0; c < 4; c++) mkdirSync(join(dir, 'imagenet', split, `n0${c}`), { recursive: true });

    console.log(`cores ${availableParallelism()}, pool threads ${pools[1].threads}`);
    for (const pool of pools) {
      const label = pool.threads === 0 ? 'in-thread' : `pool x${pool.threads}`;
      const c = loadCifar('cifar10', dir, pool);
      const cr = await imagesPerSecond(c.train, 128, cifarBatches, pool.threads > 0);
      console.log(
        `CIFAR augment (batch 128)      ${label.padEnd(10)} ${cr.rate.toFixed(0).padStart(7)} images/s, calling thread busy ${(cr.busy * 100).toFixed(0)}%`,
      );
      const im = loadImageFolders(join(dir, 'imagenet'), pool);
      const ir = await imagesPerSecond(im.train, 16, Math.max(2, Math.floor(jpegs / 8)), pool.threads > 0);
      console.log(
        `ImageNet decode+crop (batch 16) ${label.padEnd(9)} ${ir.rate.toFixed(1).padStart(7)} images/s, calling thread busy ${(ir.busy * 100).toFixed(0)}%`,
      );
    }
  } finally {
    for (const p of pools) await p.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
