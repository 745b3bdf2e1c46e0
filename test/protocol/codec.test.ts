import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pack } from 'msgpackr';
import { EncodedMessage, decodeMessage, encodeFrame, encodeMessage, encodeOnce } from '../../src/shared/protocol/codec.js';
import type { Message } from '../../src/shared/protocol/messages.js';
import { Peer } from '../../src/shared/protocol/peer.js';
import { memoryPair } from '../../src/shared/protocol/transport.js';
import { float32FromWire, int32FromWire, toWire } from '../../src/shared/protocol/tensor.js';
import { MAX_FRAME_BYTES, PROTOCOL_VERSION } from '../../src/shared/protocol/version.js';
import { GdpError } from '../../src/shared/errors.js';

function code(re: RegExp, c = 'BAD_MESSAGE') {
  return (e: unknown) => e instanceof GdpError && e.code === c && re.test(e.message);
}

test('messages round-trip, tensors as binary', () => {
  const grad = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i));
  const msgs: Message[] = [
    { type: 'hello', protocol: PROTOCOL_VERSION, workerId: 'w', backend: 'cpu', gpu: null, host: 'h', pid: 1 },
    { type: 'bucket', stream: 'grad', seq: 3, index: 0, data: toWire(grad) },
    { type: 'compute', seq: 4, set: 'gates', indices: toWire(Int32Array.of(5, 1, 9)), seed: 7 },
    { type: 'average', seq: 4, set: 'all' },
    { type: 'apply', seq: 4, set: 'all', sgd: { lr: 0.1, momentum: 0.9, weightDecay: 1e-4, nesterov: true, gateL1: 1e-3 } },
    { type: 'apply', seq: 4, set: 'all_but_conv', sgd: { lr: 0.1, momentum: 0.9, weightDecay: 1e-4, nesterov: false, decayFrozen: true } },
    {
      type: 'model_update',
      seq: 5,
      update: {
        kind: 'custom',
        handler: 'h',
        record: { keep: [1, 2], name: 'conv1' },
        tensors: [{ name: 't', tensor: toWire(Float32Array.of(1, 2), [2, 1]) }],
      },
    },
  ];
  // Binary fields come back as Buffers (Uint8Array subclass): compare their bytes.
  const plain = (v: unknown): unknown =>
    v instanceof Uint8Array
      ? Array.from(v)
      : Array.isArray(v)
        ? v.map(plain)
        : v && typeof v === 'object'
          ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]))
          : v;
  for (const m of msgs) assert.deepEqual(plain(decodeMessage(encodeMessage(m))), plain(m));
  const frame = encodeMessage(msgs[1]);
  // Binary: 4 bytes a value plus a small header, not a list of msgpack floats (5 or 9 bytes each).
  assert.ok(frame.byteLength < 4000 + 100, `frame is ${frame.byteLength} bytes`);
  const back = decodeMessage(frame) as Extract<Message, { type: 'bucket' }>;
  assert.deepEqual(float32FromWire(back.data, 'x'), grad);
  const c = decodeMessage(encodeMessage(msgs[2])) as Extract<Message, { type: 'compute' }>;
  assert.deepEqual(int32FromWire(c.indices, 'x'), Int32Array.of(5, 1, 9));
});

test('bad frames are rejected with what is wrong', () => {
  assert.throws(() => decodeMessage(Uint8Array.of(0xc1, 0xff, 0x00, 0x13)), code(/not msgpack/));
  assert.throws(() => decodeMessage(pack([1, 2])), code(/not a msgpack map/));
  assert.throws(() => decodeMessage(pack({ type: 'launch_missiles' })), code(/invalid 'launch_missiles' message/));
  assert.throws(() => decodeMessage(pack({ type: 'hello', protocol: 1 })), code(/invalid 'hello' message: workerId/));
  const bad = { type: 'bucket', stream: 'grad', seq: 1, index: 0, data: { dtype: 'float32', shape: [3], data: new Uint8Array(8) } };
  assert.throws(() => decodeMessage(pack(bad)), code(/data: byte length does not match dtype and shape/));
  const list = { ...bad, data: { dtype: 'float32', shape: [2], data: [1, 2] } };
  assert.throws(() => decodeMessage(pack(list)), code(/expected binary data/));
});

