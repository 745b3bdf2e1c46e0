import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HandshakeTransport } from '../../src/shared/collective/handshake_transport.js';
import { RingAllReduce } from '../../src/shared/collective/ring_allreduce.js';
import { decodeRingMessage, encodeRingMessage, type RingMessage } from '../../src/shared/collective/ring_messages.js';
import { ringAverage, reduceRange } from './reference_reductions.js';
import { encodeMessage } from '../../src/shared/protocol/codec.js';
import type { Transport } from '../../src/shared/protocol/transport.js';
import { bits, delay, memoryRing, memoryRingLinks, outcomes, rankGradients } from './ring_helpers.js';

/** Runs one all-reduce on every rank of `ring`, each rank starting after its own delay; returns the results. */
async function runAll(ring: RingAllReduce[], op: number, grads: Float32Array[], count: number, delays?: number[]): Promise<Float32Array[]> {
  return Promise.all(
    ring.map(async (r, k) => {
      if (delays) await delay(delays[k]);
      return r.allreduce(op, grads[k], count);
    }),
  );
}

test("ring over in-memory links: every rank ends with ringAverage's bits, for 1-5 ranks, sizes below, at and off multiples of N, and several pieces", async () => {
  for (const n of [1, 2, 3, 4, 5]) {
    for (const size of [1, 2, 3, 7, 10, 37, 1001]) {
      for (const bucketElems of [1, 4, 1000]) {
        if (bucketElems === 1 && size > 40) continue;
        const grads = rankGradients(n, size, size + n);
        const expect = ringAverage(grads, 3 * n + 1);
        const ring = memoryRing(n, bucketElems);
        const out = await runAll(
          ring,
          7,
          grads.map((g) => g.slice()),
          3 * n + 1,
        );
        for (let k = 0; k < n; k++) assert.deepEqual(bits(out[k]), bits(expect), `n=${n} size=${size} bucket=${bucketElems} rank ${k}`);
        for (const r of ring) r.close();
      }
    }
  }
});

test('the bits depend on (N, rank order) only: ranks starting at different times, and a second run, give the same result', async () => {
  const n = 4;
  const grads = rankGradients(n, 999, 3);
  const results: Uint32Array[] = [];
  for (const delays of [
    [0, 0, 0, 0],
    [30, 0, 10, 20],
    [0, 25, 5, 15],
  ]) {
    const ring = memoryRing(n, 16);
    const out = await runAll(
      ring,
      1,
      grads.map((g) => g.slice()),
      100,
      delays,
    );
    for (const o of out) results.push(bits(o).slice());
    for (const r of ring) r.close();
  }
  for (const r of results) assert.deepEqual(r, results[0]);
  assert.deepEqual(results[0], bits(ringAverage(grads, 100)));
});

test('consecutive all-reduces on one ring, ranks racing ahead of each other between them', async () => {
  const n = 3;
  const ring = memoryRing(n, 5);
  for (let op = 10; op < 15; op++) {
    const grads = rankGradients(n, 23 + op, op);
    const out = await Promise.all(
      ring.map(async (r, k) => {
        await delay(((op + k) % 3) * 5);
        return r.allreduce(op, grads[k].slice(), op);
      }),
    );
    for (const o of out) assert.deepEqual(bits(o), bits(ringAverage(grads, op)));
  }
  for (const r of ring) r.close();
});

test('ring and the star (fixed worker order, reduceRange) agree within 1e-6 relative', async () => {
  for (const n of [2, 3, 5]) {
    const size = 4099;
    const grads = rankGradients(n, size, 17);
    const star = new Float32Array(size);
    reduceRange(grads, star, 0, size, 256);
    const ring = memoryRing(n, 512);
    const out = await runAll(
      ring,
      0,
      grads.map((g) => g.slice()),
      256,
    );
    let differ = 0;
    for (let i = 0; i < size; i++) {
      // Relative to the magnitude of the terms: a sum that cancels to near zero has no relative precision to keep.
      let scale = 0;
      for (const g of grads) scale += Math.abs(g[i]);
      assert.ok(Math.abs(out[0][i] - star[i]) <= 1e-6 * (scale / 256), `n=${n} element ${i}: ring ${out[0][i]}, star ${star[i]}`);
      if (out[0][i] !== star[i]) differ++;
    }
    // The orders do differ (else the test would not compare two summations).
    if (n > 2) assert.ok(differ > 0);
    for (const r of ring) r.close();
  }
});

/** A transport that lets a test rewrite the `nth` chunk frame (1-based) a rank sends. */
function tamperNth(nth: number, edit: (m: RingMessage & { type: 'ring_chunk' }) => Uint8Array): (rank: number, t: Transport) => Transport {
  return (rank, t) => {
    if (rank !== 0) return t;
    let chunks = 0;
    return {
      remote: t.remote,
      send: (frame) => {
        const m = decodeRingMessage(frame);
        if (m.type === 'ring_chunk' && ++chunks === nth) t.send(edit(m));
        else t.send(frame);
      },
      onFrame: (fn) => t.onFrame(fn),
      onClose: (fn) => t.onClose(fn),
      close: (r) => t.close(r),
    };
  };
}

