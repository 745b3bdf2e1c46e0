import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { loadCifar } from '../../src/shared/data/cifar.js';
import { decodeThreads, DecodePool } from '../../src/shared/data/decode_pool.js';
import { loadImageFolders } from '../../src/shared/data/imagenet.js';
import { writeTinyCifar10 } from './cifar_files.js';
import { writeTinyImageFolder } from './image_files.js';

/** Bit-for-bit equality of two float arrays (NaN-safe, -0 distinct), reporting the first difference. */
function assertSameBits(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, `${what}: lengths`);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) assert.fail(`${what}: element ${i} differs: ${a[i]} vs ${b[i]}`);
}

describe('decode pool vs in-thread', () => {
  const inThread = new DecodePool(0);
  const pool = new DecodePool(2);
  const dirs: string[] = [];
  after(async () => {
    await pool.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('caps threads at the core count and keeps 0 as in-thread', () => {
    assert.equal(decodeThreads(0), 0);
    assert.equal(decodeThreads(1), 1);
    assert.ok(decodeThreads(1000) >= 1 && decodeThreads(1000) < 1000);
    assert.equal(inThread.threads, 0);
    assert.ok(pool.threads >= 1);
  });

  it('gives identical CIFAR batches, augmented or not, for shuffled indices with repeats', async () => {
    const t = writeTinyCifar10();
    dirs.push(t.parent);
    const ref = loadCifar('cifar10', t.parent, inThread);
    const pooled = loadCifar('cifar10', t.parent, pool);
    const indices = [5, 0, 3, 3, 1, 4, 2, 0, 5, 1, 2];
    for (const augment of [false, true])
      for (const seed of [0, 9]) {
        const [a, b] = await Promise.all([ref.train.load(indices, { augment, seed }), pooled.train.load(indices, { augment, seed })]);
        assertSameBits(a.x, b.x, `augment ${augment} seed ${seed}`);
        assert.deepEqual(a.y, b.y);
      }
  });

  it('gives identical ImageNet batches, and overlapping loads (prefetch) do not interfere', async () => {
    const dir = await writeTinyImageFolder();
    dirs.push(dir);
    const ref = loadImageFolders(dir, inThread);
    const pooled = loadImageFolders(dir, pool);
    const indices = [4, 0, 2, 1, 3];
    for (const augment of [true, false]) {
      const a = await ref.train.load(indices, { augment, seed: 21 });
      // Two batches in flight at once, as a caller prefetching the next batch does.
      const [b, c] = await Promise.all([
        pooled.train.load(indices, { augment, seed: 21 }),
        pooled.train.load(indices.slice().reverse(), { augment, seed: 21 }),
      ]);
      assertSameBits(a.x, b.x, `imagenet augment ${augment}`);
      const per = 224 * 224 * 3;
      assertSameBits(a.x.subarray(0, per), c.x.subarray(4 * per, 5 * per), 'reversed batch, sample 4');
    }
  });
});
