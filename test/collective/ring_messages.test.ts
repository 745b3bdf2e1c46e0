import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeRingMessage, encodeRingMessage, RING_PROTOCOL_VERSION } from '../../src/shared/collective/ring_messages.js';
import { decodeMessage, encodeMessage } from '../../src/shared/protocol/codec.js';
import { toWire } from '../../src/shared/protocol/tensor.js';

test("ring messages round-trip; a chunk's values travel as binary", () => {
  const v = new Float32Array([1, -2, 3.5]);
  const m = decodeRingMessage(encodeRingMessage({ type: 'ring_chunk', op: 4, phase: 'all_gather', step: 1, piece: 0, data: toWire(v) }));
  assert.equal(m.type, 'ring_chunk');
  assert.ok(m.type === 'ring_chunk' && m.data.data instanceof Uint8Array && m.data.data.byteLength === 12);
  assert.deepEqual(decodeRingMessage(encodeRingMessage({ type: 'ring_hello', protocol: RING_PROTOCOL_VERSION, ring: 2, rank: 1, size: 3 })), {
    type: 'ring_hello',
    protocol: RING_PROTOCOL_VERSION,
    ring: 2,
    rank: 1,
    size: 3,
  });
});

test("a ring link refuses coordinator messages and the coordinator's codec refuses ring messages (BAD_MESSAGE)", () => {
  for (const m of [
    { type: 'heartbeat', t: 1 },
    { type: 'checksum_request', seq: 1 },
  ] as const) {
    assert.throws(() => decodeRingMessage(encodeMessage(m)), { code: 'BAD_MESSAGE' });
  }
  for (const m of [
    { type: 'ring_ready', op: 1, elems: 3, count: 2 },
    { type: 'ring_accept', ring: 1 },
  ] as const) {
    assert.throws(() => decodeMessage(encodeRingMessage(m)), { code: 'BAD_MESSAGE' });
  }
});

test('malformed ring messages are BAD_MESSAGE: negative ids, unknown phase, a tensor whose bytes do not match its shape', () => {
  const good = { type: 'ring_chunk', op: 1, phase: 'reduce_scatter', step: 0, piece: 0, data: toWire(new Float32Array(2)) } as const;
  const bad = [
    { ...good, op: -1 },
    { ...good, phase: 'broadcast' },
    { ...good, step: 0.5 },
    { ...good, data: { ...good.data, shape: [3] } },
    { type: 'ring_ready', op: 1, elems: 3, count: 0 },
  ];
  for (const m of bad) assert.throws(() => decodeRingMessage(encodeRingMessage(m as never)), { code: 'BAD_MESSAGE' }, JSON.stringify(m));
});
