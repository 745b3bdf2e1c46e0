import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { coordinatorFor, startInProcess, type InProcessCluster } from '../../src/coordinator/in_process.js';
import { GdpError } from '../../src/shared/errors.js';
import { connectWs } from '../../src/shared/protocol/ws_transport.js';
import { ringListen } from '../../src/worker/main.js';
import { RingMember } from '../../src/worker/ring_member.js';
import { hasOpenssl, withSelfSignedCert } from '../tls_cert.js';
import { connectWorker, setup, tinyData } from './helpers.js';
import { batches, ringConfig } from './ring_helpers.js';

before(setup);

const SGD = { lr: 0.1, momentum: 0.9, weightDecay: 5e-4, nesterov: false };
const STEPS = 6;
/** The step (1-based) at which a worker goes. */
const K = 3;

const checksums = (run: InProcessCluster) => run.workers.filter((w) => w.replica).map((w) => w.replica!.checksum('parameters'));

async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((res) => setTimeout(res, 5));
}

/**
 * A ring run of 3 workers that loses w1 at step K: `mid` closes it while its all-reduce of step K runs (its ring
 * links close under its neighbours), otherwise it leaves just before step K. Returns the coordinator's checksum
 * and the log.
 */
async function lossRun(mid: boolean): Promise<{ checksum: string; lines: string[] }> {
  const lines: string[] = [];
  const run = await startInProcess(ringConfig('ring'), { workers: 3, loadData: tinyData, log: (l) => lines.push(l) });
  const original = RingMember.prototype.allreduce;
  const victim = run.workers[1];
  try {
    if (mid) {
      RingMember.prototype.allreduce = function (this: RingMember, info, values) {
        const p = original.call(this, info, values);
        // The session's own ring member: the all-reduce has started (its ring_ready is out); the worker goes now.
        if (run.coordinator.steps === K - 1 && (victim as unknown as { ringMember?: RingMember }).ringMember === this) setImmediate(() => victim.close('killed mid-ring'));
        return p;
      };
    }
    for (const [k, idx] of batches(256, 10, STEPS).entries()) {
      if (!mid && k === K - 1) {
        victim.close('left');
        await until(() => !run.coordinator.workerIds.includes('w1'));
      }
      await run.coordinator.step(idx, 'all', SGD);
    }
    await run.coordinator.verifyChecksums();
    assert.deepEqual(run.coordinator.workerIds, ['w0', 'w2']);
    for (const w of [run.workers[0], run.workers[2]]) assert.equal(w.replica!.checksum('parameters'), run.coordinator.replica.checksum('parameters'));
    return { checksum: run.coordinator.replica.checksum('parameters'), lines };
  } finally {
    RingMember.prototype.allreduce = original;
    await run.close();
  }
}

test('a worker lost mid-ring: the ring re-forms without it and the step is redone, nothing lost or counted twice', async () => {
  const mid = await lossRun(true);
  const before = await lossRun(false);
  assert.ok(mid.lines.some((l) => new RegExp(`^step ${K}: .*redoing it with 2 worker\\(s\\)$`).test(l)), mid.lines.join('\n'));
  assert.ok(mid.lines.some((l) => new RegExp(`^ring 2 formed for step ${K}: w0 -> w2$`).test(l)), mid.lines.join('\n'));
  assert.ok(before.lines.some((l) => new RegExp(`^ring 2 formed for step ${K}: w0 -> w2$`).test(l)), before.lines.join('\n'));
  // The ring broke under the survivors mid-all-reduce, and they undid that attempt's BN statistics.
  for (const w of ['w0', 'w2']) {
    assert.ok(mid.lines.some((l) => l.startsWith(`[${w}] ring 1 rank `) && / failed: WORKER_LOST: /.test(l)), mid.lines.join('\n'));
    assert.ok(mid.lines.some((l) => l.startsWith(`[${w}] step of request `) && /BN statistics are undone$/.test(l)), mid.lines.join('\n'));
  }
  // Step K computed by w0 and w2 either way: the same bits.
  assert.equal(mid.checksum, before.checksum);
});

