import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { before, test } from 'node:test';
import { WebSocket } from 'ws';
import { coordinatorFor } from '../../src/coordinator/in_process.js';
import { GdpError } from '../../src/shared/errors.js';
import { listenWs, type ListenOptions } from '../../src/shared/protocol/ws_listener.js';
import { connectWs, type ConnectOptions } from '../../src/shared/protocol/ws_transport.js';
import { WorkerSession } from '../../src/worker/session.js';
import { hasOpenssl, withSelfSignedCert } from '../tls_cert.js';
import { coord, worker } from './cli_helpers.js';
import { noLog, setup, tinyConfig, tinyData } from './helpers.js';

before(setup);

const SGD = { lr: 0.1, momentum: 0.9, weightDecay: 5e-4, nesterov: false };
const TOKEN = randomBytes(16).toString('hex');
const batch = (s: number) => Int32Array.from({ length: 8 }, (_, i) => (s * 29 + i * 13) % 256);

/** A coordinator on 127.0.0.1 with these listener options, and a helper to attach in-test workers to it. */
async function cluster(opts: ListenOptions) {
  const lines: string[] = [];
  const coordinator = coordinatorFor(tinyConfig(), (l) => lines.push(l));
  const listener = await listenWs('127.0.0.1', 0, (t) => coordinator.accept(t), { ...opts, log: (l) => lines.push(l) });
  const url = `${listener.scheme}://127.0.0.1:${listener.port}`;
  const sessions: Promise<unknown>[] = [];
  return {
    coordinator,
    listener,
    url,
    lines,
    async join(id: string, c: ConnectOptions): Promise<WorkerSession> {
      const s = new WorkerSession(await connectWs(url, c), { workerId: id, backend: 'cpu', gpu: null, host: 'test', pid: process.pid, loadData: tinyData, log: noLog });
      sessions.push(s.run().then(() => undefined, (e: unknown) => e));
      return s;
    },
    async close() {
      coordinator.shutdown('test done');
      const ends = await Promise.all(sessions);
      await listener.close();
      coordinator.model.dispose();
      return ends;
    },
  };
}

/** Everything a raw TCP client receives for a WebSocket upgrade request with this Authorization header. */
function rawUpgrade(port: number, auth?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const t = setTimeout(() => sock.destroy(), 5000);
    sock.on('connect', () =>
      sock.write(
        `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${auth !== undefined ? `Authorization: ${auth}\r\n` : ''}\r\n`,
      ),
    );
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('close', () => {
      clearTimeout(t);
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
    sock.on('error', reject);
  });
}

test('without the token a client receives nothing but a refusal; with it a worker trains', async () => {
  const c = await cluster({ token: TOKEN });
  try {
    const w = await c.join('w', { token: TOKEN });
    await c.coordinator.waitForWorkers(1, 30000);
    await c.coordinator.step(batch(0), 'all', SGD);
    const before = c.coordinator.replica.checksum('parameters');
    const attempts = [undefined, 'Bearer ', 'Bearer wrong', `Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(1)}`, `Basic ${TOKEN}`, `bearer ${TOKEN}`];
    for (const auth of attempts) {
      const got = await rawUpgrade(c.listener.port, auth);
      const [head, body] = got.split('\r\n\r\n');
      assert.match(head, /^HTTP\/1\.1 401 Unauthorized\r\n/, `${auth}: ${got}`);
      assert.equal(body, 'gdp: missing or wrong token\n', `nothing after the refusal (${auth})`);
    }
    await assert.rejects(connectWs(c.url), (e: unknown) => e instanceof GdpError && e.code === 'AUTH_REFUSED' && /missing or wrong token/.test(e.message));
    await assert.rejects(connectWs(c.url, { token: 'x'.repeat(32) }), (e: unknown) => e instanceof GdpError && e.code === 'AUTH_REFUSED');
    const refusals = c.lines.filter((l) => /^refused a connection from 127\.0\.0\.1:\d+: missing or wrong token$/.test(l));
    assert.equal(refusals.length, attempts.length + 2);
    // None of them reached the coordinator: same workers, same state, training goes on.
    assert.deepEqual(c.coordinator.workerIds, ['w']);
    assert.equal(c.coordinator.replica.checksum('parameters'), before);
    await c.coordinator.step(batch(1), 'all', SGD);
    await c.coordinator.verifyChecksums();
    assert.equal(w.replica!.checksum('parameters'), c.coordinator.replica.checksum('parameters'));
  } finally {
    assert.deepEqual(await c.close(), [undefined]);
  }
});

