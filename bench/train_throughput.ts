import * as tf from '@tensorflow/tfjs-core';
import { trainingStep } from './train_step.js';

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
  const { model, layout, step } = trainingStep(arch, batch);
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
