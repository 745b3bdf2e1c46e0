/**
 * Test helpers for the wasm training kernels. No side effects on import
 * (node --test also runs this file, as it lives under test/).
 */
import assert from 'node:assert/strict';

import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
// tfjs-core's node bundle registers no gradients; the umbrella package's
// bundle registers all of them (against the same tfjs-core instance).
import '@tensorflow/tfjs';

import { registerWasmTrainingKernels } from '../../src/shared/kernels/wasm/register_all.js';

export { tf };

let wasmReady: Promise<void> | undefined;

/**
 * Selects the wasm backend with gdp's training kernels. One initialisation per process: node:test runs a file's
 * top-level `before` once per top-level suite, and a second `tf.setBackend('wasm')` while the first is still
 * initialising can resolve false.
 */
export function useWasm(): Promise<void> {
  wasmReady ??= (async () => {
    registerWasmTrainingKernels();
    assert.ok(await tf.setBackend('wasm'));
    await tf.ready();
  })();
  return wasmReady;
}

/** Deterministic uniform(-1, 1) values (mulberry32). */
export function randomArray(size: number, seed: number): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(size);
  for (let i = 0; i < size; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  }
  return out;
}

export function size(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Runs `f` on `backend` with tensors built from the same arrays and returns
 * the outputs' values; restores the previous backend.
 */
export async function runOn(
  backend: string,
  arrays: Array<{ values: Float32Array; shape: number[] }>,
  f: (...xs: tf.Tensor[]) => tf.Tensor | tf.Tensor[],
): Promise<Float32Array[]> {
  const previous = tf.getBackend();
  await tf.setBackend(backend);
  try {
    return tf.tidy(() => {
      const xs = arrays.map((a) => tf.tensor(a.values, a.shape, 'float32'));
      const out = f(...xs);
      const outs = Array.isArray(out) ? out : [out];
      return outs.map((t) => t.dataSync() as Float32Array);
    });
  } finally {
    await tf.setBackend(previous);
  }
}

/** max |a - b| <= tol * (1 + max |b|), with a readable failure message. */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let maxDiff = 0;
  let maxRef = 0;
  let worst = -1;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    if (!(d <= maxDiff)) {
      // also catches NaN
      maxDiff = Number.isNaN(d) ? Infinity : d;
      worst = i;
    }
    maxRef = Math.max(maxRef, Math.abs(expected[i]));
  }
  assert.ok(maxDiff <= tol * (1 + maxRef), `${what}: max abs diff ${maxDiff} at ${worst} (got ${actual[worst]}, want ${expected[worst]}), max |ref| ${maxRef}`);
}

export type Pad = 'same' | 'valid' | [[0, 0], [number, number], [number, number], [0, 0]];

/** Forward conv in float64 (NHWC x, HWIO w), explicit top/left padding. */
export function conv2dF64(
  x: ArrayLike<number>,
  xShape: number[],
  w: ArrayLike<number>,
  wShape: number[],
  stride: number,
  padTop: number,
  padLeft: number,
  outH: number,
  outW: number,
): Float64Array {
  const [n, h, wd, ci] = xShape;
  const [kh, kw, , co] = wShape;
  const y = new Float64Array(n * outH * outW * co);
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < outH; i++) {
      for (let j = 0; j < outW; j++) {
        const yo = ((b * outH + i) * outW + j) * co;
        for (let p = 0; p < kh; p++) {
          const r = i * stride + p - padTop;
          if (r < 0 || r >= h) continue;
          for (let q = 0; q < kw; q++) {
            const c = j * stride + q - padLeft;
            if (c < 0 || c >= wd) continue;
            const xo = ((b * h + r) * wd + c) * ci;
            const wo = (p * kw + q) * ci * co;
            for (let k = 0; k < ci; k++) {
              const xv = x[xo + k];
              for (let o = 0; o < co; o++) {
                y[yo + o] += xv * w[wo + k * co + o];
              }
            }
          }
        }
      }
    }
  }
  return y;
}

export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/**
 * Central finite differences of `loss` (float64) w.r.t. the given indices of
 * `params` (modified in place and restored).
 */
export function finiteDiff(params: Float64Array, indices: number[], eps: number, loss: () => number): number[] {
  return indices.map((i) => {
    const v = params[i];
    params[i] = v + eps;
    const up = loss();
    params[i] = v - eps;
    const down = loss();
    params[i] = v;
    return (up - down) / (2 * eps);
  });
}

/** The wasm backend's count of live data ids. */
export function wasmDataIds(): number {
  return tf.findBackend('wasm')!.numDataIds();
}

/** Runs `once` to warm up, then three times more: neither tfjs' tensor count nor wasm's data ids may grow. */
export function assertNoLeak(once: () => void): void {
  once();
  const tensors = tf.memory().numTensors;
  const ids = wasmDataIds();
  for (let i = 0; i < 3; i++) once();
  assert.equal(tf.memory().numTensors, tensors, 'numTensors grew');
  assert.equal(wasmDataIds(), ids, 'wasm numDataIds grew');
}
