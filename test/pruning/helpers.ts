import * as tf from '@tensorflow/tfjs-core';
import { BatchNorm2d } from '../../src/shared/nn/layers.js';
import type { Module } from '../../src/shared/nn/module.js';
import type { Rng } from '../../src/shared/rng.js';
import { useBackend } from '../helpers.js';

export async function cpu(): Promise<void> {
  await useBackend('cpu');
}

/** Non-trivial BN statistics and affine parameters, so folding and cutting are exercised on real values. */
export function randomiseBatchNorms(model: Module, rng: Rng): void {
  for (const [, m] of model.namedModules()) {
    if (!(m instanceof BatchNorm2d)) continue;
    const c = m.channels;
    const vec = (f: () => number) => tf.tensor1d(Float32Array.from({ length: c }, f));
    m.weight.set(vec(() => 0.5 + rng.next()));
    m.bias.set(vec(() => rng.normal() * 0.5));
    m.runningMean.set(vec(() => rng.normal() * 0.3));
    m.runningVar.set(vec(() => 0.5 + rng.next() * 1.5));
  }
}

export function randomImages(n: number, shape: readonly number[], rng: Rng): tf.Tensor4D {
  const size = n * shape.reduce((a, b) => a * b, 1);
  return tf.tensor4d(Float32Array.from({ length: size }, () => rng.normal()), [n, shape[0], shape[1], shape[2]]);
}

/** Eval-mode logits as a plain array. */
export function evalLogits(model: Module, x: tf.Tensor): Float32Array {
  model.eval();
  const y = model.run(x);
  const out = y.dataSync() as Float32Array;
  y.dispose();
  return out;
}

export { maxAbsDiff } from '../helpers.js';
