import { availableParallelism } from 'node:os';
import { Piscina } from 'piscina';
import { BucketAssembler, type BucketDtype } from '../shared/protocol/buckets.js';
import { reduceRange } from './reduce.js';
import type { ReduceTask } from './reduce_task.js';

const MAX_SPARE = 8;

export interface ReducerOptions {
  /** Threads for large reductions; 0 or 1 sums on the main thread. Default: cores - 1, at most 8. */
  threads?: number;
  /** Below this many values (gradient size x workers) the main thread sums: a thread round trip costs more. */
  minValues?: number;
}

/**
 * Averages worker gradients in a fixed order: a step asks for one `gradientSink` per worker, which its link feeds
 * with that worker's buckets as they arrive, then for the `average` of their results. Bucket-wise reduction plugs
 * in here: a sink that hands each completed bucket to the reduction (summed over workers in the same fixed order,
 * so the arithmetic is unchanged) instead of waiting for whole vectors; fp16 and other per-bucket encodings are the
 * sink's `dtype`.
 *
 * Large gradients (ResNet-50: 25.6 M values per worker, ~0.15 s per worker on one core here, plus the finite
 * checks) are split by range over a piscina pool working on SharedArrayBuffers, so that the coordinator's reduction
 * does not grow with the worker count on a many-core machine. Small models (ResNet-20: 0.27 M values) and machines
 * with fewer than 3 cores sum inline.
 */
export class GradientReducer {
  private readonly threads: number;
  private readonly minValues: number;
  private pool?: Piscina;
  /** Worker-gradient buffers returned by `average`, reused by `allocate` (fresh 100 MB arrays cost page faults). */
  private spare: Float32Array[] = [];

  constructor(opts: ReducerOptions = {}) {
    this.threads = opts.threads ?? Math.min(8, availableParallelism() - 1);
    this.minValues = opts.minValues ?? 8_000_000;
  }

  private usePool(size: number, workers: number): boolean {
    return this.threads >= 2 && size * workers >= this.minValues;
  }

  /**
   * Receives one worker's gradient of `size` values in buckets of `bucketElems`, each checked (order, length, dtype,
   * finite) on arrival, into a buffer from `allocate`. Its result goes to `average`.
   */
  gradientSink(what: string, size: number, bucketElems: number, workers: number, dtype: BucketDtype): BucketAssembler {
    return new BucketAssembler(what, size, bucketElems, (n) => this.allocate(n, workers), dtype);
  }

  /**
   * A buffer for one worker's gradient: shared memory when the pool will read it. Its contents are undefined (a
   * reused buffer): the bucket assembler overwrites every element.
   */
  allocate(size: number, workers: number): Float32Array {
    const shared = this.usePool(size, workers);
    const i = this.spare.findIndex((b) => b.length === size && b.buffer instanceof SharedArrayBuffer === shared);
    if (i >= 0) return this.spare.splice(i, 1)[0];
    return shared ? new Float32Array(new SharedArrayBuffer(size * 4)) : new Float32Array(size);
  }

  /**
   * The average of `grads`. The result array is reused by the next average of the same size (read it before then:
   * a step's average is applied and sent within the step); `grads` are taken back for reuse (the caller drops them).
   */
  async average(grads: readonly Float32Array[], count: number): Promise<Float32Array> {
    try {
      return await this.averageOf(grads, count);
    } finally {
      // Only buffers of the current size are worth keeping; a layout change (gates, pruning) drops the rest.
      const size = grads[0]?.length;
      this.spare = [...this.spare.filter((b) => b.length === size), ...grads.filter((g) => g.byteOffset === 0 && g.buffer.byteLength === g.byteLength)].slice(-MAX_SPARE);
    }
  }

  private out?: Float32Array;

  /** The result buffer, kept across steps: a fresh 100 MB array per step costs its page faults every time. */
  private output(size: number, shared: boolean): Float32Array {
    if (this.out?.length !== size || this.out.buffer instanceof SharedArrayBuffer !== shared) {
      this.out = shared ? new Float32Array(new SharedArrayBuffer(size * 4)) : new Float32Array(size);
    }
    return this.out;
  }

  private async averageOf(grads: readonly Float32Array[], count: number): Promise<Float32Array> {
    const size = grads[0]?.length ?? 0;
    const shared = grads.every((g) => g.buffer instanceof SharedArrayBuffer && g.byteOffset === 0 && g.length === size);
    if (!this.usePool(size, grads.length) || !shared) {
      const out = this.output(size, false);
      reduceRange(grads, out, 0, size, count);
      return out;
    }
    this.pool ??= new Piscina({ filename: new URL('./reduce_task.js', import.meta.url).href, maxThreads: this.threads, minThreads: 0, idleTimeout: 30000 });
    const outBuf = this.output(size, true).buffer as SharedArrayBuffer;
    const parts = this.threads;
    const tasks: Promise<void>[] = [];
    for (let p = 0; p < parts; p++) {
      const task: ReduceTask = {
        grads: grads.map((g) => g.buffer as SharedArrayBuffer),
        out: outBuf,
        start: Math.floor((p * size) / parts),
        end: Math.floor(((p + 1) * size) / parts),
        count,
      };
      tasks.push(this.pool.run(task));
    }
    await Promise.all(tasks);
    return new Float32Array(outBuf);
  }

  async close(): Promise<void> {
    await this.pool?.destroy();
    this.pool = undefined;
  }
}
