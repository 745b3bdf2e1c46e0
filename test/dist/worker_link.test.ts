import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RequestNumbers, WorkerLink, type Hello } from '../../src/coordinator/worker_link.js';
import { GdpError } from '../../src/shared/errors.js';
import type { Message } from '../../src/shared/protocol/messages.js';
import { Peer } from '../../src/shared/protocol/peer.js';
import { memoryPair } from '../../src/shared/protocol/transport.js';

const HELLO: Hello = { type: 'hello', protocol: 1, workerId: 'w0', backend: 'cpu', gpu: null, host: 'test', pid: 1 };
const opts = { name: 'test end', heartbeatMs: 50, timeoutMs: 5000, log: () => {} };
const tick = () => new Promise((r) => setTimeout(r, 20));

/** A link on one end of an in-memory pair, and what reaches the other end. */
function linked(numbers?: RequestNumbers) {
  const [a, b] = memoryPair(['memory:coordinator', 'memory:w0']);
  const link = new WorkerLink(new Peer(a, opts), HELLO, 5000, 5000, numbers);
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

test("'failed' and 'non_finite' answers reject their request and keep the connection; other codes or requests end it", async () => {
  const { link, far } = linked();
  const evaluate = (seq: number): Message[] => [{ type: 'evaluate', seq, indices: { dtype: 'int32', shape: [0], data: new Uint8Array(0) }, batchSize: 4 }];
  const tooLarge = link.request('evaluated', evaluate);
  const nonFinite = link.request('evaluated', evaluate);
  await tick();
  far.send({ type: 'failed', seq: 1, code: 'BATCH_TOO_LARGE', message: 'a shard of 9 samples needs 5 GiB' });
  far.send({ type: 'non_finite', seq: 2, what: 'loss' });
  await assert.rejects(tooLarge, (err: GdpError) => err.code === 'BATCH_TOO_LARGE' && err.message === 'worker w0: a shard of 9 samples needs 5 GiB');
  await assert.rejects(nonFinite, (err: GdpError) => err.code === 'NON_FINITE' && err.message === "worker w0: its shard's loss is not finite");
  assert.ok(!link.closed);
  // Only BATCH_TOO_LARGE may be answered so: any other code would let a worker stop the run as it pleases.
  const other = link.request('evaluated', evaluate);
  await tick();
  far.send({ type: 'failed', seq: 3, code: 'BAD_CONFIG', message: 'no' });
  await assert.rejects(other, (err: GdpError) => err.code === 'WORKER_LOST' && /PROTOCOL: 'failed' answers may carry BATCH_TOO_LARGE, got 'BAD_CONFIG'/.test(err.message));
  assert.ok(link.closed);
  // 'non_finite' answers only compute and evaluate requests.
  const second = linked();
  const checksum = second.link.request('checksum', (seq) => [{ type: 'checksum_request', seq }]);
  await tick();
  second.far.send({ type: 'non_finite', seq: 1, what: 'gradient' });
  await assert.rejects(checksum, (err: GdpError) => err.code === 'WORKER_LOST' && /PROTOCOL: unexpected 'non_finite' for request 1/.test(err.message));
  far.close();
  second.far.close();
});

test('links sharing one RequestNumbers never reuse a number; a step may give them all the same one', async () => {
  const numbers = new RequestNumbers();
  const [x, y] = [linked(numbers), linked(numbers)];
  const checksum = (seq: number): Message[] => [{ type: 'checksum_request', seq }];
  const pending = [x.link.request('checksum', checksum), y.link.request('checksum', checksum), x.link.request('checksum', checksum)];
  const step = numbers.take();
  pending.push(x.link.request('checksum', checksum, undefined, step), y.link.request('checksum', checksum, undefined, step));
  await tick();
  const seqs = (got: Message[]) => got.map((m) => (m as { seq: number }).seq);
  assert.deepEqual([seqs(x.got), seqs(y.got)], [
    [1, 3, 4],
    [2, 4],
  ]);
  // A number already pending on that link is refused: two answers could not be told apart.
  assert.throws(() => x.link.request('checksum', checksum, undefined, step), (e: unknown) => e instanceof GdpError && e.code === 'INTERNAL');
  for (const { far, got } of [x, y]) for (const seq of seqs(got)) far.send({ type: 'checksum', seq, checksum: '0123456789abcdef' });
  assert.equal((await Promise.all(pending)).length, 5);
  x.far.close();
  y.far.close();
});

test('the silence allowed while a shard is computed comes from earlier answers of the same kind only', async () => {
  const [a, b] = memoryPair(['memory:coordinator', 'memory:w0']);
  const stepTimeoutMs = 600_000;
  const heartbeatTimeoutMs = 1000;
  const link = new WorkerLink(new Peer(a, opts), HELLO, stepTimeoutMs, heartbeatTimeoutMs);
  const far = new Peer(b, opts);
  const stats = { lossSum: 0, correct1: 0, correct5: 0, count: 0 };
  const evaluate = (seq: number): Message[] => [{ type: 'evaluate', seq, indices: { dtype: 'int32', shape: [0], data: new Uint8Array(0) }, batchSize: 4 }];
  assert.equal(link.silenceLimitMs(), heartbeatTimeoutMs, 'nothing outstanding: heartbeats flow');
  const first = link.request('evaluated', evaluate);
  assert.equal(link.silenceLimitMs(), stepTimeoutMs, 'no evaluation answered yet: nothing says how long one takes');
  await tick();
  far.send({ type: 'evaluated', seq: 1, stats });
  await first;
  const second = link.request('evaluated', evaluate);
  assert.equal(link.silenceLimitMs(), heartbeatTimeoutMs, 'an evaluation took milliseconds: twice that is below the floor');
  // A quick evaluation says nothing about a training step's time (and a quick step nothing about an evaluation's).
  const compute = link.request('computed', (seq) => [{ type: 'checksum_request', seq }]);
  assert.equal(link.silenceLimitMs(), stepTimeoutMs);
  far.send({ type: 'evaluated', seq: 2, stats });
  await second;
  assert.equal(link.silenceLimitMs(), stepTimeoutMs);
  far.close();
  await assert.rejects(compute, (err: GdpError) => err.code === 'WORKER_LOST');
});