const nan = (m: RingMessage & { type: 'ring_chunk' }) => {
  const v = new Float32Array(m.data.data.byteLength / 4);
  new Uint8Array(v.buffer).set(m.data.data);
  v[v.length - 1] = NaN;
  return encodeRingMessage({ ...m, data: { ...m.data, data: new Uint8Array(v.buffer) } });
};

const BAD_FRAMES: [string, number, (m: RingMessage & { type: 'ring_chunk' }) => Uint8Array, string][] = [
  ['one value short', 2, (m) => encodeRingMessage({ ...m, data: { ...m.data, shape: [m.data.shape[0] - 1], data: m.data.data.subarray(4) } }), 'BAD_BUCKET'],
  ['a NaN (reduce-scatter)', 1, nan, 'NON_FINITE'],
  ['a NaN (all-gather)', 7, nan, 'NON_FINITE'],
  ['another all-reduce id', 3, (m) => encodeRingMessage({ ...m, op: m.op + 1 }), 'PROTOCOL'],
  ['a step out of place', 1, (m) => encodeRingMessage({ ...m, step: m.step + 1 }), 'PROTOCOL'],
  ['a piece out of place', 1, (m) => encodeRingMessage({ ...m, piece: m.piece + 1 }), 'PROTOCOL'],
  ['float16 values', 1, (m) => encodeRingMessage({ ...m, data: { dtype: 'float16', shape: [m.data.shape[0] * 2], data: m.data.data } }), 'BAD_BUCKET'],
  ['bytes that are not msgpack', 1, () => Uint8Array.of(0xc1, 1, 2), 'BAD_MESSAGE'],
  ['a coordinator message', 1, () => encodeMessage({ type: 'heartbeat', t: 1 }), 'BAD_MESSAGE'],
  ['a ring_ready on the chunk direction', 1, (m) => encodeRingMessage({ type: 'ring_ready', op: m.op, elems: 60, count: 9 }), 'PROTOCOL'],
];

for (const [what, nth, edit, code] of BAD_FRAMES) {
  test(`a chunk with ${what} fails the all-reduce with ${code} on its receiver, WORKER_LOST or the right bits on the others, no hang`, async () => {
    const n = 3;
    const grads = rankGradients(n, 60, 5);
    const expect = bits(ringAverage(grads, 9));
    const ring = memoryRing(n, 8, 60000, tamperNth(nth, edit));
    const got = await outcomes(ring.map((r, k) => r.allreduce(1, grads[k].slice(), 9)));
    assert.equal(got[1], code);
    assert.equal(got[2], 'WORKER_LOST');
    // The sender of the bad chunk (rank 0) may have everything it needs before the failure reaches it: a rank's
    // success does not mean the ring's, the caller commits a step only when every rank succeeded.
    assert.ok(got[0] === 'WORKER_LOST' || (got[0] instanceof Float32Array && bits(got[0]).every((b, i) => b === expect[i])), String(got[0]));
    // The ring is broken for good: the caller re-forms it.
    assert.equal((await outcomes([ring[2].allreduce(2, grads[2].slice(), 9)]))[0], 'WORKER_LOST');
  });
}

test('ranks disagreeing on the vector length (BAD_LAYOUT) or the sample count (BAD_ANSWER) fail', async () => {
  for (const [sizes, counts, code] of [
    [[10, 10, 11], [5, 5, 5], 'BAD_LAYOUT'],
    [[10, 10, 10], [5, 6, 5], 'BAD_ANSWER'],
  ] as const) {
    const ring = memoryRing(3, 4);
    const got = await outcomes(ring.map((r, k) => r.allreduce(0, new Float32Array(sizes[k]), counts[k])));
    assert.ok(got.includes(code), String(got));
    assert.ok(
      got.every((g) => g === code || g === 'WORKER_LOST'),
      String(got),
    );
  }
});

test('a rank that never starts: the others fail with PEER_TIMEOUT or WORKER_LOST within the timeout', async () => {
  const ring = memoryRing(4, 4, 200);
  const grads = rankGradients(4, 40, 1);
  const got = await outcomes([0, 1, 3].map((k) => ring[k].allreduce(0, grads[k], 4)));
  assert.ok(got.includes('PEER_TIMEOUT'), String(got));
  assert.ok(
    got.every((g) => g === 'PEER_TIMEOUT' || g === 'WORKER_LOST'),
    String(got),
  );
});

