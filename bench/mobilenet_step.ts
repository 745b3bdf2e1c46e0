import * as tf from '@tensorflow/tfjs-core';
import { configModel } from '../src/shared/models/registry.js';
import { Rng } from '../src/shared/rng.js';
import { Replica } from '../src/shared/train/replica.js';

export interface MobileNetStep {
  imgPerSec: number;
  msPerStep: number;
  /** Share (0..1) of one profiled step's kernel time spent in the depthwise kernels (forward and both gradients). */
  depthwiseShare: number;
}

const DEPTHWISE = ['DepthwiseConv2dNative', 'DepthwiseConv2dNativeBackpropFilter', 'DepthwiseConv2dNativeBackpropInput'];

/**
 * One replica's training steps of the built-in `mobilenet_v2` (width 0.35, 96x96x3 input, 10 classes) on synthetic
 * data, as a worker runs them (forward, backward, gradient read-back, SGD update): images/s over `steps` timed steps
 * after a warm-up, and the depthwise kernels' share of a profiled step's kernel time (tf.profile, wall ms per kernel).
 */
export async function mobileNetStep(batch: number, steps: number): Promise<MobileNetStep> {
  const { model, inputShape } = configModel({ name: 'mobilenet_v2', num_class: 10, width_mult: 0.35, input_size: 96 }, 1);
  const replica = new Replica(model, inputShape);
  const layout = replica.layout('all');
  const rng = new Rng(3);
  const x = new Float32Array(batch * inputShape[0] * inputShape[1] * inputShape[2]).map(() => rng.normal());
  const y = Int32Array.from({ length: batch }, () => rng.int(10));
  const step = () => {
    const { grad } = replica.gradients({ x, y, n: batch }, layout);
    for (let i = 0; i < grad.length; i++) grad[i] /= batch;
    replica.applyGradient(layout, grad, { lr: 0.01, momentum: 0.9, weightDecay: 4e-5, nesterov: false });
  };
  try {
    step();
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) step();
    const ms = (performance.now() - t0) / steps;
    const profile = await tf.profile(step);
    const kernels = profile.kernels.filter((k) => tf.getKernel(k.name, tf.getBackend()) != null);
    const total = kernels.reduce((a, k) => a + (k.kernelTimeMs as number), 0);
    const dw = kernels.filter((k) => DEPTHWISE.includes(k.name)).reduce((a, k) => a + (k.kernelTimeMs as number), 0);
    return { imgPerSec: (batch * 1000) / ms, msPerStep: ms, depthwiseShare: total > 0 ? dw / total : 0 };
  } finally {
    model.dispose();
  }
}
