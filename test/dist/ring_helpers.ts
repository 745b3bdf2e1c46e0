import type { ConfigInput } from '../helpers.js';
import type { Config } from '../../src/shared/config/schema.js';
import { Rng } from '../../src/shared/rng.js';
import { tinyConfig } from './helpers.js';

/** The tiny test config with this all-reduce (checksums after every step, buckets of ~26 floats). */
export function ringConfig(allreduce: 'star' | 'ring' | 'auto', extra: Partial<NonNullable<ConfigInput['dist']>> = {}): Config {
  return tinyConfig({ dist: { checksum_every: 1, bucket_mib: 0.0001, heartbeat_ms: 200, allreduce, ...extra } });
}

/** `count` global batches of `batch` samples, a fixed shuffle of the tiny training set. */
export function batches(size: number, batch: number, count: number, seed = 11): Int32Array[] {
  const order = Int32Array.from({ length: size }, (_, i) => i);
  new Rng(seed).shuffle(order);
  return Array.from({ length: count }, (_, s) => order.slice((s * batch) % (size - batch), ((s * batch) % (size - batch)) + batch));
}

