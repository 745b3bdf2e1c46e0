/**
 * One downsampled curve, `x` (e.g. global step) ascending. Values fall in buckets that span `width` consecutive x
 * values, aligned to multiples of `width`; a bucket keeps count, min, max and mean. When the buckets outnumber
 * `maxPoints`, `width` doubles and neighbours merge (min of mins, max of maxes, count-weighted mean), so memory and
 * what a browser draws stay bounded: a 100k-step run with maxPoints 2000 keeps at most 2000 buckets of 64 steps.
 * The same scheme as a time-series database's rollup; the merge is exact for min, max, count and mean.
 */
export interface SeriesView {
  /** Steps per bucket (a power of two). */
  width: number;
  /** Per bucket: its first x (a multiple of width), values seen, mean, min and max. */
  x: number[];
  n: number[];
  mean: number[];
  min: number[];
  max: number[];
}

/** The buckets from index `from` on; the receiver drops its own from there and appends these. */
export interface SeriesDelta extends SeriesView {
  from: number;
}

export class DownsampledSeries {
  private width = 1;
  private readonly x: number[] = [];
  private readonly n: number[] = [];
  private readonly sum: number[] = [];
  private readonly min: number[] = [];
  private readonly max: number[] = [];
  /** First bucket changed since the last `takeDelta`; Infinity: none. */
  private dirtyFrom = Infinity;

  /** @throws RangeError when `maxPoints` < 2 (halving needs two buckets to merge). */
  constructor(private readonly maxPoints = 2000) {
    if (!(Number.isInteger(maxPoints) && maxPoints >= 2)) throw new RangeError(`maxPoints must be an integer >= 2, got ${maxPoints}`);
  }

  get length(): number {
    return this.x.length;
  }

  /**
   * Adds the value `y` at `x`. An `x` at or before the last bucket's span (a redone or resumed step) joins the last
   * bucket: the curve never goes back in x.
   */
  add(x: number, y: number): void {
    const k = this.x.length - 1;
    if (k >= 0 && Math.floor(x / this.width) * this.width <= this.x[k]) {
      this.n[k]++;
      this.sum[k] += y;
      if (y < this.min[k]) this.min[k] = y;
      if (y > this.max[k]) this.max[k] = y;
      this.dirtyFrom = Math.min(this.dirtyFrom, k);
    } else {
      this.x.push(Math.floor(x / this.width) * this.width);
      this.n.push(1);
      this.sum.push(y);
      this.min.push(y);
      this.max.push(y);
      this.dirtyFrom = Math.min(this.dirtyFrom, k + 1);
    }
    while (this.x.length > this.maxPoints) this.coarsen();
  }

  /** Doubles the bucket width and merges the buckets that now share a span. */
  private coarsen(): void {
    this.width *= 2;
    let out = -1;
    for (let i = 0; i < this.x.length; i++) {
      const start = Math.floor(this.x[i] / this.width) * this.width;
      if (out >= 0 && this.x[out] === start) {
        this.n[out] += this.n[i];
        this.sum[out] += this.sum[i];
        this.min[out] = Math.min(this.min[out], this.min[i]);
        this.max[out] = Math.max(this.max[out], this.max[i]);
      } else {
        out++;
        this.x[out] = start;
        this.n[out] = this.n[i];
        this.sum[out] = this.sum[i];
        this.min[out] = this.min[i];
        this.max[out] = this.max[i];
      }
    }
    for (const a of [this.x, this.n, this.sum, this.min, this.max]) a.length = out + 1;
    this.dirtyFrom = 0;
  }

  view(from = 0): SeriesView {
    return {
      width: this.width,
      x: this.x.slice(from),
      n: this.n.slice(from),
      mean: this.sum.slice(from).map((s, i) => s / this.n[from + i]),
      min: this.min.slice(from),
      max: this.max.slice(from),
    };
  }

  /** The buckets changed since the last call, or undefined when none changed. */
  takeDelta(): SeriesDelta | undefined {
    if (this.dirtyFrom === Infinity) return undefined;
    const from = this.dirtyFrom;
    this.dirtyFrom = Infinity;
    return { from, ...this.view(from) };
  }
}
