import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Coordinator } from '../../src/coordinator/cluster.js';
import { coordinatorFor } from '../../src/coordinator/in_process.js';
import { GdpError } from '../../src/shared/errors.js';
import { decodeMessage } from '../../src/shared/protocol/codec.js';
import { stateChecksum } from '../../src/shared/train/model_state.js';
import type { Transport } from '../../src/shared/protocol/transport.js';
import { dataFingerprint } from '../../src/shared/data/dataset.js';
import { connectWorker, setup, tinyConfig, tinyData } from './helpers.js';

before(setup);

// Peers' timers do not hold the process open (sockets do); these tests run over in-memory transports.
let keepAlive: NodeJS.Timeout;
before(() => {
  keepAlive = setInterval(() => {}, 1000);
});
after(() => clearInterval(keepAlive));

const SGD = { lr: 0.1, momentum: 0.9, weightDecay: 5e-4, nesterov: false };
const batch = (s: number) => Int32Array.from({ length: 8 }, (_, i) => (s * 37 + i * 11) % 256);

/** The coordinator's full state (parameters, BN statistics averaged over its workers) and parameter checksum. */
async function finalState(c: Coordinator): Promise<{ state: string; params: string }> {
  await c.syncBatchNormStats();
  await c.verifyChecksums();
  return { state: stateChecksum(c.model), params: c.replica.checksum('parameters') };
}

function until(cond: () => boolean, ms = 20000): Promise<void> {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const t = setInterval(() => {
      if (cond()) {
        clearInterval(t);
        resolve();
      } else if (Date.now() > deadline) {
        clearInterval(t);
        reject(new Error('condition not met in time'));
      }
    }, 5);
  });
}

/** Forwards a worker's frames until `cut()` says stop; from then on it goes silent without closing (SIGSTOP). */
function silencedWhen(cut: () => boolean) {
  return (t: Transport): Transport => ({
    remote: t.remote,
    send: (f) => {
      if (!cut()) t.send(f);
    },
    onFrame: (fn) => t.onFrame((f) => (cut() ? undefined : fn(f))),
    onClose: (fn) => t.onClose(fn),
    close: (r) => t.close(r),
  });
}

test('a worker slow to load its data never holds up training: it follows, then takes shards from the next step', async () => {
  const run = async (slowJoin: boolean) => {
    const lines: string[] = [];
    const c = coordinatorFor(tinyConfig(), (l) => lines.push(l), { pauseMs: 0 });
    const a = connectWorker(c, 'a');
    await c.waitForWorkers(1, 30000);
    let release!: () => void;
    const loaded = new Promise<void>((r) => (release = r));
    // Slow join: b says hello before step 1 but only finishes loading after step 3.
    const b = slowJoin ? connectWorker(c, 'b', { loadData: async () => (await loaded, tinyData()) }) : undefined;
    for (let s = 0; s < 3; s++) await c.step(batch(s), 'all', SGD);
    assert.deepEqual(c.workerIds, ['a'], 'b takes no shard while loading');
    const late = b ?? connectWorker(c, 'b');
    release();
    await c.waitForWorkers(2, 30000);
    for (let s = 3; s < 6; s++) {
      const r = await c.step(batch(s), 'all', SGD);
      assert.deepEqual(r.perWorker.map((w) => w.id), ['a', 'b']);
    }
    const out = await finalState(c);
    assert.equal(late.session.replica!.checksum('parameters'), out.params);
    c.shutdown('test done');
    await Promise.all([a.done, late.done]);
    c.model.dispose();
    return { out, lines };
  };
  const following = await run(true);
  const direct = await run(false);
  assert.ok(following.lines.some((l) => /^worker b joined .* 2 active from step 4$/.test(l)), following.lines.join('\n'));
  // Welcomed at step 0 and following 3 updates, or welcomed after step 3: the same replica, bit for bit.
  assert.deepEqual(following.out, direct.out);
});

test('--min-workers: with too few workers the coordinator pauses, then goes on when one joins', async () => {
  const lines: string[] = [];
  const c = coordinatorFor(tinyConfig(), (l) => lines.push(l), { minWorkers: 2 });
  const a = connectWorker(c, 'a');
  const b = connectWorker(c, 'b');
  await c.waitForWorkers(2, 30000);
  await c.step(batch(0), 'all', SGD);
  b.session.close('leaving');
  await b.done;
  let done = false;
  const step = c.step(batch(1), 'all', SGD).then((r) => ((done = true), r));
  await until(() => lines.some((l) => l.startsWith('paused before step 2: 1 worker(s) active, at least 2 needed')));
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(done, false, 'no step with fewer than --min-workers');
  const d = connectWorker(c, 'd');
  const r = await step;
  assert.deepEqual(r.perWorker.map((w) => w.id), ['a', 'd']);
  assert.ok(lines.some((l) => /^resumed step 2 with 2 worker\(s\) after [\d.]+ s$/.test(l)), lines.join('\n'));
  // Shutting down while paused ends the waiting operation with a clear error.
  d.session.close('leaving');
  await d.done;
  const paused = c.step(batch(2), 'all', SGD);
  await until(() => lines.filter((l) => l.startsWith('paused before step 3')).length === 1);
  c.shutdown('test done');
  await assert.rejects(paused, (e: unknown) => e instanceof GdpError && e.code === 'SHUTTING_DOWN');
  await a.done;
  c.model.dispose();
});

