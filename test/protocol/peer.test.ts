import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GdpError } from '../../src/shared/errors.js';
import type { Message } from '../../src/shared/protocol/messages.js';
import { Peer } from '../../src/shared/protocol/peer.js';
import { memoryPair } from '../../src/shared/protocol/transport.js';

const opts = (log: string[]) => ({ name: 'other end', heartbeatMs: 20, timeoutMs: 1000, log: (l: string) => log.push(l) });

test('validated messages flow both ways in order over the in-memory pair; heartbeats stay inside', async () => {
  const [a, b] = memoryPair();
  const pa = new Peer(a, opts([]));
  const pb = new Peer(b, opts([]));
  const got: Message[] = [];
  pb.onMessage((m) => got.push(m));
  for (let seq = 1; seq <= 5; seq++) pa.send({ type: 'checksum_request', seq });
  await new Promise((r) => setTimeout(r, 80));
  assert.deepEqual(
    got.map((m) => (m as { seq: number }).seq),
    [1, 2, 3, 4, 5],
  );
  pa.close();
  await new Promise((r) => setTimeout(r, 10));
  assert.ok(pa.closed && pb.closed);
});

test('a garbage frame closes the connection with a logged error; the handler never sees it', async () => {
  const [a, b] = memoryPair(['memory:a', 'memory:evil']);
  const log: string[] = [];
  const pa = new Peer(a, opts(log));
  const seen: Message[] = [];
  pa.onMessage((m) => seen.push(m));
  const closed = new Promise<GdpError | undefined>((r) => pa.onClose((_reason, err) => r(err)));
  b.send(Uint8Array.of(1, 2, 3, 0xc1));
  const err = await closed;
  assert.equal(err?.code, 'BAD_MESSAGE');
  assert.deepEqual(seen, []);
  assert.match(log.join('\n'), /error: other end: BAD_MESSAGE: .*closing the connection/);
});

test('a handler that rejects a message ends the connection; silence past the timeout too', async () => {
  const [a, b] = memoryPair();
  const pa = new Peer(a, opts([]));
  const pb = new Peer(b, opts([]));
  pa.onMessage(() => {
    throw new GdpError('PROTOCOL', 'not now');
  });
  const closed = new Promise<string | undefined>((r) => pa.onClose((_r, e) => r(e?.code)));
  pb.send({ type: 'bn_request', seq: 1 });
  assert.equal(await closed, 'PROTOCOL');

  // Peers' timers do not hold the process open (the socket does); this test has no socket.
  const keepAlive = setInterval(() => {}, 10);
  const [c] = memoryPair();
  const pc = new Peer(c, { ...opts([]), timeoutMs: 50 });
  const timedOut = new Promise<string | undefined>((r) => pc.onClose((_r, e) => r(e?.code)));
  assert.equal(await timedOut, 'PEER_TIMEOUT');
  clearInterval(keepAlive);
});

test('the in-memory pair delivers a copy: a frame written to after its send (a reused buffer) arrives as sent', async () => {
  const [a, b] = memoryPair();
  const got: number[][] = [];
  b.onFrame((f) => got.push([...f]));
  // A Buffer, as the codec's frames are: its slice() would be a view.
  const frame = Buffer.from([1, 2, 3]);
  let sent = 0;
  a.send(frame, () => sent++);
  frame.fill(9);
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(got, [[1, 2, 3]]);
  assert.equal(sent, 1);
});
