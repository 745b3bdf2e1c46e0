import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GradientReducer } from '../../src/coordinator/gradient_reducer.js';
import { SimdAccumulator } from '../../src/coordinator/fold_simd.js';
import { reduceRange } from '../collective/reference_reductions.js';
import { foldInto } from '../../src/coordinator/reduce.js';
import { GdpError } from '../../src/shared/errors.js';
import { splitBuckets, type BucketDtype } from '../../src/shared/protocol/buckets.js';
import { floatsIntoArray } from '../../src/shared/protocol/tensor.js';
import { Rng } from '../../src/shared/rng.js';

/** The definition: per element, a float32 running sum in worker order, then a float32 division. */
function reference(grads: Float32Array[], count: number): Float32Array {
  const f = Math.fround;
  const out = new Float32Array(grads[0].length);
  for (let i = 0; i < out.length; i++) {
    let acc = 0;
    for (const g of grads) acc = f(acc + g[i]);
    out[i] = f(acc / count);
  }
  return out;
}

test('reduceRange gives the per-element float32 arithmetic bit for bit, for 1 to 5 workers and split ranges', () => {
  const size = 4099;
  for (const workers of [1, 2, 3, 5]) {
    // Mixed magnitudes, so that the summation order shows in the low bits.
    const grads = Array.from({ length: workers }, (_, w) => Float32Array.from({ length: size }, (_, i) => Math.sin(i * 0.7 + w) * 10 ** ((i % 9) - 4)));
    const want = reference(grads, 37);
    const whole = new Float32Array(size);
    reduceRange(grads, whole, 0, size, 37);
    assert.deepEqual(new Uint32Array(whole.buffer), new Uint32Array(want.buffer), `${workers} workers`);
    const split = new Float32Array(size);
    reduceRange(grads, split, 0, 1000, 37);
    reduceRange(grads, split, 1000, size, 37);
    assert.deepEqual(new Uint32Array(split.buffer), new Uint32Array(want.buffer), `${workers} workers, two ranges`);
  }
});

/**
 * Feeds the buckets of `grads` to a fresh reduction in the arrival order `order` (a list of worker indices: each
 * entry delivers that worker's next bucket) and returns the average and the bucket indices in the order they came
 * out.
 */
function streamed(reducer: GradientReducer, grads: Float32Array[], elems: number, count: number, order: number[], dtype: BucketDtype = 'float32') {
  const sent: number[] = [];
  const copies: Float32Array[] = [];
  const r = reducer.begin({
    size: grads[0].length,
    bucketElems: elems,
    workers: grads.map((_, w) => `w${w}`),
    count,
    dtype,
    onAveraged: (index, values) => {
      sent.push(index);
      copies[index] = values.slice();
    },
    fail: (w, err) => {
      throw new Error(`worker ${w} failed: ${err.message}`);
    },
  });
  const buckets = grads.map((g) => splitBuckets(g, elems, dtype));
  const sinks = grads.map((_, w) => r.sink(w));
  const next = grads.map(() => 0);
  for (const w of order) sinks[w].add(next[w], buckets[w][next[w]++]);
  for (const s of sinks) s.end();
  return { avg: r.result(), sent, copies };
}

/** A random interleaving of every worker's buckets (each worker's own in index order). */
function interleaving(workers: number, buckets: number, rng: Rng): number[] {
  const left = Array.from({ length: workers }, () => buckets);
  const out: number[] = [];
  while (out.length < workers * buckets) {
    const w = rng.int(workers);
    if (left[w]-- > 0) out.push(w);
    else left[w] = 0;
  }
  return out;
}