test('a joining worker enters the ring at the next step; every replica stays identical', async () => {
  const lines: string[] = [];
  const run = await startInProcess(ringConfig('ring'), { workers: 2, loadData: tinyData, log: (l) => lines.push(l) });
  const steps = batches(256, 9, STEPS);
  try {
    await run.coordinator.step(steps[0], 'all', SGD);
    const late = connectWorker(run.coordinator, 'w9', { ring: { host: '127.0.0.1', port: 0 }, loadData: tinyData });
    await until(() => late.session.welcomed);
    for (const idx of steps.slice(1)) await run.coordinator.step(idx, 'all', SGD);
    await run.coordinator.verifyChecksums();
    assert.deepEqual(run.coordinator.workerIds, ['w0', 'w1', 'w9']);
    assert.ok(lines.some((l) => /^ring 2 formed for step \d: w0 -> w1 -> w9$/.test(l)), lines.join('\n'));
    const mine = run.coordinator.replica.checksum('parameters');
    for (const c of [...checksums(run), late.session.replica!.checksum('parameters')]) assert.equal(c, mine);
    late.session.close('done');
    await late.done;
  } finally {
    await run.close();
  }
});

test("a worker's ring listener refuses a peer without the token; the ring itself trains with it", async () => {
  const token = 'ring-token-0123456789abcdef';
  const lines: string[] = [];
  const run = await startInProcess(ringConfig('ring'), { workers: 3, loadData: tinyData, log: (l) => lines.push(l), ringToken: token });
  try {
    const urls = lines.map((l) => /ring listener at (\S+)$/.exec(l)?.[1]).filter((u): u is string => u !== undefined);
    assert.equal(urls.length, 3, lines.join('\n'));
    for (const url of urls) {
      for (const bad of [undefined, 'wrong-token-0123456789abcdef']) {
        await assert.rejects(connectWs(url, { token: bad, timeoutMs: 5000 }), (e: unknown) => e instanceof GdpError && e.code === 'AUTH_REFUSED', url);
      }
    }
    for (const idx of batches(256, 9, 3)) await run.coordinator.step(idx, 'all', SGD);
    await run.coordinator.verifyChecksums();
    assert.ok(lines.some((l) => /^ring 1 formed for step 1: w0 -> w1 -> w2$/.test(l)), lines.join('\n'));
    assert.ok(!lines.some((l) => /ring .* failed/.test(l)), lines.join('\n'));
  } finally {
    await run.close();
  }
});

