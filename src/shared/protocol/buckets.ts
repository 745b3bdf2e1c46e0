import { GdpError } from '../errors.js';
import { firstNonFinite, floatsIntoArray, toWire, toWireFloat16, type WireTensor } from './tensor.js';

/** How gradient buckets travel: float32, or float16 with a per-bucket scale (dist.grad_dtype). */
export type BucketDtype = 'float32' | 'float16';

/** [start, end) element ranges of the buckets of a flat vector: fixed by (size, bucketElems), so both ends agree. */
export function bucketRanges(size: number, bucketElems: number): [number, number][] {
  const out: [number, number][] = [];
  for (let s = 0; s < size; s += bucketElems) out.push([s, Math.min(size, s + bucketElems)]);
  return out;
}

/** The bucket payloads of `flat` in index order: views without copying (float32), or encoded (float16). */
export function splitBuckets(flat: Float32Array, bucketElems: number, dtype: BucketDtype = 'float32'): WireTensor[] {
  return bucketRanges(flat.length, bucketElems).map(([s, e]) => (dtype === 'float16' ? toWireFloat16(flat.subarray(s, e)) : toWire(flat.subarray(s, e))));
}

/**
 * Checks bucket `index` of a vector laid out in `ranges` (an index in range, the expected dtype, the exact number of
 * values) and returns its [start, end) range; throws BAD_BUCKET naming `what`, the bucket and the problem.
 */
export function checkBucket(what: string, ranges: readonly [number, number][], index: number, data: WireTensor, dtype: BucketDtype): [number, number] {
  if (index >= ranges.length) throw new GdpError('BAD_BUCKET', `${what}: bucket ${index} arrived, the vector has ${ranges.length} buckets`);
  const [s, e] = ranges[index];
  if (data.dtype !== dtype) throw new GdpError('BAD_BUCKET', `${what} bucket ${index} is ${data.dtype}, expected ${dtype}`);
  const n = data.shape.reduce((a, b) => a * b, 1);
  if (n !== e - s) throw new GdpError('BAD_BUCKET', `${what}: bucket ${index} has ${n} values, the layout expects ${e - s}`);
  return [s, e];
}

/**
 * Reassembles a flat vector from its buckets, checking each against the expected layout: index in range, arriving
 * in order, exact length, finite values. A failure names the stream, bucket and problem.
 */
export class BucketAssembler {
  readonly out: Float32Array;
  private readonly ranges: [number, number][];
  private next = 0;

  constructor(
    readonly what: string,
    size: number,
    bucketElems: number,
    /** Where the vector goes (e.g. shared memory for a thread pool to read). */
    allocate: (size: number) => Float32Array = (n) => new Float32Array(n),
    /** The dtype every bucket must have; float16 buckets are decoded to float32. */
    readonly dtype: BucketDtype = 'float32',
  ) {
    this.out = allocate(size);
    this.ranges = bucketRanges(size, bucketElems);
  }

  add(index: number, data: WireTensor): void {
    if (this.complete) throw new GdpError('BAD_BUCKET', `${this.what}: bucket ${index} arrived after all ${this.ranges.length} buckets`);
    if (index !== this.next) {
      throw new GdpError('BAD_BUCKET', `${this.what}: bucket ${index} arrived, expected bucket ${this.next} of ${this.ranges.length}`);
    }
    const [s, e] = checkBucket(this.what, this.ranges, index, data, this.dtype);
    const what = `${this.what} bucket ${index}`;
    // Decoded straight into place; a bad bucket fails the whole vector, so a partly written range is never used.
    floatsIntoArray(data, this.dtype, this.out, s, what);
    const v = this.out.subarray(s, e);
    const bad = firstNonFinite(v);
    if (bad >= 0) throw new GdpError('NON_FINITE', `${this.what}: bucket ${index} holds ${v[bad]} at element ${s + bad}`);
    this.next++;
  }

  get complete(): boolean {
    return this.next === this.ranges.length;
  }

  /** The vector, once every bucket arrived. */
  result(): Float32Array {
    if (!this.complete) throw new GdpError('BAD_BUCKET', `${this.what}: ${this.next} of ${this.ranges.length} buckets arrived`);
    return this.out;
  }
}
