import * as tf from '@tensorflow/tfjs-core';
import { initBackend, type BackendChoice } from '../src/shared/backend.js';

/** Activates a backend once per test file. */
export async function useBackend(name: BackendChoice): Promise<void> {
  await initBackend(name);
  if (tf.getBackend() !== name) throw new Error(`wanted backend ${name}, active ${tf.getBackend()}`);
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

export function randomArray(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = (((s >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}
