import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { WebSocket } from 'ws';
import { coordinatorFor } from '../../src/coordinator/in_process.js';
import { GdpError } from '../../src/shared/errors.js';
import { archSpec, buildModel } from '../../src/shared/models/registry.js';
import { pack } from 'msgpackr';
import { decodeMessage, encodeMessage } from '../../src/shared/protocol/codec.js';
import type { Message } from '../../src/shared/protocol/messages.js';
import { float32FromWire, toWire } from '../../src/shared/protocol/tensor.js';
import type { Transport } from '../../src/shared/protocol/transport.js';
import { PROTOCOL_VERSION } from '../../src/shared/protocol/version.js';
import { listenWs } from '../../src/shared/protocol/ws_listener.js';
import { connectWs } from '../../src/shared/protocol/ws_transport.js';
import { Replica } from '../../src/shared/train/replica.js';
import { WorkerSession } from '../../src/worker/session.js';
import { connectWorker, maxAbsDiff, nanData, noLog, setup, tinyConfig, tinyData } from './helpers.js';

before(setup);

const SGD = { lr: 0.1, momentum: 0.9, weightDecay: 5e-4, nesterov: false };
const STEPS = [Int32Array.of(0, 5, 9, 17, 33, 40, 41, 60), Int32Array.of(1, 2, 3, 100, 101, 200, 201, 250)];

/** Rewrites the first gradient bucket a worker sends. */
function tamperFirstGrad(change: (m: Extract<Message, { type: 'bucket' }>) => Uint8Array) {
  return (t: Transport): Transport => {
    let done = false;
    return {
      remote: t.remote,
      send(frame) {
        const m = decodeMessage(frame);
        if (!done && m.type === 'bucket' && m.stream === 'grad') {
          done = true;
          t.send(change(m));
        } else t.send(frame);
      },
      onFrame: (fn) => t.onFrame(fn),
      onClose: (fn) => t.onClose(fn),
      close: (r) => t.close(r),
    };
  };
}

/** Replica trained on whole batches: what the good worker alone computes once the bad one is dropped. */
async function reference(stepsWithTwoShards = 0) {
  const config = tinyConfig();
  const data = await tinyData();
  const ref = new Replica(buildModel(config.model.name, { numClasses: 10, seed: config.base.seed }), archSpec(config.model.name).inputShape);
  for (let s = 0; s < STEPS.length; s++) {
    const idx = STEPS[s];
    const layout = ref.layout('all');
    const parts = s < stepsWithTwoShards ? [idx.subarray(0, 4), idx.subarray(4)] : [idx];
    const sum = new Float32Array(layout.size);
    for (const p of parts) {
      const { grad } = ref.gradients(await data.train.load(p, { augment: true, seed: 0 }), layout);
      for (let i = 0; i < sum.length; i++) sum[i] += grad[i];
    }
    for (let i = 0; i < sum.length; i++) sum[i] /= idx.length;
    ref.applyGradient(layout, sum, SGD);
  }
  return ref;
}

const BAD_FRAMES: [string, (m: Extract<Message, { type: 'bucket' }>) => Uint8Array, RegExp][] = [
  ['garbage bytes', () => Uint8Array.of(0xc1, 0xff, 0x00, 0x13), /BAD_MESSAGE: .*not msgpack/],
  ['an unknown message type', (m) => pack({ type: 'bogus', seq: m.seq }), /BAD_MESSAGE: invalid 'bogus' message/],
  ['a bucket of the wrong size', (m) => encodeMessage({ ...m, data: toWire(new Float32Array(3)) }), /BAD_BUCKET: .*bucket 0 has 3 values, the layout expects \d+/],
  [
    'a NaN gradient',
    (m) => {
      const v = float32FromWire(m.data, 'test');
      v[2] = NaN;
      return encodeMessage({ ...m, data: toWire(v) });
    },
    /NON_FINITE: .*bucket 0 holds NaN at element 2/,
  ],
];

for (const [what, change, expected] of BAD_FRAMES) {
  test(`a worker sending ${what} is closed with a clear error and training goes on without it`, async () => {
    const lines: string[] = [];
    const coordinator = coordinatorFor(tinyConfig(), (l) => lines.push(l));
    const bad = connectWorker(coordinator, 'bad', { wrap: tamperFirstGrad(change) });
    const good = connectWorker(coordinator, 'good');
    await coordinator.waitForWorkers(2, 30000);
    for (const idx of STEPS) await coordinator.step(idx, 'all', SGD);
    assert.deepEqual(coordinator.workerIds, ['good']);
    const err = await bad.done;
    assert.ok(err instanceof GdpError, `the bad worker's session ends with an error, got ${String(err)}`);
    assert.ok(lines.some((l) => /^error: worker at memory:bad/.test(l) && expected.test(l)), `log names the problem:\n${lines.join('\n')}`);
    const ref = await reference();
    const layout = ref.layout('all');
    assert.ok(maxAbsDiff(coordinator.replica.readParams(layout), ref.readParams(layout)) <= 1e-5);
    assert.equal(good.session.replica!.checksum('parameters'), coordinator.replica.checksum('parameters'));
    coordinator.shutdown('test done');
    assert.equal(await good.done, undefined);
    ref.model.dispose();
    coordinator.model.dispose();
  });
}

