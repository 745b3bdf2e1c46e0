import * as tf from '@tensorflow/tfjs-core';

/** Backends whose tensors live in host memory: reading a few values per channel there costs no device sync. */
const HOST_BACKENDS = new Set(['cpu', 'wasm']);

/**
 * A BatchNorm running statistic after one batch, as PyTorch's `F.batch_norm` updates it: running * keep + batch * take
 * (keep = 1 - momentum; take = momentum, times n / (n - 1) for the variance), [C] float32. On host backends it is
 * computed in JS (runningStatsEma: the bits of the tensor ops, without their kernel launches and scalars per BN per
 * step); elsewhere (a GPU) with the tensor ops, which need no read-back to the host.
 */
export function updatedRunningStat(running: tf.Tensor, batch: tf.Tensor, keep: number, take: number): tf.Tensor {
  if (HOST_BACKENDS.has(tf.getBackend())) return tf.tensor(runningStatsEma(running.dataSync(), batch.dataSync(), keep, take), running.shape);
  return tf.tidy(() => tf.add(tf.mul(running, keep), tf.mul(batch, take)));
}

/**
 * running * keep + batch * take per element, as the tensor ops tf.add(tf.mul(running, keep), tf.mul(batch, take))
 * compute it in float32: the factors rounded to float32 (as tfjs makes a scalar of a number), then every product and
 * the sum rounded (a float32 product is exact in float64, and a float32 sum rounded through float64 is the float32
 * sum, so Math.fround of each is the float32 operation).
 */
export function runningStatsEma(running: ArrayLike<number>, batch: ArrayLike<number>, keep: number, take: number): Float32Array {
  const f = Math.fround;
  const k = f(keep);
  const t = f(take);
  const out = new Float32Array(running.length);
  for (let i = 0; i < out.length; i++) out[i] = f(f(running[i] * k) + f(batch[i] * t));
  return out;
}
