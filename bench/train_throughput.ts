import * as tf from '@tensorflow/tfjs-core';
import { archSpec, buildModel } from '../src/shared/models/registry.js';
import { Replica } from '../src/shared/train/replica.js';
import { Rng } from '../src/shared/rng.js';

export interface TrainThroughput {
  arch: string;
  batch: number;
  /** Floats in one full gradient (what a worker uploads per step). */
  gradElems: number;
  imgPerSec: number;
  msPerStep: number;
  /** Median process cpu time of a step (less disturbed than wall time by other processes on the cores). */
  cpuMsPerStep: number;
  tensorsBefore: number;
  tensorsAfter: number;
}

/**
 * Images/s of one replica doing full training steps (forward, backward, gradient read-back, SGD update) on
 * synthetic data: what one worker delivers before any communication.
 */
export function trainThroughput(arch: string, batch: number, steps: number): TrainThroughput {
  const spec = archSpec(arch);
  const model = buildModel(arch, { seed: 1 });
  const replica = new Replica(model, spec.inputShape);
  const layout = replica.layout('all');
  const rng = new Rng(2);
  const [h, w, c] = spec.inputShape;
  const x = new Float32Array(batch * h * w * c).map(() => rng.normal());
  const y = Int32Array.from({ length: batch }, () => rng.int(spec.defaultClasses));
  const step = () => {
    const { grad } = replica.gradients({ x, y, n: batch }, layout);
    for (let i = 0; i < grad.length; i++) grad[i] /= batch;
    replica.applyGradient(layout, grad, { lr: 0.01, momentum: 0.9, weightDecay: 5e-4, nesterov: false });
  };
  step(); // warm-up: kernel set-up, allocations
  const tensorsBefore = tf.memory().numTensors;
  const t0 = performance.now();
  const cpuMs: number[] = [];
  for (let i = 0; i < steps; i++) {
    const c0 = process.cpuUsage();
    step();
    const c = process.cpuUsage(c0);
    cpuMs.push((c.user + c.system) / 1000);
  }
  const ms = (performance.now() - t0) / steps;
  const cpuMsPerStep = [...cpuMs].sort((a, b) => a - b)[Math.floor(steps / 2)];
  const tensorsAfter = tf.memory().numTensors;
  model.dispose();
  return { arch, batch, gradElems: layout.size, imgPerSec: (batch * 1000) / ms, msPerStep: ms, cpuMsPerStep, tensorsBefore, tensorsAfter };
}
