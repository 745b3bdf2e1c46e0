import * as tf from '@tensorflow/tfjs-core';
import type { Module } from '../shared/nn/module.js';
import { Rng } from '../shared/rng.js';

export interface Latency {
  batch: number;
  /** Median wall time of one forward pass over the batch, warm-up excluded. */
  medianMs: number;
  perImageMs: number;
  runsMs: number[];
}

const median = (v: number[]): number => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** Eval-mode inference latency at one batch size: `warmup` untimed passes (kernel setup, allocation), then `runs` timed. */
export function measureLatency(model: Module, inputShape: readonly number[], batch: number, opts: { runs?: number; warmup?: number } = {}): Latency {
  const runs = opts.runs ?? 5;
  const warmup = opts.warmup ?? 1;
  model.eval();
  const rng = new Rng(batch);
  const size = inputShape.reduce((a, b) => a * b, batch);
  const x = tf.tensor(
    Float32Array.from({ length: size }, () => rng.normal()),
    [batch, ...inputShape],
  );
  const runsMs: number[] = [];
  try {
    for (let i = 0; i < warmup + runs; i++) {
      const t0 = performance.now();
      const y = model.run(x);
      y.dataSync(); // waits for the backend to finish
      y.dispose();
      if (i >= warmup) runsMs.push(performance.now() - t0);
    }
  } finally {
    x.dispose();
  }
  const medianMs = median(runsMs);
  return { batch, medianMs, perImageMs: medianMs / batch, runsMs };
}
