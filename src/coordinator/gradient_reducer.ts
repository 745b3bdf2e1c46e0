import { GdpError } from '../shared/errors.js';
import { bucketRanges, checkBucket, type BucketDtype } from '../shared/protocol/buckets.js';
import { encodeOnce, type EncodedMessage } from '../shared/protocol/codec.js';
import { floatsIntoArray, toWire, type WireTensor } from '../shared/protocol/tensor.js';
import { timelineEvent } from '../shared/timeline.js';
import { SimdAccumulator } from './fold_simd.js';
import { foldRole } from './reduce.js';
import type { GradientSink, WorkerLink } from './worker_link.js';

/** What one step's reduction needs to know before the first bucket arrives. */
export interface ReductionOptions {
  /** Values in the gradient vector (its FlatLayout size). */
  size: number;
  bucketElems: number;
  /** Names of the contributing workers in the fixed summation order (join order), for error messages. */
  workers: readonly string[];
  /** Samples of the global batch: the divisor of the average. */
  count: number;
  /** How workers upload their buckets (dist.grad_dtype). */
  dtype: BucketDtype;
  /**
   * Called once per bucket, in index order, as soon as bucket `index` is averaged: `values` is its range of the
   * average (valid until the next step). The step posts it to every replica from here.
   */
  onAveraged: (index: number, values: Float32Array) => void;
  /** Ends worker `w`'s connection for a bad bucket found while folding it after another worker's arrival. */
  fail: (w: number, err: GdpError) => void;
}

/**
 * The coordinator's gradient reduction, bucket by bucket as in PyTorch DDP's reducer: a step `begin`s one
 * reduction, whose `sink(w)` receives worker w's buckets as they arrive. Bucket k of the average is the float32
 * sum of the workers' buckets k in the fixed worker order divided by the sample count (reduce.ts), and goes out
 * (`onAveraged`) the moment the last of them is folded, while later buckets are still arriving.
 *
 * Each arriving bucket is copied (or decoded, float16) from its frame into a staging area of WebAssembly memory,
 * then checked for finiteness and folded into the running sum in one SIMD pass (fold_simd.ts; the arithmetic of
 * reduce.ts, bit for bit); the first worker's bucket initialises the range. A worker's bucket
 * that arrives before an earlier worker's bucket of the same index is held (its frame, not a copy) until its turn,
 * so memory beyond the one averaged vector is at most the held frames, never a full-size buffer per worker.
 *
 * Sums run on the main thread: each fold is a memcpy and one SIMD pass over a bucket while the next bucket is still
 * on the wire, so the reduction hides behind the transfer instead of following it (the piscina pool that averaged
 * whole vectors after the last byte arrived is gone).
 */
export class GradientReducer {
  /** The running sum and staging area, reused across steps of the same size: fresh 100 MB cost page faults. */
  private acc?: SimdAccumulator;

  /** Starts the reduction of one step (the previous step's must be finished or abandoned: the buffers are reused). */
  begin(o: ReductionOptions): StepReduction {
    if (this.acc?.size !== o.size || this.acc.staging.length < Math.min(o.size, o.bucketElems)) this.acc = new SimdAccumulator(o.size, o.bucketElems);
    return new StepReduction(o, this.acc);
  }
}

/** One step's reduction (GradientReducer.begin). */
export class StepReduction {
  private readonly ranges: [number, number][];
  /** Per worker: the index of the next bucket it must send. */
  private readonly next: number[];
  /** Per bucket: how many workers (in order) are folded into it. */
  private readonly folded: number[];
  /** Per bucket: buckets of later workers waiting for an earlier worker's bucket of the same index. */
  private readonly held: (WireTensor | undefined)[][];
  private averaged = 0;
  private failed = false;
  /** A bucket's average overflowed: later averaged buckets are not sent either. */
  private overflowed = false;

  constructor(
    private readonly o: ReductionOptions,
    private readonly acc: SimdAccumulator,
  ) {
    this.ranges = bucketRanges(o.size, o.bucketElems);
    this.next = o.workers.map(() => 0);
    this.folded = this.ranges.map(() => 0);
    this.held = this.ranges.map(() => []);
    if (!o.workers.length) throw new GdpError('INTERNAL', 'a gradient reduction over no workers');
  }