test('--max-connections: one connection too many is refused with HTTP 503; a freed slot is taken again', async () => {
  const c = await cluster({ maxConnections: 2 });
  const open = (): Promise<WebSocket> =>
    new Promise((resolve, reject) => {
      const ws = new WebSocket(c.url);
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
    });
  try {
    const a = await open();
    const b = await open();
    await assert.rejects(connectWs(c.url), (e: unknown) => e instanceof GdpError && e.code === 'TOO_MANY_CONNECTIONS');
    assert.ok(c.lines.some((l) => /^refused a connection from 127\.0\.0\.1:\d+: 2 connections open \(--max-connections 2\)$/.test(l)), c.lines.join('\n'));
    const closed = new Promise((r) => a.once('close', r));
    a.close();
    await closed;
    // The server sees the close a moment later.
    let third: WebSocket | undefined;
    for (let i = 0; i < 50 && !third; i++) third = await open().catch(() => new Promise<undefined>((r) => setTimeout(() => r(undefined), 50)));
    assert.ok(third, 'a slot is free again');
    third.close();
    b.close();
  } finally {
    await c.close();
  }
});

test('TLS: a worker trusting the certificate trains over wss://; others cannot connect', { skip: !hasOpenssl && 'openssl not found: no certificate to test TLS with' }, async () => {
  await withSelfSignedCert(async (pem) => {
    const c = await cluster({ token: TOKEN, tls: pem });
    try {
      assert.equal(c.listener.scheme, 'wss');
      const w = await c.join('w', { token: TOKEN, ca: pem.cert });
      await c.coordinator.waitForWorkers(1, 30000);
      for (let s = 0; s < 2; s++) await c.coordinator.step(batch(s), 'all', SGD);
      await c.coordinator.verifyChecksums();
      assert.equal(w.replica!.checksum('parameters'), c.coordinator.replica.checksum('parameters'));
      // Without the certificate: not trusted. Plain ws:// to the TLS port: no WebSocket either.
      await assert.rejects(connectWs(c.url, { token: TOKEN }), (e: unknown) => e instanceof GdpError && e.code === 'CONNECT_FAILED' && /self[- ]signed/i.test(e.message));
      await assert.rejects(connectWs(c.url.replace('wss:', 'ws:'), { token: TOKEN, timeoutMs: 5000 }), (e: unknown) => e instanceof GdpError && e.code === 'CONNECT_FAILED');
      assert.deepEqual(c.coordinator.workerIds, ['w']);
    } finally {
      assert.deepEqual(await c.close(), [undefined]);
    }
  });
});

test('gdp-coord checks its network flags at start (even with --dry-run), with exit code 2', async () => {
  const env = { ...process.env };
  delete env.GDP_TOKEN;
  const base = ['--workers', '2', '--dry-run', '--set', 'stages=["train"]'];
  const cases: [string[], NodeJS.ProcessEnv, RegExp][] = [
    [['--listen', '0.0.0.0:7070'], env, /BAD_FLAG.*--listen 0\.0\.0\.0:7070 is reachable from other machines: set a shared token with --token or GDP_TOKEN/],
    [['--listen', '192.168.1.10:7070', '--token', 'short'], env, /BAD_FLAG.*at least 16 characters/],
    [['--cert', '/nonexistent/cert.pem'], env, /BAD_FLAG.*--cert and --key go together/],
    [['--cert', '/nonexistent/cert.pem', '--key', '/nonexistent/key.pem'], env, /BAD_FLAG.*--cert \/nonexistent\/cert\.pem: ENOENT/],
    [['--min-workers', '3'], env, /BAD_FLAG.*--min-workers 3 is more than --workers 2/],
  ];
  for (const [args, e, expected] of cases) {
    const r = await coord([...base, ...args], 30000, undefined, e);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.out}${r.err}`);
    assert.match(r.err, expected);
  }
  const ok = await coord([...base, '--listen', '0.0.0.0:7070'], 30000, undefined, { ...env, GDP_TOKEN: TOKEN });
  assert.equal(ok.code, 0, ok.err);
});

test('gdp-worker with a wrong token is refused and exits with code 2', async () => {
  const c = await cluster({ token: TOKEN });
  try {
    const r = await worker(['--connect', c.url, '--backend', 'cpu'], 60000, { ...process.env, GDP_TOKEN: 'y'.repeat(32) });
    assert.equal(r.code, 2, r.out + r.err);
    assert.match(r.err, /error \[AUTH_REFUSED\]: the coordinator at ws:\/\/127\.0\.0\.1:\d+ refused the connection: missing or wrong token/);
    const ca = await worker(['--connect', c.url, '--backend', 'cpu', '--ca', '/nonexistent.pem'], 60000);
    assert.equal(ca.code, 2);
    assert.match(ca.err, /BAD_FLAG.*--ca is for wss:\/\/ coordinators/);
    assert.deepEqual(c.coordinator.workerIds, []);
  } finally {
    await c.close();
  }
});
