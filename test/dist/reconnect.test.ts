import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import type { Coordinator } from '../../src/coordinator/cluster.js';
import { coordinatorFor } from '../../src/coordinator/in_process.js';
import { GdpError } from '../../src/shared/errors.js';
import { memoryPair, type Transport } from '../../src/shared/protocol/transport.js';
import { PROTOCOL_VERSION } from '../../src/shared/protocol/version.js';
import { Reconnector } from '../../src/worker/reconnect.js';
import { WorkerSession } from '../../src/worker/session.js';
import { noLog, setup, tinyConfig, tinyData } from './helpers.js';

before(setup);

const SGD = { lr: 0.1, momentum: 0.9, weightDecay: 5e-4, nesterov: false };

/** A worker whose connections go to whichever coordinator is `up` (none: the connection is refused). */
function worker(target: { up?: Coordinator; links: Transport[] }, opts: { retryForMs?: number; protocol?: number } = {}) {
  const lines: string[] = [];
  let connects = 0;
  const r = new Reconnector({
    url: 'memory:coordinator',
    connect: async () => {
      connects++;
      if (!target.up) throw new GdpError('CONNECT_FAILED', 'connection refused');
      const [c, w] = memoryPair(['memory:coordinator', 'memory:w']);
      target.links.push(c);
      target.up.accept(c);
      return w;
    },
    session: (t) => new WorkerSession(t, { workerId: 'w', backend: 'cpu', gpu: null, host: 'test', pid: process.pid, loadData: tinyData, protocol: opts.protocol, log: noLog }),
    retryForMs: opts.retryForMs ?? 10000,
    minDelayMs: 50,
    maxDelayMs: 100,
    log: (l) => lines.push(l),
  });
  return { r, lines, connects: () => connects };
}

test('a worker whose coordinator vanishes (no shutdown) reconnects with back-off to its successor, which it then serves', async () => {
  const target: { up?: Coordinator; links: Transport[] } = { links: [] };
  const first = coordinatorFor(tinyConfig(), noLog);
  target.up = first;
  const w = worker(target);
  const done = w.r.run();
  await first.waitForWorkers(1, 10000);
  await first.step(Int32Array.of(0, 1, 2, 3), 'all', SGD);

  // Killed: its connection drops without a 'shutdown', and nothing listens for a while.
  target.up = undefined;
  for (const l of target.links) l.close('coordinator killed');
  await new Promise((resolve) => setTimeout(resolve, 250));

  // The successor holds other state (one more step): the worker's fresh session must take it whole.
  const next = coordinatorFor(tinyConfig(), noLog);
  next.restore({ updates: [], slots: new Map([...first.model.namedSlots()].map(([n, s]) => [n, s.value.dataSync() as Float32Array])), momentum: first.replica.momentumState(), steps: first.steps });
  target.up = next;
  await next.waitForWorkers(1, 10000);
  await next.step(Int32Array.of(4, 5, 6, 7), 'all', SGD);
  await next.verifyChecksums();
  assert.equal(next.steps, 2);
  next.shutdown('run finished');
  await done;

  assert.match(w.lines[0], /connection to the coordinator closed: coordinator killed; reconnecting to memory:coordinator in 0\.1 s \(retry 1, giving up in 10 s\)/);
  assert.ok(w.lines.some((l) => /connection refused; .* \(retry 2,/.test(l)), w.lines.join('\n'));
  assert.ok(w.connects() >= 3);
  first.shutdown('test over');
});

test('a refusal that cannot change (protocol version) ends the worker at once', async () => {
  const c = coordinatorFor(tinyConfig(), noLog);
  const w = worker({ up: c, links: [] }, { protocol: PROTOCOL_VERSION + 1 });
  await assert.rejects(w.r.run(), (e: unknown) => e instanceof GdpError && e.code === 'PROTOCOL_VERSION');
  assert.equal(w.connects(), 1);
  assert.deepEqual(w.lines, []);
  c.shutdown('test over');
});

test('with no coordinator, the worker gives up after --retry-for', async () => {
  const w = worker({ links: [] }, { retryForMs: 300 });
  const t0 = Date.now();
  await assert.rejects(w.r.run(), (e: unknown) => e instanceof GdpError && e.code === 'CONNECT_FAILED' && /gave up after retrying/.test(e.message));
  assert.ok(Date.now() - t0 >= 300);
  assert.ok(w.connects() >= 4, `${w.connects()} attempts`);
});

test('stop() during the back-off ends the worker without another attempt', async () => {
  const w = worker({ links: [] });
  const done = w.r.run();
  await new Promise((resolve) => setTimeout(resolve, 20));
  w.r.stop('worker received SIGTERM');
  await assert.rejects(done, (e: unknown) => e instanceof GdpError && e.code === 'CONNECT_FAILED');
  assert.equal(w.connects(), 1);
});
