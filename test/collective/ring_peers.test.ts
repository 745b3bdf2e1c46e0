import assert from 'node:assert/strict';
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'ws';
import { RingAllReduce } from '../../src/shared/collective/ring_allreduce.js';
import { decodeRingMessage } from '../../src/shared/collective/ring_messages.js';
import { RingEndpoint, type RingDialOptions } from '../../src/shared/collective/ring_peers.js';
import { ringAverage } from './reference_reductions.js';
import { encodeMessage } from '../../src/shared/protocol/codec.js';
import { connectWs } from '../../src/shared/protocol/ws_transport.js';
import { hasOpenssl, withSelfSignedCert } from '../tls_cert.js';
import { bits, outcomes, rankGradients } from './ring_helpers.js';

const TOKEN = 'ring-test-token-0123456789';
const DIAL: RingDialOptions = { token: TOKEN, timeoutMs: 10000 };

async function endpoints(n: number, opts: Parameters<typeof RingEndpoint.listen>[2] = { token: TOKEN }): Promise<RingEndpoint[]> {
  return Promise.all(Array.from({ length: n }, () => RingEndpoint.listen('127.0.0.1', 0, opts)));
}

/** `n` endpoints on 127.0.0.1 (with the token unless `opts` say otherwise) for `fn`, closed afterwards. */
async function withEndpoints(n: number, fn: (eps: RingEndpoint[]) => Promise<void>, opts?: Parameters<typeof RingEndpoint.listen>[2]): Promise<void> {
  const eps = await endpoints(n, opts);
  try {
    await fn(eps);
  } finally {
    await Promise.all(eps.map((e) => e.close()));
  }
}

/** Joins every endpoint into ring `ring` (rank = index) and builds the engines. */
async function formRing(eps: RingEndpoint[], ring: number, bucketElems: number, dial = DIAL): Promise<RingAllReduce[]> {
  const n = eps.length;
  const links = await Promise.all(eps.map((ep, rank) => ep.join({ ring, rank, size: n, prev: eps[(rank + n - 1) % n].url }, dial)));
  return links.map((l, rank) => new RingAllReduce(l, { rank, size: n, bucketElems, timeoutMs: 30000 }));
}

async function expectExact(ring: RingAllReduce[], op: number, size: number, seed: number, count: number): Promise<void> {
  const grads = rankGradients(ring.length, size, seed);
  const expect = bits(ringAverage(grads, count));
  const out = await Promise.all(ring.map((r, k) => r.allreduce(op, grads[k].slice(), count)));
  for (const o of out) assert.deepEqual(bits(o), expect);
}

test("ring over ws on 127.0.0.1 with a token: every rank ends with ringAverage's bits, over consecutive all-reduces", async () => {
  await withEndpoints(4, async (eps) => {
    const ring = await formRing(eps, 1, 1000);
    await expectExact(ring, 1, 10007, 1, 77);
    await expectExact(ring, 2, 3, 2, 5);
    for (const r of ring) r.close();
  });
});

test('a peer without the token gets HTTP 401 and changes nothing; a coordinator-protocol client is refused', async () => {
  await withEndpoints(3, async (eps) => {
    for (const headers of [undefined, { authorization: 'Bearer wrong-token-0123456789' }]) {
      const ws = new WebSocket(eps[1].url, { headers });
      ws.on('error', () => undefined);
      const [, res] = (await once(ws, 'unexpected-response')) as [unknown, { statusCode: number }];
      assert.equal(res.statusCode, 401);
      ws.terminate();
    }
    await assert.rejects(connectWs(eps[1].url), { code: 'AUTH_REFUSED' });
    // With the token but speaking the coordinator's protocol: closed, never taken into a ring.
    const stranger = await connectWs(eps[2].url, { token: TOKEN });
    const closed = new Promise<string>((res) => stranger.onClose((r) => res(r)));
    stranger.send(encodeMessage({ type: 'hello', protocol: 3, workerId: 'w', backend: 'cpu', gpu: null, host: 'h', pid: 1 }));
    assert.match(await closed, /BAD_MESSAGE/);
    const ring = await formRing(eps, 7, 64);
    await expectExact(ring, 1, 500, 3, 9);
    for (const r of ring) r.close();
  });
});