test('a ring that keeps failing with the same workers falls back to the star after 2 redos, saying why', async () => {
  // Quick timeouts: the ranks waiting for a peer that never joins give up within a second.
  const config = ringConfig('ring', { heartbeat_timeout_ms: 1000 });
  const steps = batches(256, 9, 3);
  const runOf = async (broken: boolean): Promise<{ checksum: string; lines: string[] }> => {
    const lines: string[] = [];
    const run = await startInProcess(broken ? config : ringConfig('star'), { workers: 3, loadData: tinyData, log: (l) => lines.push(l) });
    const original = RingMember.prototype.allreduce;
    const stuck = run.workers[2] as unknown as { ringMember?: RingMember };
    // w2 cannot take part (as if a firewall cut it off from the others), yet stays connected to the coordinator.
    RingMember.prototype.allreduce = function (this: RingMember, info, values) {
      if (stuck.ringMember === this) return Promise.reject(new GdpError('CONNECT_FAILED', 'test: the other workers cannot be reached'));
      return original.call(this, info, values);
    };
    try {
      for (const idx of steps) await run.coordinator.step(idx, 'all', SGD);
      await run.coordinator.verifyChecksums();
      assert.deepEqual(run.coordinator.workerIds, ['w0', 'w1', 'w2']);
      return { checksum: run.coordinator.replica.checksum('parameters'), lines };
    } finally {
      RingMember.prototype.allreduce = original;
      await run.close();
    }
  };
  const broken = await runOf(true);
  const star = await runOf(false);
  assert.equal(broken.lines.filter((l) => /^step 1: ring \d failed at step 1 \(worker w\d: ring all-reduce of request \d+ failed: [A-Z_]+: /.test(l)).length, 3, broken.lines.join('\n'));
  assert.ok(broken.lines.some((l) => /^ring all-reduce failed 3 times in a row with the same workers \(w0 -> w1 -> w2\); .*: star all-reduce for the rest of the run$/.test(l)), broken.lines.join('\n'));
  assert.ok(broken.lines.some((l) => /^\[w2\] ring \d rank 2 of 3: all-reduce of request \d+ failed: CONNECT_FAILED: test: /.test(l)), broken.lines.join('\n'));
  // Every step was finally a star step: the same bits as a star run.
  assert.equal(broken.checksum, star.checksum);
});

test('ring listeners with --cert/--key serve wss://: peers trusting the certificate form the ring, others cannot connect', { skip: !hasOpenssl && 'openssl not found' }, async () => {
  await withSelfSignedCert(async (pem) => {
    const token = 'ring-tls-token-0123456789abcdef';
    const lines: string[] = [];
    const c = coordinatorFor(ringConfig('ring'), (l) => lines.push(l), { pauseMs: 0 });
    const ring = { host: '127.0.0.1', port: 0, token, tls: pem, ca: pem.cert };
    const log = (id: string) => (l: string) => lines.push(`[${id}] ${l}`);
    const ws = ['a', 'b', 'c'].map((id) => connectWorker(c, id, { ring, log: log(id) }));
    try {
      await c.waitForWorkers(3, 30000);
      for (const idx of batches(256, 9, 2)) await c.step(idx, 'all', SGD);
      await c.verifyChecksums();
      const urls = lines.map((l) => /ring listener at (\S+)$/.exec(l)?.[1]).filter((u): u is string => u !== undefined);
      assert.equal(urls.length, 3);
      for (const url of urls) {
        assert.match(url, /^wss:\/\/127\.0\.0\.1:\d+$/);
        // Without the certificate: not trusted, even with the token.
        await assert.rejects(connectWs(url, { token, timeoutMs: 5000 }), (e: unknown) => e instanceof GdpError && e.code === 'CONNECT_FAILED');
      }
      assert.ok(lines.some((l) => /^ring 1 formed for step 1: a -> b -> c$/.test(l)), lines.join('\n'));
      for (const w of ws) assert.equal(w.session.replica!.checksum('parameters'), c.replica.checksum('parameters'));
    } finally {
      c.shutdown('test done');
      await Promise.all(ws.map((w) => w.done));
    }
  });
});

test('gdp-worker --listen: defaults, and the flags it refuses', () => {
  const token = 'x'.repeat(20);
  assert.deepEqual(ringListen({ connect: 'ws://127.0.0.1:7070' }, undefined, undefined), { host: '127.0.0.1', port: 0, token: undefined, tls: undefined, ca: undefined });
  assert.equal(ringListen({ connect: 'wss://coord.example:7070' }, token, undefined), undefined);
  assert.deepEqual(ringListen({ connect: 'wss://coord.example:7070', listen: '10.0.0.5:7171' }, token, undefined)?.port, 7171);
  const refused: [Parameters<typeof ringListen>[0], string | undefined, RegExp][] = [
    [{ connect: 'ws://127.0.0.1:7070', listen: '7171' }, token, /--listen expects HOST:PORT/],
    [{ connect: 'ws://127.0.0.1:7070', listen: '0.0.0.0:7171' }, token, /the address they dial/],
    [{ connect: 'wss://coord.example:7070', listen: '10.0.0.5:7171' }, undefined, /needs the run's token/],
    [{ connect: 'ws://127.0.0.1:7070', listen: '127.0.0.1:0', cert: 'c.pem' }, token, /--cert and --key go together/],
    [{ connect: 'wss://coord.example:7070', cert: 'c.pem', key: 'k.pem' }, token, /give --listen HOST:PORT too/],
    [{ connect: 'ws://127.0.0.1:7070', listen: '127.0.0.1:0', cert: '/nonexistent/c.pem', key: '/nonexistent/k.pem' }, token, /--cert \/nonexistent\/c\.pem: ENOENT/],
  ];
  for (const [o, t, re] of refused) assert.throws(() => ringListen(o, t, undefined), (e: unknown) => e instanceof GdpError && e.code === 'BAD_FLAG' && re.test(e.message), JSON.stringify(o));
});
