import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BucketAssembler, bucketRanges, splitBuckets } from '../../src/shared/protocol/buckets.js';
import { encodeMessage } from '../../src/shared/protocol/codec.js';
import { toWire } from '../../src/shared/protocol/tensor.js';
import { bucketElements, exchangeBucketElements, MAX_FRAME_BYTES } from '../../src/shared/protocol/version.js';
import { GdpError } from '../../src/shared/errors.js';

test('a vector larger than a bucket is split and reassembled exactly; no frame exceeds the limit', () => {
  const flat = Float32Array.from({ length: 10007 }, (_, i) => ((i * 0.37) % 5) - 2.5);
  const elems = 1000;
  const parts = splitBuckets(flat, elems);
  assert.equal(parts.length, 11);
  const a = new BucketAssembler('test', flat.length, elems);
  parts.forEach((data, index) => {
    const frame = encodeMessage({ type: 'bucket', stream: 'grad', seq: 1, index, data });
    assert.ok(frame.byteLength <= elems * 4 + 200, `bucket ${index} frame is ${frame.byteLength} bytes`);
    a.add(index, data);
  });
  assert.ok(a.complete);
  assert.deepEqual(a.result(), flat);
});

test('the largest configurable bucket still fits in a frame; ResNet-50 gradients need several', () => {
  assert.ok(bucketElements(64) * 4 + 1024 <= MAX_FRAME_BYTES);
  const resnet50 = 25_557_032;
  assert.equal(bucketRanges(resnet50, bucketElements(16)).length, 7);
  assert.equal(bucketRanges(0, 100).length, 0);
});

test("the star's buckets: at least 8 per gradient (ResNet-20, ResNet-50), dist.bucket_mib's beyond, a tiny one whole", () => {
  const buckets = (mib: number, elems: number) => bucketRanges(elems, exchangeBucketElements(mib, elems)).length;
  // mnist.resnet20: one 16 MiB bucket would hold it all, so nothing overlapped its upload and download.
  assert.equal(buckets(16, 272_186), 8);
  assert.equal(buckets(16, 25_557_032), 8);
  assert.equal(exchangeBucketElements(16, 100_000_000), bucketElements(16));
  // No bucket under 64 KiB of float32, unless dist.bucket_mib asks for less.
  assert.equal(exchangeBucketElements(16, 60_000), 16_384);
  assert.equal(buckets(16, 1_000), 1);
  assert.equal(exchangeBucketElements(0.0001, 272_186), bucketElements(0.0001));
});

test('buckets out of order, of the wrong size, non-finite or missing are rejected', () => {
  const mk = () => new BucketAssembler('grad of w1', 10, 4);
  const ok = toWire(new Float32Array(4));
  assert.throws(
    () => mk().add(1, ok),
    (e: unknown) => e instanceof GdpError && e.code === 'BAD_BUCKET' && /bucket 1 arrived, expected bucket 0 of 3/.test(e.message),
  );
  assert.throws(
    () => mk().add(0, toWire(new Float32Array(3))),
    (e: unknown) => e instanceof GdpError && /has 3 values, the layout expects 4/.test(e.message),
  );
  assert.throws(
    () => mk().add(0, toWire(Float32Array.of(0, Infinity, 0, 0))),
    (e: unknown) => e instanceof GdpError && e.code === 'NON_FINITE',
  );
  const a = mk();
  a.add(0, ok);
  assert.throws(
    () => a.result(),
    (e: unknown) => e instanceof GdpError && /1 of 3 buckets arrived/.test(e.message),
  );
  a.add(1, ok);
  a.add(2, toWire(new Float32Array(2)));
  assert.throws(
    () => a.add(3, ok),
    (e: unknown) => e instanceof GdpError && e.code === 'BAD_BUCKET',
  );
});

test('float16 buckets: half the bytes, decoded within half-precision rounding at any magnitude, scale per bucket', () => {
  // Buckets of very different magnitudes: sums of 1e6 would overflow plain half precision, 1e-9 would vanish.
  const flat = Float32Array.from({ length: 3000 }, (_, i) => Math.sin(i) * [1e6, 1, 1e-9][Math.floor(i / 1000)]);
  const parts = splitBuckets(flat, 1000, 'float16');
  const a = new BucketAssembler('grad of w0', flat.length, 1000, undefined, 'float16');
  parts.forEach((data, index) => {
    assert.equal(data.data.byteLength, 2000);
    const frame = encodeMessage({ type: 'bucket', stream: 'grad', seq: 1, index, data });
    assert.ok(frame.byteLength <= 2000 + 200);
    a.add(index, data);
  });
  const got = a.result();
  for (let b = 0; b < 3; b++) {
    let max = 0;
    for (let i = b * 1000; i < (b + 1) * 1000; i++) max = Math.max(max, Math.abs(flat[i]));
    for (let i = b * 1000; i < (b + 1) * 1000; i++) {
      // Relative 2^-11 near the top of the bucket; values far below the bucket's largest meet the subnormal step.
      assert.ok(Math.abs(got[i] - flat[i]) <= Math.abs(flat[i]) * 2 ** -11 + max * 2 ** -24, `element ${i}: ${got[i]} vs ${flat[i]}`);
    }
  }
});

test('a bucket of the wrong dtype or with a non-finite float16 value is rejected', () => {
  const f16 = () => new BucketAssembler('grad of w1', 4, 4, undefined, 'float16');
  assert.throws(
    () => f16().add(0, toWire(new Float32Array(4))),
    (e: unknown) => e instanceof GdpError && e.code === 'BAD_BUCKET' && /is float32, expected float16/.test(e.message),
  );
  assert.throws(
    () => new BucketAssembler('grad of w1', 4, 4).add(0, splitBuckets(new Float32Array(4), 4, 'float16')[0]),
    (e: unknown) => e instanceof GdpError && /is float16, expected float32/.test(e.message),
  );
  // 1e38 and 1e-44 are far outside half precision's range; the bucket's scale brings them in.
  for (const bad of [NaN, Infinity, 1e38, 1e-44]) {
    const data = splitBuckets(Float32Array.of(0, bad, bad / 2, -bad), 4, 'float16')[0];
    if (Number.isFinite(bad)) {
      const a = f16();
      a.add(0, data);
      assert.ok(Math.abs(a.result()[1] - Math.fround(bad)) <= bad * 2 ** -11);
    } else {
      assert.throws(
        () => f16().add(0, data),
        (e: unknown) => e instanceof GdpError && e.code === 'NON_FINITE',
      );
    }
  }
});

test('float16 bucket bytes at an odd offset of a received frame decode correctly', () => {
  const values = Float32Array.from({ length: 50 }, (_, i) => i - 20.25);
  const wire = splitBuckets(values, 50, 'float16')[0];
  // As a decoded frame can hand it over: a view at an odd offset of a larger buffer.
  const frame = Buffer.alloc(wire.data.byteLength + 7);
  frame.set(wire.data, 3);
  const a = new BucketAssembler('grad of w0', 50, 50, undefined, 'float16');
  a.add(0, { ...wire, data: frame.subarray(3, 3 + wire.data.byteLength) });
  assert.deepEqual(a.result(), values);
});
