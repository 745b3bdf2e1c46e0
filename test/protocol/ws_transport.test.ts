import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import { WebSocket } from 'ws';
import type { Transport } from '../../src/shared/protocol/transport.js';
import { listenWs } from '../../src/shared/protocol/ws_listener.js';

test('closing the listener lets a client that is behind read what was sent before the close (its last frames are not reset away)', async () => {
  let server: Transport | undefined;
  const listener = await listenWs('127.0.0.1', 0, (t) => (server = t));
  const client = new WebSocket(`ws://127.0.0.1:${listener.port}`);
  const got: number[] = [];
  client.on('message', (d: Buffer) => got.push(d.length));
  const closed = once(client, 'close');
  await once(client, 'open');
  while (!server) await new Promise((resolve) => setTimeout(resolve, 5));
  // A worker busy computing reads nothing: what the coordinator sends last (a 'shutdown') waits in its buffers.
  client.pause();
  const big = new Uint8Array(16 << 20);
  server.send(big);
  server.send(big);
  server.send(Uint8Array.of(1, 2, 3));
  server.close('shutdown');
  const closing = listener.close();
  setTimeout(() => client.resume(), 300);
  await closing;
  const [code] = (await closed) as [number];
  assert.deepEqual(got, [big.length, big.length, 3]);
  assert.equal(code, 1000);
});