test('a frame over the limit is refused at encoding', () => {
  const big = new Float32Array(MAX_FRAME_BYTES / 4 + 1);
  assert.throws(
    () => encodeMessage({ type: 'bucket', stream: 'grad', seq: 1, index: 0, data: toWire(big) }),
    code(/over the \d+-byte frame limit/, 'FRAME_TOO_LARGE'),
  );
});

test('frames with large tensors are the bytes msgpackr gives, each in a buffer of its own', () => {
  const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);
  const cases: ({ type: string } & Record<string, unknown>)[] = [];
  // Around the fast path's threshold, the bin 16 / bin 32 limit and a typical bucket; small and large numbers.
  for (const n of [65532, 65536, 65540, 1 << 20]) {
    for (const [seq, index] of [
      [1, 0],
      [300, 70000],
      [2 ** 31, 5],
    ]) {
      cases.push({ type: 'bucket', stream: 'avg', seq, index, data: { dtype: 'float32', shape: [n / 4], data: bytes(n, seq) } });
    }
    cases.push({ type: 'bucket', stream: 'grad', seq: 7, index: 1, data: { dtype: 'float16', shape: [n / 2], data: bytes(n, 3), scale: -12 } });
  }
  // Another protocol's message (a ring chunk's shape), a byte array straight in the message, a value left undefined.
  cases.push({ type: 'ring_chunk', op: 4, step: 2, part: 1, data: { dtype: 'float32', shape: [2, 8192], data: bytes(65536, 9) }, note: undefined });
  cases.push({ type: 'raw', blob: bytes(70000, 1), data: { dtype: 'float32', shape: [16384], data: bytes(65536, 2) } });
  for (const m of cases) {
    const frame = encodeFrame(m);
    assert.deepEqual(Buffer.from(frame), Buffer.from(pack(m)), JSON.stringify({ ...m, data: undefined }));
    // From 64 KiB of tensor bytes on: at the start of a buffer of its own, of its size rounded up to 64 KiB (below
    // that, msgpackr's output).
    const tensorBytes = (m.data as { data: Uint8Array }).data.byteLength;
    if (tensorBytes >= 65536) {
      assert.equal(frame.byteOffset, 0);
      assert.equal(frame.buffer.byteLength, Math.ceil(frame.byteLength / 65536) * 65536);
    }
  }
  // And they decode to what was sent.
  const grad = Float32Array.from({ length: 20000 }, (_, i) => Math.cos(i));
  const back = decodeMessage(encodeMessage({ type: 'bucket', stream: 'avg', seq: 9, index: 2, data: toWire(grad) })) as Extract<Message, { type: 'bucket' }>;
  assert.deepEqual([back.seq, back.index, back.data.shape], [9, 2, [20000]]);
  assert.deepEqual(float32FromWire(back.data, 'x'), grad);
});

test('a message encoded once reaches several peers as the same validated message', async () => {
  const grad = Float32Array.from({ length: 30000 }, (_, i) => i * 0.5);
  const once = encodeOnce({ type: 'bucket', stream: 'avg', seq: 4, index: 0, data: toWire(grad) });
  assert.ok(once instanceof EncodedMessage);
  assert.equal(once.type, 'bucket');
  const got: Message[] = [];
  for (let k = 0; k < 2; k++) {
    const [a, b] = memoryPair();
    const far = new Peer(b, { name: 'far', heartbeatMs: 1000, timeoutMs: 5000, log: () => {} });
    far.onMessage((m) => got.push(m));
    new Peer(a, { name: 'near', heartbeatMs: 1000, timeoutMs: 5000, log: () => {} }).send(once);
  }
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(got.length, 2);
  for (const m of got) {
    assert.equal(m.type, 'bucket');
    const b = m as Extract<Message, { type: 'bucket' }>;
    assert.deepEqual(float32FromWire(b.data, 'x'), grad);
  }
  assert.throws(
    () => encodeOnce({ type: 'bucket', stream: 'avg', seq: 1, index: 0, data: toWire(new Float32Array(MAX_FRAME_BYTES / 4 + 1)) }),
    code(/frame limit/, 'FRAME_TOO_LARGE'),
  );
});