test('the streaming reduction equals reduceRange bit for bit whatever order the buckets arrive in', () => {
  const size = 4099;
  const elems = 300;
  const rng = new Rng(5);
  const reducer = new GradientReducer();
  for (const workers of [1, 2, 3, 5]) {
    const grads = Array.from({ length: workers }, (_, w) => Float32Array.from({ length: size }, (_, i) => Math.sin(i * 0.7 + w) * 10 ** ((i % 9) - 4)));
    const want = new Float32Array(size);
    reduceRange(grads, want, 0, size, 37);
    const n = Math.ceil(size / elems);
    // In worker order, in reverse worker order (every later bucket held), and random interleavings.
    const orders = [Array.from({ length: n * workers }, (_, i) => Math.floor(i / n)), Array.from({ length: n * workers }, (_, i) => workers - 1 - Math.floor(i / n))];
    for (let k = 0; k < 4; k++) orders.push(interleaving(workers, n, rng));
    for (const order of orders) {
      const { avg, sent, copies } = streamed(reducer, grads, elems, 37, order);
      assert.deepEqual(new Uint32Array(avg.buffer, avg.byteOffset, avg.length), new Uint32Array(want.buffer), `${workers} workers, order ${order.join('')}`);
      assert.deepEqual(sent, Array.from({ length: n }, (_, i) => i), 'every bucket sent once, in index order');
      // What went out for each bucket is its final average (nothing later overwrote a sent range).
      copies.forEach((c, i) => assert.deepEqual(c, want.subarray(i * elems, Math.min(size, (i + 1) * elems))));
    }
  }
});

test('float16 uploads reduce to the average of their decoded values', () => {
  const size = 1000;
  const grads = [0, 1, 2].map((w) => Float32Array.from({ length: size }, (_, i) => Math.cos(i + w) * 0.01));
  const decoded = grads.map((g) => {
    const out = new Float32Array(size);
    let at = 0;
    for (const b of splitBuckets(g, 128, 'float16')) at += floatsIntoArray(b, 'float16', out, at, 'test');
    return out;
  });
  const want = new Float32Array(size);
  reduceRange(decoded, want, 0, size, 9);
  const { avg } = streamed(new GradientReducer(), grads, 128, 9, interleaving(3, 8, new Rng(2)), 'float16');
  assert.deepEqual(avg, want);
});

test('a non-finite value fails the worker that sent it, also when its bucket was held for an earlier worker', () => {
  const size = 20;
  const good = new Float32Array(size).fill(1);
  const bad = new Float32Array(size).fill(1);
  bad[13] = NaN;
  const failed: [number, string][] = [];
  const r = new GradientReducer().begin({ size, bucketElems: 10, workers: ['a', 'b'], count: 2, dtype: 'float32', onAveraged: () => undefined, fail: (w, e) => failed.push([w, `${e.code}: ${e.message}`]) });
  const [a, b] = [r.sink(0), r.sink(1)];
  const [ga, gb] = [splitBuckets(good, 10), splitBuckets(bad, 10)];
  b.add(0, gb[0]);
  b.add(1, gb[1]); // held: worker a's bucket 1 has not arrived
  a.add(0, ga[0]);
  a.add(1, ga[1]); // folds a's bucket 1, then b's held one, which holds the NaN
  assert.deepEqual(failed, [[1, 'NON_FINITE: gradient from worker b: bucket 1 holds NaN at element 13']]);
  assert.throws(() => r.result(), /incomplete/);
  // In arrival order the error goes to the sender directly.
  const r2 = new GradientReducer().begin({ size, bucketElems: 10, workers: ['a'], count: 1, dtype: 'float32', onAveraged: () => undefined, fail: () => assert.fail('not held') });
  r2.sink(0).add(0, gb[0]);
  assert.throws(() => r2.sink(0).add(1, gb[1]), (e: unknown) => e instanceof GdpError && e.code === 'NON_FINITE' && /element 13/.test(e.message));
});

test('buckets out of order, of the wrong length or missing are refused with BAD_BUCKET', () => {
  const g = splitBuckets(new Float32Array(20).fill(0.5), 10);
  const mk = () => new GradientReducer().begin({ size: 20, bucketElems: 10, workers: ['a', 'b'], count: 2, dtype: 'float32', onAveraged: () => undefined, fail: () => undefined });
  const code = (re: RegExp) => (e: unknown) => e instanceof GdpError && e.code === 'BAD_BUCKET' && re.test(e.message);
  assert.throws(() => mk().sink(1).add(1, g[1]), code(/bucket 1 arrived, expected bucket 0 of 2/));
  assert.throws(() => mk().sink(0).add(0, splitBuckets(new Float32Array(3), 10)[0]), code(/bucket 0 has 3 values, the layout expects 10/));
  assert.throws(() => mk().sink(0).add(0, splitBuckets(new Float32Array(10), 10, 'float16')[0]), code(/is float16, expected float32/));
  const r = mk();
  r.sink(0).add(0, g[0]);
  assert.throws(() => r.sink(0).end(), code(/1 of 2 buckets arrived/));
});