test("one worker's NaN loss among finite ones makes it a faulty worker: closed, and training goes on without it", async () => {
  const lines: string[] = [];
  const coordinator = coordinatorFor(tinyConfig(), (l) => lines.push(l));
  const bad = connectWorker(coordinator, 'bad', { loadData: nanData });
  const good = connectWorker(coordinator, 'good');
  await coordinator.waitForWorkers(2, 30000);
  for (const idx of STEPS) await coordinator.step(idx, 'all', SGD);
  assert.deepEqual(coordinator.workerIds, ['good']);
  const err = await bad.done;
  assert.ok(err instanceof GdpError && err.code === 'NON_FINITE', `the bad worker's session ends with NON_FINITE, got ${String(err)}`);
  assert.ok(lines.some((l) => /^error: worker at memory:bad: NON_FINITE: worker bad: its shard's loss is not finite; closing the connection$/.test(l)), lines.join('\n'));
  assert.ok(lines.some((l) => /^worker bad lost at step 1 /.test(l)), lines.join('\n'));
  const ref = await reference();
  const layout = ref.layout('all');
  assert.ok(maxAbsDiff(coordinator.replica.readParams(layout), ref.readParams(layout)) <= 1e-5);
  coordinator.shutdown('test done');
  assert.equal(await good.done, undefined);
  ref.model.dispose();
  coordinator.model.dispose();
});

test('a worker with another protocol version is refused with the reason', async () => {
  const coordinator = coordinatorFor(tinyConfig(), noLog);
  const w = connectWorker(coordinator, 'old', { protocol: PROTOCOL_VERSION + 1 });
  const err = await w.done;
  assert.ok(err instanceof GdpError && err.code === 'PROTOCOL_VERSION', String(err));
  assert.match((err as Error).message, new RegExp(`protocol version ${PROTOCOL_VERSION + 1}, this coordinator ${PROTOCOL_VERSION}`));
  assert.deepEqual(coordinator.workerIds, []);
  coordinator.shutdown('test done');
  coordinator.model.dispose();
});

test('a worker that leaves between steps does not stop the run', async () => {
  const coordinator = coordinatorFor(tinyConfig(), noLog);
  const a = connectWorker(coordinator, 'a');
  await coordinator.waitForWorkers(1, 30000);
  const b = connectWorker(coordinator, 'b');
  await coordinator.waitForWorkers(2, 30000);
  await coordinator.step(STEPS[0], 'all', SGD);
  b.session.close('leaving');
  await b.done;
  await coordinator.step(STEPS[1], 'all', SGD);
  assert.deepEqual(coordinator.workerIds, ['a']);
  const ref = await reference(1);
  const layout = ref.layout('all');
  assert.ok(maxAbsDiff(coordinator.replica.readParams(layout), ref.readParams(layout)) <= 1e-5);
  coordinator.shutdown('test done');
  await a.done;
  ref.model.dispose();
  coordinator.model.dispose();
});

test('over real sockets: workers train, garbage and old-protocol clients are turned away', async () => {
  const lines: string[] = [];
  const coordinator = coordinatorFor(tinyConfig(), (l) => lines.push(l));
  const listener = await listenWs('127.0.0.1', 0, (t) => coordinator.accept(t));
  const url = `ws://127.0.0.1:${listener.port}`;
  try {
    const sessions = await Promise.all(
      ['s0', 's1'].map(async (id) => {
        const s = new WorkerSession(await connectWs(url), { workerId: id, backend: 'cpu', gpu: null, host: 'test', pid: process.pid, loadData: tinyData, log: noLog });
        return { s, done: s.run().then(() => undefined, (e: unknown) => e) };
      }),
    );
    await coordinator.waitForWorkers(2, 30000);
    // A raw client sending garbage is closed; one speaking protocol 0 is refused.
    const raw = new WebSocket(url);
    const rawClosed = new Promise<void>((resolve) => raw.on('close', () => resolve()));
    raw.on('open', () => raw.send(Buffer.from('not msgpack at all')));
    await rawClosed;
    const old = new WorkerSession(await connectWs(url), { workerId: 'old', backend: 'cpu', gpu: null, host: 'test', pid: process.pid, protocol: 0, log: noLog });
    await assert.rejects(old.run(), (e: unknown) => e instanceof GdpError && e.code === 'PROTOCOL_VERSION');
    for (const idx of STEPS) await coordinator.step(idx, 'all', SGD);
    await coordinator.verifyChecksums();
    assert.deepEqual([...coordinator.workerIds].sort(), ['s0', 's1']);
    assert.ok(lines.some((l) => l.startsWith('error: worker at 127.0.0.1') && l.includes('BAD_MESSAGE')), lines.join('\n'));
    coordinator.shutdown('test done');
    for (const { done } of sessions) assert.equal(await done, undefined);
  } finally {
    await listener.close();
    coordinator.model.dispose();
  }
});