  private what(w: number): string {
    return `gradient from worker ${this.o.workers[w]}`;
  }

  /** Where worker `w`'s buckets go: checked on arrival (index order, dtype, length), folded in turn. */
  sink(w: number, label = this.what(w)): GradientSink {
    return {
      add: (index, data) => this.add(w, label, index, data),
      end: () => {
        if (this.next[w] !== this.ranges.length) throw new GdpError('BAD_BUCKET', `${label}: ${this.next[w]} of ${this.ranges.length} buckets arrived`);
      },
    };
  }

  private add(w: number, label: string, index: number, data: WireTensor): void {
    const n = this.ranges.length;
    if (this.next[w] >= n) throw new GdpError('BAD_BUCKET', `${label}: bucket ${index} arrived after all ${n} buckets`);
    if (index !== this.next[w]) throw new GdpError('BAD_BUCKET', `${label}: bucket ${index} arrived, expected bucket ${this.next[w]} of ${n}`);
    checkBucket(label, this.ranges, index, data, this.o.dtype);
    this.next[w]++;
    timelineEvent('coordinator: gradient bucket received');
    // Another worker's bad bucket ended the step: it is redone, so nothing more is summed.
    if (this.failed) return;
    if (this.folded[index] !== w) {
      this.held[index][w] = data;
      return;
    }
    this.fold(w, index, data);
    // Later workers' buckets of this index that were waiting for this one.
    const held = this.held[index];
    for (let v = w + 1; !this.failed && held[v]; v++) {
      const d = held[v]!;
      held[v] = undefined;
      try {
        this.fold(v, index, d);
      } catch (err) {
        this.failed = true;
        this.o.fail(v, err as GdpError);
      }
    }
  }

  /** Folds worker w's bucket `index` into the sum; throws NON_FINITE (and ends the reduction) for a bad value. */
  private fold(w: number, index: number, data: WireTensor): void {
    const [s, e] = this.ranges[index];
    const role = foldRole(w, this.o.workers.length);
    const g = this.acc.staging.subarray(0, e - s);
    floatsIntoArray(data, this.o.dtype, g, 0, `${this.what(w)} bucket ${index}`);
    const probe = this.acc.fold(s, e - s, role, this.o.count);
    if (Number.isNaN(probe)) {
      this.failed = true;
      const bad = g.findIndex((v) => !Number.isFinite(v));
      throw new GdpError('NON_FINITE', `${this.what(w)}: bucket ${index} holds ${g[bad]} at element ${s + bad}`);
    }
    if (++this.folded[index] === this.o.workers.length) {
      this.held[index] = [];
      this.averaged++;
      // Finite gradients can still sum past float32's range (the fold's probe is then Infinity): from such a bucket on
      // nothing more is sent (replicas take buckets in order), and the step's caller finds the non-finite average (the
      // run diverged; no one is to blame).
      if (probe !== 0) this.overflowed = true;
      if (!this.overflowed) {
        this.o.onAveraged(index, this.acc.acc.subarray(s, e));
        timelineEvent('coordinator: averaged bucket sent');
      }
    }
  }

  /** The average of every worker's gradient, once all of their buckets arrived and were folded. */
  result(): Float32Array {
    if (this.failed || this.averaged !== this.ranges.length) {
      throw new GdpError('INTERNAL', `gradient reduction incomplete: ${this.averaged} of ${this.ranges.length} buckets averaged`);
    }
    return this.acc.acc;
  }
}

/**
 * Posts averaged bucket `index` (`values`, its range of the average) as an 'avg' bucket to every replica under the
 * number of its step messages (`seqs`), encoding it once per distinct number: replicas whose links share their
 * numbering (the cluster's) receive the same bytes, and the values are copied once whatever their number.
 */
export function postAveragedBucket(seqs: Iterable<[WorkerLink, number]>, index: number, values: Float32Array): void {
  const data = toWire(values);
  const frames = new Map<number, EncodedMessage>();
  for (const [link, seq] of seqs) {
    let frame = frames.get(seq);
    if (!frame) frames.set(seq, (frame = encodeOnce({ type: 'bucket', stream: 'avg', seq, index, data })));
    link.post(() => [frame], seq);
  }
  for (const frame of frames.values()) frame.done();
}