test('the SIMD fold gives foldInto\'s values bit for bit for every role, and its probe flags infinities and NaN', () => {
  const n = 1031; // 257 vectors and a tail of 3
  const acc = new SimdAccumulator(n + 5, n);
  const rng = new Rng(9);
  const g = Float32Array.from({ length: n }, () => (rng.int(2000) - 1000) * 10 ** (rng.int(8) - 6));
  const start = Float32Array.from({ length: n }, () => (rng.int(2000) - 1000) * 1e-3);
  for (const role of ['first', 'add', 'last', 'only'] as const) {
    const want = new Float32Array(n + 5);
    want.set(start, 5);
    assert.equal(foldInto(want, 5, g, role, 37), 0);
    acc.acc.set(want.subarray(0, 5));
    acc.acc.set(start, 5);
    acc.staging.set(g);
    assert.equal(acc.fold(5, n, role, 37), 0, role);
    assert.deepEqual(new Uint32Array(acc.acc.buffer, acc.acc.byteOffset, n + 5), new Uint32Array(want.buffer), role);
  }
  for (const at of [17, n - 1]) {
    for (const bad of [Infinity, -Infinity, NaN]) {
      acc.staging.set(g);
      acc.staging[at] = bad;
      assert.ok(Number.isNaN(acc.fold(5, n, 'add', 1)), `${bad} at ${at}`);
    }
  }
});

test('the SIMD fold\'s probe is Infinity when finite values sum past float32 (last and only roles), NaN for a bad input', () => {
  const n = 1031; // 257 vectors and a tail of 3
  const acc = new SimdAccumulator(n, n);
  const big = 3e38;
  // An overflow in the SIMD part and in the JS tail; none at all.
  for (const at of [-1, 40, n - 2]) {
    for (const role of ['last', 'only'] as const) {
      acc.acc.fill(role === 'last' ? big : 0);
      acc.staging.fill(1);
      if (at >= 0) acc.staging[at] = role === 'last' ? big : Infinity;
      const probe = acc.fold(0, n, role, role === 'last' ? 1 : 0.5);
      if (at < 0) assert.equal(probe, 0, role);
      else if (role === 'last') assert.equal(probe, Infinity, `${role}, overflow at ${at}`);
      // A non-finite input is the sender's fault, whatever the output: NaN.
      else assert.ok(Number.isNaN(probe), `${role}, infinity given at ${at}`);
    }
    // Only the roles that store the average look at it: a running sum may hold anything.
    acc.acc.fill(big);
    acc.staging.fill(big);
    assert.equal(acc.fold(0, n, 'add', 1), 0);
  }
  // 'only' dividing finite values by a tiny count overflows too.
  acc.staging.fill(1e30);
  assert.equal(acc.fold(0, n, 'only', 1e-10), Infinity);
});

test('an averaged bucket that overflows is not sent, nor any after it; earlier ones are', () => {
  const size = 30;
  const a = new Float32Array(size).fill(1);
  const b = new Float32Array(size).fill(1);
  b[15] = 3e38;
  a[15] = 3e38;
  const sent: number[] = [];
  const r = new GradientReducer().begin({
    size,
    bucketElems: 10,
    workers: ['a', 'b'],
    count: 1,
    dtype: 'float32',
    onAveraged: (index) => sent.push(index),
    fail: () => assert.fail('no worker is at fault'),
  });
  const [ga, gb] = [splitBuckets(a, 10), splitBuckets(b, 10)];
  for (let i = 0; i < 3; i++) {
    r.sink(0).add(i, ga[i]);
    r.sink(1).add(i, gb[i]);
  }
  assert.deepEqual(sent, [0]);
  assert.equal(r.result()[15], Infinity);
});
