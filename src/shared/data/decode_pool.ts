import { availableParallelism } from 'node:os';
import { Piscina } from 'piscina';
import { GdpError, codeFromRemote } from '../errors.js';
import { runDecodeTask, taskSampleSize, type DecodeTask } from './decode_task.js';
import type { DecodeFailure } from './decode_worker.js';

/** Pool threads for `requested` workers: never more than the machine's cores (0 means decode in-thread). */
export function decodeThreads(requested: number): number {
  return Math.max(0, Math.min(requested, availableParallelism()));
}

/**
 * Runs decode tasks on worker threads (piscina), or in the calling thread when it has no threads. A batch is
 * split into one chunk per thread; chunks are independent because every sample's augmentation comes from its
 * own seed, so the assembled batch is the same whatever the split.
 */
export class DecodePool {
  private readonly pool: Piscina | undefined;
  readonly threads: number;

  constructor(threads: number) {
    this.threads = decodeThreads(threads);
    if (this.threads > 0) {
      this.pool = new Piscina({
        filename: new URL('./decode_worker.js', import.meta.url).href,
        minThreads: 0,
        maxThreads: this.threads,
        // Keep threads (and their loaded sharp) between batches; idle threads do not hold the process open.
        idleTimeout: 30_000,
      });
    }
  }

  /**
   * Decodes `n` samples into one array, sample i at [i * size, (i + 1) * size) with size = taskSampleSize of the
   * tasks; `chunk(start, end)` builds the task for samples [start, end). A task's GdpError (BAD_DATA naming the
   * file) is rethrown with its code.
   */
  async decode(n: number, chunk: (start: number, end: number) => DecodeTask): Promise<Float32Array> {
    if (!this.pool || n === 0) return runDecodeTask(chunk(0, n));
    const parts = Math.min(this.threads, n);
    const bounds: number[] = [];
    for (let p = 0; p <= parts; p++) bounds.push(Math.round((p * n) / parts));
    const tasks = bounds.slice(0, -1).map((start, p) => chunk(start, bounds[p + 1]));
    const per = taskSampleSize(tasks[0]);
    const results = await Promise.all(tasks.map((t) => this.runInPool(t)));
    if (results.length === 1) return results[0];
    const x = new Float32Array(n * per);
    results.forEach((r, p) => x.set(r, bounds[p] * per));
    return x;
  }

  private async runInPool(task: DecodeTask): Promise<Float32Array> {
    // Transfer the chunk's image bytes (a private copy) rather than clone them.
    const transferList = task.kind === 'cifar' ? [task.planes.buffer as ArrayBuffer] : [];
    const r = (await this.pool!.run(task, { transferList })) as Float32Array | DecodeFailure;
    if (r instanceof Float32Array) return r;
    throw new GdpError(codeFromRemote(r.code), r.message);
  }

  async close(): Promise<void> {
    await this.pool?.destroy();
  }
}