test('a worker that stops answering (no heartbeats, socket open) is dropped after heartbeat_timeout_ms; its shard is redone', async () => {
  const config = tinyConfig({ dist: { checksum_every: 1, bucket_mib: 0.0001, heartbeat_ms: 100, heartbeat_timeout_ms: 800 } });
  const run = async (stopB: boolean) => {
    const lines: string[] = [];
    const c = coordinatorFor(config, (l) => lines.push(l), { pauseMs: 0 });
    const a = connectWorker(c, 'a');
    await c.waitForWorkers(1, 30000);
    const b = connectWorker(c, 'b', { wrap: silencedWhen(() => stopB && c.steps >= 2) });
    await c.waitForWorkers(2, 30000);
    for (let s = 0; s < 2; s++) await c.step(batch(s), 'all', SGD);
    if (!stopB) {
      b.session.close('leaving');
      await b.done;
    }
    for (let s = 2; s < 4; s++) await c.step(batch(s), 'all', SGD);
    assert.deepEqual(c.workerIds, ['a']);
    const out = await finalState(c);
    c.shutdown('test done');
    b.session.close('test done');
    await Promise.all([a.done, b.done]);
    c.model.dispose();
    return { out, lines };
  };
  const stopped = await run(true);
  const left = await run(false);
  assert.ok(stopped.lines.some((l) => /^error: worker at memory:b: PEER_TIMEOUT: nothing received for \d+ ms \(limit 800 ms\)/.test(l)), stopped.lines.join('\n'));
  assert.ok(stopped.lines.some((l) => /^worker b lost at step 3 \(PEER_TIMEOUT/.test(l)), stopped.lines.join('\n'));
  // Step 3 redone on a alone equals step 3 done by a alone.
  assert.deepEqual(stopped.out, left.out);
});

/**
 * b's connection ends after its gradient went up, before its 'computed': a already received (some of) the step's
 * averaged buckets, which it must drop, with its shard's BN statistics, when the step is redone.
 */
async function lostMidStep(bucketMib?: number): Promise<void> {
  const config = bucketMib === undefined ? tinyConfig() : tinyConfig({ dist: { bucket_mib: bucketMib } });
  const run = async (killMidStep: boolean) => {
    const lines: string[] = [];
    const c = coordinatorFor(config, (l) => lines.push(l), { pauseMs: 0 });
    const a = connectWorker(c, 'a');
    await c.waitForWorkers(1, 30000);
    let bt: Transport | undefined;
    // b's connection ends in the middle of its answer to step 3 (gradient sent, 'computed' not).
    const b = connectWorker(c, 'b', {
      wrap: (t) => {
        bt = t;
        return {
          remote: t.remote,
          send: (f) => {
            if (killMidStep && c.steps === 2 && decodeMessage(f).type === 'computed') t.close('killed');
            else t.send(f);
          },
          onFrame: (fn) => t.onFrame(fn),
          onClose: (fn) => t.onClose(fn),
          close: (r) => t.close(r),
        };
      },
    });
    await c.waitForWorkers(2, 30000);
    for (let s = 0; s < 5; s++) {
      if (!killMidStep && s === 2) {
        bt!.close('left');
        await until(() => c.workerIds.length === 1);
      }
      await c.step(batch(s), 'all', SGD);
    }
    const out = await finalState(c);
    c.shutdown('test done');
    await Promise.all([a.done, b.done]);
    c.model.dispose();
    return { out, lines };
  };
  const mid = await run(true);
  const before = await run(false);
  assert.ok(mid.lines.some((l) => /^step 3: worker b left: killed; redoing it with 1 worker\(s\)$/.test(l)), mid.lines.join('\n'));
  assert.ok(mid.lines.some((l) => /^worker b lost at step 3 /.test(l)), mid.lines.join('\n'));
  assert.deepEqual(mid.out, before.out);
}

test('a worker lost mid-step: the step is redone on the others, who undo that attempt\'s BN statistics', () => lostMidStep());
test('the same with the gradient in many buckets: averaged buckets already streamed to the others are dropped', () => lostMidStep(0.0001));

test('a worker that loaded other data is refused when it joins, naming its host; received paths are never read', async () => {
  const data = await tinyData();
  const lines: string[] = [];
  const config = tinyConfig({ data: { type: 'mnist', batch_size: 8, test_batch_size: 16, dir: '/etc/from-the-network' } });
  const c = coordinatorFor(config, (l) => lines.push(l), { dataFingerprint: dataFingerprint(data), pauseMs: 0 });
  let dirSeen: string | undefined = 'not called';
  const good = connectWorker(c, 'good', { loadData: async () => data });
  // The same images with one label changed: another copy of the dataset.
  const labels = data.train.labels.slice();
  labels[0] = (labels[0] + 1) % 10;
  const other = connectWorker(c, 'other', { loadData: async () => ({ ...data, train: { ...data.train, labels, load: data.train.load.bind(data.train) } }) });
  await c.waitForWorkers(1, 30000);
  const err = await other.done;
  assert.ok(err instanceof GdpError && err.code === 'BAD_DATA', String(err));
  assert.ok(lines.some((l) => /BAD_DATA: worker other loaded a different dataset \(train 256, test 64, labels [0-9a-f]{16}\) than the coordinator \(train 256, test 64, labels [0-9a-f]{16}\): check --data-dir on test/.test(l)), lines.join('\n'));
  assert.deepEqual(c.workerIds, ['good']);
  // What a worker's data loader is given: the config without the coordinator's folder.
  const spy = connectWorker(c, 'spy', {
    loadData: async (received) => {
      dirSeen = received.data.dir;
      return data;
    },
  });
  await c.waitForWorkers(2, 30000);
  assert.equal(dirSeen, undefined);
  c.shutdown('test done');
  await Promise.all([good.done, spy.done]);
  c.model.dispose();
});
