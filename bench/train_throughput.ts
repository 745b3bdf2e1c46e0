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
  /** Process cpu time per step (less disturbed than wall time by other processes on the cores). */
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
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) step();
  const ms = (performance.now() - t0) / steps;
  const cpu = process.cpuUsage(cpu0);
  const cpuMsPerStep = (cpu.user + cpu.system) / 1000 / steps;
  const tensorsAfter = tf.memory().numTensors;
  model.dispose();
  return { arch, batch, gradElems: layout.size, imgPerSec: (batch * 1000) / ms, msPerStep: ms, cpuMsPerStep, tensorsBefore, tensorsAfter };
}