test("a link closed mid-ring fails every rank's all-reduce with WORKER_LOST", async () => {
  const links = memoryRingLinks(3);
  let chunks = 0;
  // Rank 1's incoming link dies after its first chunk arrived.
  links[1]!.prev.onFrame((f) => {
    if (decodeRingMessage(f).type === 'ring_chunk' && ++chunks === 1) links[1]!.prev.close('peer killed');
  });
  const ring = links.map((l, rank) => new RingAllReduce(l, { rank, size: 3, bucketElems: 2, timeoutMs: 60000 }));
  const grads = rankGradients(3, 30, 2);
  const got = await outcomes(ring.map((r, k) => r.allreduce(0, grads[k], 3)));
  assert.deepEqual(got, ['WORKER_LOST', 'WORKER_LOST', 'WORKER_LOST']);
});

test('misuse (a bug of the caller) is refused with INTERNAL: overlapping all-reduces, ids that do not increase, a bad count; bad options throw', async () => {
  const ring = memoryRing(2, 4);
  const a = ring[0].allreduce(5, new Float32Array(8), 2);
  assert.equal((await outcomes([ring[0].allreduce(6, new Float32Array(8), 2)]))[0], 'INTERNAL');
  await ring[1].allreduce(5, new Float32Array(8), 2);
  await a;
  assert.equal((await outcomes([ring[0].allreduce(5, new Float32Array(8), 2)]))[0], 'INTERNAL');
  assert.equal((await outcomes([ring[0].allreduce(9, new Float32Array(8), 0)]))[0], 'INTERNAL');
  assert.throws(() => new RingAllReduce(null, { rank: 0, size: 2, bucketElems: 4, timeoutMs: 1 }), { code: 'INTERNAL' });
  assert.throws(() => new RingAllReduce(null, { rank: 1, size: 1, bucketElems: 4, timeoutMs: 1 }), { code: 'INTERNAL' });
  assert.throws(() => new RingAllReduce(null, { rank: 0, size: 1, bucketElems: 2 ** 30, timeoutMs: 1 }), { code: 'INTERNAL' });
  for (const r of ring) r.close();
});

test("an infinity in a rank's own gradient fails its all-reduce with NON_FINITE and the ring with it", async () => {
  const ring = memoryRing(3, 4);
  const grads = rankGradients(3, 12, 4);
  grads[2][5] = Infinity;
  const got = await outcomes(ring.map((r, k) => r.allreduce(0, grads[k], 3)));
  // Found in the first sum that holds it: rank 2's own sum (element 5 is in segment 1, which rank 2 adds to).
  assert.deepEqual(got, ['WORKER_LOST', 'WORKER_LOST', 'NON_FINITE']);
});

test('every chunk frame is sent with a `sent` callback (its buffer goes back to the frame pool), passed on by a HandshakeTransport', async () => {
  let chunks = 0;
  let withSent = 0;
  const watch = (_rank: number, t: Transport): Transport => {
    const h = new HandshakeTransport(t);
    return {
      remote: h.remote,
      send: (frame, sent) => {
        const chunk = decodeRingMessage(frame).type === 'ring_chunk';
        if (chunk) chunks++;
        // Counted when the in-memory transport under the HandshakeTransport calls it back.
        h.send(frame, sent && (() => ((withSent += chunk ? 1 : 0), sent())));
      },
      onFrame: (fn) => h.onFrame(fn),
      onClose: (fn) => h.onClose(fn),
      close: (r) => h.close(r),
    };
  };
  const n = 3;
  const grads = rankGradients(n, 100, 8);
  const ring = memoryRing(n, 7, 20000, watch);
  const out = await runAll(
    ring,
    0,
    grads.map((g) => g.slice()),
    5,
  );
  for (const o of out) assert.deepEqual(bits(o), bits(ringAverage(grads, 5)));
  assert.ok(chunks > 0 && withSent === chunks, `${withSent} of ${chunks}`);
  for (const r of ring) r.close();
});

test('pieces are at most 1 MiB of float32 whatever the bucket size; the bits stay those of ringAverage', async () => {
  let largest = 0;
  let frames = 0;
  const watch = (_rank: number, t: Transport): Transport => ({
    remote: t.remote,
    send: (frame, sent) => {
      const m = decodeRingMessage(frame);
      if (m.type === 'ring_chunk') {
        frames++;
        largest = Math.max(largest, m.data.data.byteLength);
      }
      t.send(frame, sent);
    },
    onFrame: (fn) => t.onFrame(fn),
    onClose: (fn) => t.onClose(fn),
    close: (r) => t.close(r),
  });
  const n = 2;
  // Segments of 550,001 and 550,000 values: 3 pieces each, with 16 Mi-element buckets.
  const grads = rankGradients(n, 1_100_001, 9);
  const ring = memoryRing(n, 16 * 1024 * 1024, 60000, watch);
  const out = await runAll(
    ring,
    0,
    grads.map((g) => g.slice()),
    3,
  );
  const expect = bits(ringAverage(grads, 3));
  for (const o of out) assert.deepEqual(bits(o), expect);
  assert.equal(largest, 1024 * 1024);
  // Each rank sends 3 pieces in each phase's one step.
  assert.equal(frames, n * 2 * 3);
  for (const r of ring) r.close();
});