test('joining fails with a coded error, not a hang: a successor that is not listening, a rank dialing with the wrong token', async () => {
  await withEndpoints(2, async (eps) => {
    const dead = await RingEndpoint.listen('127.0.0.1', 0);
    const deadUrl = dead.url;
    await dead.close();
    await assert.rejects(eps[0].join({ ring: 1, rank: 0, size: 2, prev: deadUrl }, DIAL), { code: 'CONNECT_FAILED' });
    const got = await outcomes([
      eps[0].join({ ring: 2, rank: 0, size: 2, prev: eps[1].url }, { ...DIAL, timeoutMs: 1000 }),
      eps[1].join({ ring: 2, rank: 1, size: 2, prev: eps[0].url }, { token: 'wrong-token-0123456789', timeoutMs: 1000 }),
    ]);
    assert.equal(got[1], 'AUTH_REFUSED');
    assert.ok(got[0] === 'PEER_TIMEOUT' || got[0] === 'WORKER_LOST', String(got[0]));
  });
});

/**
 * Ranks 0 and 1 in this process, rank 2 in a child process (ring_child.ts), all on 127.0.0.1 with the token: starts
 * the child's all-reduce `op` of rankGradients(3, size, seed) and joins ranks 0 and 1. Closes everything after `fn`.
 */
async function withChildRank(
  ring: number,
  job: { size: number; seed: number; count: number; op: number; bucketElems: number },
  fn: (links: Awaited<ReturnType<RingEndpoint['join']>>[], child: ChildProcess, reply: Promise<unknown[]>) => Promise<void>,
): Promise<void> {
  const child: ChildProcess = fork(fileURLToPath(new URL('./ring_child.js', import.meta.url)), [], {
    env: { ...process.env, GDP_TOKEN: TOKEN },
    stdio: 'ignore' as never,
  });
  const eps = await endpoints(2);
  try {
    const [{ url }] = (await once(child, 'message')) as [{ url: string }];
    const urls = [eps[0].url, eps[1].url, url];
    const reply = once(child, 'message');
    reply.catch(() => undefined);
    child.send({ spec: { ring, rank: 2, size: 3, prev: urls[1] }, ...job });
    const links = await Promise.all([0, 1].map((rank) => eps[rank].join({ ring, rank, size: 3, prev: urls[(rank + 2) % 3] }, DIAL)));
    await fn(links, child, reply);
  } finally {
    child.kill('SIGKILL');
    await Promise.all(eps.map((e) => e.close()));
  }
}

test('a rank killed mid-ring (its process, SIGKILL) fails the all-reduce on the others with WORKER_LOST', async () => {
  const job = { size: 1_500_000, seed: 9, count: 3, op: 1, bucketElems: 65536 };
  await withChildRank(1, job, async (links, child) => {
    // Rank 0 receives from the child: the child dies as its first chunk arrives, before rank 0 has used it, so the
    // all-reduce cannot have finished anywhere.
    links[0]!.prev.onFrame((f) => {
      if (decodeRingMessage(f).type === 'ring_chunk') child.kill('SIGKILL');
    });
    const grads = rankGradients(3, job.size, job.seed);
    const ring = links.map((l, rank) => new RingAllReduce(l, { rank, size: 3, bucketElems: job.bucketElems, timeoutMs: 60000 }));
    const got = await outcomes(ring.map((r, k) => r.allreduce(job.op, grads[k], job.count)));
    assert.deepEqual(got, ['WORKER_LOST', 'WORKER_LOST']);
  });
});

test('the same ring with a child process rank gives the same bits as in one process', async () => {
  const job = { size: 4321, seed: 4, count: 11, op: 5, bucketElems: 100 };
  await withChildRank(3, job, async (links, _child, reply) => {
    const grads = rankGradients(3, job.size, job.seed);
    const ring = links.map((l, rank) => new RingAllReduce(l, { rank, size: 3, bucketElems: job.bucketElems, timeoutMs: 30000 }));
    const out = await Promise.all(ring.map((r, k) => r.allreduce(job.op, grads[k].slice(), job.count)));
    const [answer] = (await reply) as [{ done?: number[]; error?: string }];
    const expect = bits(ringAverage(grads, job.count));
    assert.deepEqual(answer.done, Array.from(expect));
    for (const o of out) assert.deepEqual(bits(o), expect);
    for (const r of ring) r.close();
  });
});

test('ring over wss:// (TLS) with the certificate trusted by --ca', { skip: !hasOpenssl && 'openssl not found' }, async () => {
  await withSelfSignedCert(async (tls) => {
    await withEndpoints(
      3,
      async (eps) => {
        assert.match(eps[0].url, /^wss:/);
        const ring = await formRing(eps, 1, 256, { ...DIAL, ca: tls.cert });
        await expectExact(ring, 1, 2000, 6, 3);
        for (const x of ring) x.close();
      },
      { token: TOKEN, tls },
    );
  });
});
