import { reduceRange } from './reduce.js';

export interface ReduceTask {
  grads: SharedArrayBuffer[];
  out: SharedArrayBuffer;
  start: number;
  end: number;
  count: number;
}

/** A piscina task: one range of the gradient average, on shared memory (nothing is copied to the thread). */
export default function reduceTask(t: ReduceTask): void {
  reduceRange(
    t.grads.map((b) => new Float32Array(b)),
    new Float32Array(t.out),
    t.start,
    t.end,
    t.count,
  );
}
