import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeOnce, decodeMessage } from '../../src/shared/protocol/codec.js';
import { FramePool } from '../../src/shared/protocol/frame_pool.js';
import type { Message } from '../../src/shared/protocol/messages.js';
import { Peer } from '../../src/shared/protocol/peer.js';
import { float32FromWire, toWire } from '../../src/shared/protocol/tensor.js';
import { connectWs } from '../../src/shared/protocol/ws_transport.js';
import { listenWs } from '../../src/shared/protocol/ws_listener.js';
import type { Transport } from '../../src/shared/protocol/transport.js';

const KIB = 1024;

test('a frame given back serves the next frame of its size class, once; other buffers are ignored', () => {
  const pool = new FramePool(1 << 20);
  const a = pool.take(100 * KIB);
  assert.deepEqual([a.byteLength, a.byteOffset, a.buffer.byteLength], [100 * KIB, 0, 128 * KIB]);
  pool.give(a);
  pool.give(a); // twice: still one free buffer, never handed out twice
  const b = pool.take(120 * KIB);
  assert.equal(b.buffer, a.buffer);
  assert.notEqual(pool.take(100 * KIB).buffer, a.buffer);
  // Another size class, a buffer the pool did not make, a view into a pool buffer: none becomes free.
  assert.notEqual(pool.take(200 * KIB).buffer, a.buffer);
  pool.give(Buffer.allocUnsafeSlow(128 * KIB));
  pool.give(b.subarray(1));
  assert.equal(pool.held, 0);
  // Beyond maxFreeBytes a buffer given back is left to the garbage collector.
  const big = [pool.take(512 * KIB), pool.take(512 * KIB), pool.take(512 * KIB)];
  for (const f of big) pool.give(f);
  assert.equal(pool.held, 1 << 20);
});

test("an EncodedMessage's buffer is reused only after the encoder is done and every send of it ended", () => {
  // A size class no other test here uses: 1 MiB + 300 KiB of values.
  const values = new Float32Array((1300 * KIB) / 4).fill(0.25);
  const msg = (seq: number): Message => ({ type: 'bucket', stream: 'avg', seq, index: 0, data: toWire(values) });
  const first = encodeOnce(msg(1));
  const ends = [first.sending(), first.sending()];
  first.done();
  ends[0]();
  ends[0](); // a second call of the same end counts once
  const second = encodeOnce(msg(2));
  assert.notEqual(second.frame.buffer, first.frame.buffer, 'one send of the first is still under way');
  ends[1]();
  second.done();
  const third = encodeOnce(msg(3));
  assert.equal(third.frame.buffer, first.frame.buffer);
  assert.equal((decodeMessage(third.frame) as { seq: number }).seq, 3);
});

test('frames reused over a real socket arrive intact, whatever the sender reuses while the receiver is behind', async () => {
  let server: Transport | undefined;
  const listener = await listenWs('127.0.0.1', 0, (t) => (server = t));
  const client = await connectWs(`ws://127.0.0.1:${listener.port}`);
  while (!server) await new Promise((resolve) => setTimeout(resolve, 5));
  const opts = { heartbeatMs: 1000, timeoutMs: 10000, log: () => {} };
  const coordinator = new Peer(server, { ...opts, name: 'coordinator' });
  const worker = new Peer(client, { ...opts, name: 'worker' });
  const n = (2 << 20) / 4;
  const rounds = 12;
  const got: number[][] = [];
  const done = new Promise<void>((resolve) =>
    coordinator.onMessage((m) => {
      if (m.type !== 'bucket') return;
      const v = float32FromWire(m.data, 'test');
      got.push([m.index, v[0], v[n - 1]]);
      if (got.length === rounds) resolve();
    }),
  );
  // Both directions' frames come from the same pool in this process: masked uploads (ws copies them) and the
  // averaged buckets encoded once and sent to the worker (written as they are).
  const down: number[][] = [];
  worker.onMessage((m) => m.type === 'bucket' && down.push([m.index, float32FromWire(m.data, 'test')[n - 1]]));
  for (let i = 0; i < rounds; i++) {
    const values = new Float32Array(n).fill(i);
    values[n - 1] = -i;
    worker.send({ type: 'bucket', stream: 'grad', seq: 1, index: i, data: toWire(values) });
    const once = encodeOnce({ type: 'bucket', stream: 'avg', seq: 1, index: i, data: toWire(values) });
    coordinator.send(once);
    coordinator.send(once);
    once.done();
    // The values change at once: only the frames hold what was sent.
    values.fill(-1);
    if (i % 3 === 2) await new Promise((resolve) => setTimeout(resolve, 10));
  }
  await done;
  while (down.length < 2 * rounds) await new Promise((resolve) => setTimeout(resolve, 10));
  const want = Array.from({ length: rounds }, (_, i) => [i, i, -i]);
  assert.deepEqual(got, want);
  assert.deepEqual(
    down,
    want.flatMap(([i]) => [
      [i, -i],
      [i, -i],
    ]),
  );
  worker.close();
  await listener.close(100);
});
