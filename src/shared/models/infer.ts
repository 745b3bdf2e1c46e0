import { concatFloat32 } from '../arrays.js';
import * as tf from '@tensorflow/tfjs-core';
import { tensorOps, type Module } from '../nn/module.js';

/** Eval-mode logits for NHWC images, in chunks of `batch` so large inputs stay within memory. */
export function predictLogits(model: Module, x: Float32Array, shape: readonly [number, number, number, number], batch = 64): Float32Array {
  model.eval();
  const [n, h, w, c] = shape;
  const per = h * w * c;
  const parts: Float32Array[] = [];
  for (let i = 0; i < n; i += batch) {
    const m = Math.min(batch, n - i);
    const y = tf.tidy(() => model.apply(tf.tensor4d(x.subarray(i * per, (i + m) * per), [m, h, w, c]), tensorOps));
    parts.push(y.dataSync() as Float32Array);
    y.dispose();
  }
  return concatFloat32(parts);
}
