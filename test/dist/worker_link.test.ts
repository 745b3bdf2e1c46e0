import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WorkerLink, type Hello } from '../../src/coordinator/worker_link.js';
import { GdpError } from '../../src/shared/errors.js';
import type { Message } from '../../src/shared/protocol/messages.js';
import { Peer } from '../../src/shared/protocol/peer.js';
import { memoryPair } from '../../src/shared/protocol/transport.js';

const HELLO: Hello = { type: 'hello', protocol: 1, workerId: 'w0', backend: 'cpu', gpu: null, host: 'test', pid: 1 };
const opts = { name: 'test end', heartbeatMs: 50, timeoutMs: 5000, log: () => {} };
const tick = () => new Promise((r) => setTimeout(r, 20));

/** A link on one end of an in-memory pair, and what reaches the other end. */
function linked() {
  const [a, b] = memoryPair(['memory:coordinator', 'memory:w0']);
  const link = new WorkerLink(new Peer(a, opts), HELLO, 5000, 5000);
  const far = new Peer(b, opts);
  const got: Message[] = [];
  far.onMessage((m) => got.push(m));
  return { link, far, got };
}

test('WorkerLink numbers its requests itself and pairs answers that arrive out of order', async () => {
  const { link, far, got } = linked();
  const first = link.request('checksum', (seq) => [{ type: 'checksum_request', seq }]);
  const second = link.request('evaluated', (seq) => [{ type: 'evaluate', seq, indices: { dtype: 'int32', shape: [0], data: new Uint8Array(0) }, batchSize: 4 }]);
  await tick();
  assert.deepEqual(
    got.map((m) => [m.type, (m as { seq: number }).seq]),
    [
      ['checksum_request', 1],
      ['evaluate', 2],
    ],
  );
  const stats = { lossSum: 0, correct1: 0, correct5: 0, count: 0 };
  far.send({ type: 'evaluated', seq: 2, stats });
  far.send({ type: 'checksum', seq: 1, checksum: '0123456789abcdef' });
  assert.equal((await first).checksum, '0123456789abcdef');
  assert.deepEqual((await second).stats, stats);
  // A follow-up names the request it completes; otherwise it gets the next number.
  link.post((seq) => [{ type: 'checksum_request', seq }], 1);
  link.post((seq) => [{ type: 'checksum_request', seq }]);
  await tick();
  assert.deepEqual(
    got.slice(2).map((m) => (m as { seq: number }).seq),
    [1, 3],
  );
  far.close();
});

test('an answer of the wrong type or number ends the connection; pending requests are rejected with WORKER_LOST', async () => {
  const { link, far } = linked();
  const pending = link.request('ack', (seq) => [{ type: 'checksum_request', seq }]);
  await tick();
  far.send({ type: 'checksum', seq: 1, checksum: '0123456789abcdef' });
  await assert.rejects(pending, (err: GdpError) => err.code === 'WORKER_LOST' && /PROTOCOL: unexpected 'checksum' for request 1/.test(err.message));
  assert.ok(link.closed);
  await assert.rejects(
    link.request('checksum', (seq) => [{ type: 'checksum_request', seq }]),
    (err: GdpError) => err.code === 'WORKER_LOST',
  );
});
