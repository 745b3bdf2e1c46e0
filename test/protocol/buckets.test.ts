import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BucketAssembler, bucketRanges, splitBuckets } from '../../src/shared/protocol/buckets.js';
import { encodeMessage } from '../../src/shared/protocol/codec.js';
import { toWire } from '../../src/shared/protocol/tensor.js';
import { bucketElements, MAX_FRAME_BYTES } from '../../src/shared/protocol/version.js';
import { GdpError } from '../../src/shared/errors.js';

test('a vector larger than a bucket is split and reassembled exactly; no frame exceeds the limit', () => {
  const flat = Float32Array.from({ length: 10007 }, (_, i) => (i * 0.37) % 5 - 2.5);
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

test('buckets out of order, of the wrong size, non-finite or missing are rejected', () => {
  const mk = () => new BucketAssembler('grad of w1', 10, 4);
  const ok = toWire(new Float32Array(4));
  assert.throws(() => mk().add(1, ok), (e: unknown) => e instanceof GdpError && e.code === 'BAD_BUCKET' && /bucket 1 arrived, expected bucket 0 of 3/.test(e.message));
  assert.throws(() => mk().add(0, toWire(new Float32Array(3))), (e: unknown) => e instanceof GdpError && /has 3 values, the layout expects 4/.test(e.message));
  assert.throws(() => mk().add(0, toWire(Float32Array.of(0, Infinity, 0, 0))), (e: unknown) => e instanceof GdpError && e.code === 'NON_FINITE');
  const a = mk();
  a.add(0, ok);
  assert.throws(() => a.result(), (e: unknown) => e instanceof GdpError && /1 of 3 buckets arrived/.test(e.message));
  a.add(1, ok);
  a.add(2, toWire(new Float32Array(2)));
  assert.throws(() => a.add(3, ok), (e: unknown) => e instanceof GdpError && e.code === 'BAD_BUCKET');
});
