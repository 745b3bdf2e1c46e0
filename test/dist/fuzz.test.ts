import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'ws';
import { coordinatorFor } from '../../src/coordinator/in_process.js';
import { Rng } from '../../src/shared/rng.js';
import { pack } from 'msgpackr';
import { encodeMessage } from '../../src/shared/protocol/codec.js';
import type { Message } from '../../src/shared/protocol/messages.js';
import { stateChecksum } from '../../src/shared/train/model_state.js';
import { toWire } from '../../src/shared/protocol/tensor.js';
import { MAX_FRAME_BYTES, PROTOCOL_VERSION } from '../../src/shared/protocol/version.js';
import { listenWs } from '../../src/shared/protocol/ws_listener.js';
import { connectWorker, noLog, setup, tinyConfig } from './helpers.js';

before(setup);

const SGD = { lr: 0.05, momentum: 0.9, weightDecay: 5e-4, nesterov: false };
const batch = (s: number) => Int32Array.from({ length: 8 }, (_, i) => (s * 41 + i * 7) % 256);
const FRAMES = Number(process.env.GDP_FUZZ_FRAMES ?? 10_000);
const CONCURRENCY = 40;
const CHILD = fileURLToPath(new URL('./tiny_worker_child.js', import.meta.url));
// Quick timeouts, so that stalled fuzz peers are dropped within the test.
const CONFIG = tinyConfig({ dist: { checksum_every: 4, bucket_mib: 0.01, heartbeat_ms: 200, heartbeat_timeout_ms: 3000 } });

const rng = new Rng(20261128);
const pick = <T>(a: readonly T[]): T => a[rng.int(a.length)];
const hex16 = () => Array.from({ length: 16 }, () => '0123456789abcdef'[rng.int(16)]).join('');
const floats = (n: number) => Float32Array.from({ length: n }, () => rng.normal());

type Obj = Record<string, unknown>;

/** Well-formed messages of every type, as a worker (or something pretending to be the coordinator) could send. */
function validMessages(id: string): Obj[] {
  const stats = { lossSum: 5.5, correct1: 1, correct5: 3, count: 4 };
  const seq = rng.int(40);
  const list: Message[] = [
    { type: 'hello', protocol: PROTOCOL_VERSION, workerId: id, backend: 'cpu', gpu: null, host: 'fuzz', pid: 1 },
    { type: 'heartbeat', t: Date.now() },
    { type: 'ready', checksum: hex16(), data: 'train 256, test 64, labels 0123456789abcdef' },
    { type: 'computed', seq, stats },
    { type: 'bucket', stream: 'grad', seq, index: rng.int(3), data: toWire(floats(1 + rng.int(3000))) },
    { type: 'bucket', stream: 'avg', seq, index: rng.int(3), data: toWire(floats(1 + rng.int(3000))) },
    // A ring step's answers, sent to a star run: refused like any answer out of place.
    { type: 'ring_failed', seq, code: 'PEER_TIMEOUT', message: 'the ring stalled' },
    { type: 'ready', checksum: hex16(), data: 'train 256, test 64, labels 0123456789abcdef', ring: 'ws://127.0.0.1:9' },
    { type: 'checksum', seq, checksum: hex16() },
    { type: 'evaluated', seq, stats },
    { type: 'bn_stats', seq, samples: 8, tensors: [{ name: 'bn1.running_mean', tensor: toWire(floats(6)) }, { name: 'bn1.running_var', tensor: toWire(floats(6)) }] },
    { type: 'ack', seq, checksum: hex16() },
    { type: 'error', code: 'FUZZ', message: 'worker says no' },
    { type: 'refuse', code: 'FUZZ', reason: 'no' },
    { type: 'shutdown', reason: 'fuzz' },
    { type: 'compute', seq, set: 'all', indices: toWire(Int32Array.of(1, 2, 3)), seed: 3 },
    { type: 'apply', seq, set: 'gates', sgd: { lr: 0.1, momentum: 0.9, weightDecay: 0, nesterov: false } },
    { type: 'welcome', protocol: PROTOCOL_VERSION, config: {}, updates: [], slots: [{ name: 'conv1.weight', shape: [6, 1, 3, 3] }], momentum: [], bucketElems: 26 },
    { type: 'model_update', seq, update: { kind: 'mask', masks: [{ name: 'bn1', tensor: toWire(floats(6)) }] } },
    { type: 'set_buffers', seq, tensors: [{ name: 'bn2.running_var', tensor: toWire(floats(6)) }] },
    { type: 'checksum_request', seq },
    { type: 'bn_request', seq },
    { type: 'evaluate', seq, indices: toWire(Int32Array.of(0, 1)), batchSize: 2 },
  ];
  return list as unknown as Obj[];
}

const WEIRD: unknown[] = [
  'x', '', -1, 1.5, 2 ** 53 + 2, -(2 ** 31), NaN, Infinity, -Infinity, null, [], {}, true, 'A'.repeat(100_000),
  new Uint8Array(3), [[[[[]]]]], { type: 'hello' }, '\u0000\u001b[2J\nforged log line', Array(2000).fill(7),
];

/** Finds the wire tensors inside a message (data, indices, tensors[i].tensor, masks[i].tensor). */
function tensorsOf(m: Obj): Obj[] {
  const out: Obj[] = [];
  const walk = (v: unknown) => {
    if (v && typeof v === 'object' && !(v instanceof Uint8Array)) {
      if ('dtype' in v && 'shape' in v && 'data' in v) out.push(v as Obj);
      else for (const x of Object.values(v)) walk(x);
    }
  };
  walk(m);
  return out;
}

function mutateObject(m: Obj): void {
  const keys = Object.keys(m);
  switch (rng.int(7)) {
    case 0:
      m.type = pick(['bogus', '', 42, null, 'HELLO', 'hello ', '__proto__', 'constructor', 'toString', undefined]);
      return;
    case 1:
      delete m[pick(keys.filter((k) => k !== 'type')) ?? 'type'];
      return;
    case 2:
      m[pick(keys)] = pick(WEIRD);
      return;
    case 3:
      m.seq = pick([-1, 2 ** 31, 2 ** 53, 0.5, '1', 0, 1e308]);
      return;
    case 4: {
      const t = pick(tensorsOf(m));
      if (!t) return mutateObject(m);
      const n = t.data instanceof Uint8Array ? Math.floor(t.data.byteLength / 4) : 1;
      switch (rng.int(6)) {
        case 0: {
          // NaN or infinities inside the values.
          const v = floats(Math.max(1, n));
          v[rng.int(v.length)] = pick([NaN, Infinity, -Infinity]);
          t.data = new Uint8Array(v.buffer);
          t.shape = [v.length];
          t.dtype = 'float32';
          return;
        }
        case 1:
          t.shape = pick([[n + 1], [2 ** 31, 2 ** 31], [-1], [1.5], [1, 1, 1, 1, 1, 1, 1, 1, n], [], [0]]);
          return;
        case 2:
          t.dtype = pick(['float64', 'int32', 'float32', 'bool', 'string']);
          return;
        case 3:
          t.data = pick([[1, 2, 3], 'bytes', null, new Uint8Array(4 * n + 2)]);
          return;
        case 4:
          // Truncated: fewer bytes than the shape says.
          t.data = t.data instanceof Uint8Array ? t.data.subarray(0, Math.max(0, t.data.byteLength - 4)) : new Uint8Array(3);
          return;
        default:
          t.shape = [n];
          t.data = new Uint8Array(floats(n).buffer);
          return;
      }
    }
    case 5:
      if (m.stats) m.stats = pick([{ lossSum: -1, correct1: 0, correct5: 0, count: 4 }, { lossSum: 1, correct1: 9, correct5: 2, count: 4 }, { lossSum: 1, correct1: 0, correct5: 0, count: 1e9 }]);
      else if (Array.isArray(m.tensors)) m.tensors = Array.from({ length: 1 + rng.int(300) }, () => ({ name: pick(['bn1.running_mean', 'x', '', 'bn1.running_mean']), tensor: toWire(floats(6)) }));
      else m[`extra${rng.int(3)}`] = pick(WEIRD);
      return;
    default:
      m.protocol = pick([0, PROTOCOL_VERSION + 1, -1, 'two']);
      return;
  }
}

const HUGE_HEADERS = [
  [0xdd, 0xff, 0xff, 0xff, 0xff], // array32 of 4 G items
  [0xdf, 0xff, 0xff, 0xff, 0xff], // map32
  [0xc6, 0xff, 0xff, 0xff, 0xff], // bin32 of 4 GiB
  [0xdb, 0x7f, 0xff, 0xff, 0xff], // str32
  [0xc9, 0xff, 0xff, 0xff, 0xff, 0x01], // ext32
  [0x82, 0xa4, 0x74, 0x79, 0x70, 0x65, 0xa5, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0xa4, 0x64, 0x61, 0x74, 0x61, 0xc6, 0xff, 0xff, 0xff, 0xf0], // {type:'hello', data: bin32 huge}
];

/** Bytes that are not a valid client WebSocket frame, written to the socket under ws. */
interface RawFrame {
  raw: Uint8Array;
}
const mask = [0x11, 0x22, 0x33, 0x44];
const RAW_FRAMES: RawFrame[] = [
  { raw: Uint8Array.of(0x83, 0x80, ...mask) }, // reserved opcode 3
  { raw: Uint8Array.of(0x82, 0x01, 0x00) }, // unmasked client frame
  { raw: Uint8Array.of(0xc2, 0x80, ...mask) }, // RSV1 without an extension
  { raw: Uint8Array.of(0x81, 0x82, ...mask, 0xff ^ 0x11, 0xfe ^ 0x22) }, // text frame that is not UTF-8
  { raw: Uint8Array.of(0x02, 0x80, ...mask, 0x82, 0x80, ...mask) }, // continuation expected, new frame started
  { raw: Uint8Array.of(0x89, 0xfe, 0x01, 0x00, ...mask) }, // ping with a 256-byte payload (control frames: at most 125)
];

type Frame = Uint8Array | string | RawFrame;

/** One random or mutated frame. */
function fuzzFrame(id: string): Frame {
  const base = pick(validMessages(id));
  const r = rng.next();
  if (r < 0.45) {
    const m = structuredClone(base);
    for (let i = 1 + rng.int(3); i > 0; i--) mutateObject(m);
    return pack(m);
  }
  const bytes = pack(base);
  if (r < 0.55) {
    const b = bytes.slice();
    for (let i = 1 + rng.int(8); i > 0; i--) b[rng.int(b.length)] = rng.int(256);
    return b;
  }
  if (r < 0.65) return bytes.subarray(0, rng.int(bytes.length));
  if (r < 0.72) return Uint8Array.from([...bytes, ...Array.from({ length: 1 + rng.int(50) }, () => rng.int(256))]);
  if (r < 0.8) return Uint8Array.from([...pick(HUGE_HEADERS), ...Array.from({ length: rng.int(40) }, () => rng.int(256))]);
  if (r < 0.9) return Uint8Array.from({ length: rng.int(400) }, () => rng.int(256));
  if (r < 0.92) return new Uint8Array(20_000 + rng.int(80_000)).fill(0x91); // deeply nested arrays
  if (r < 0.94) return pick(['', 'hello', '{"type":"hello"}', 'GET / HTTP/1.1']); // text frames
  if (r < 0.97) return pick(RAW_FRAMES);
  return bytes; // valid: a hello, a stray answer, a heartbeat...
}

interface FuzzStats {
  frames: number;
  connections: number;
}

/**
 * Opens a connection, sends the frames (after `hello`, once the coordinator's first answer arrived, if given),
 * waits briefly for the coordinator to close it, then hangs up.
 */
function fuzzConnection(url: string, frames: Frame[], stats: FuzzStats, opts: { lingerMs?: number; hello?: Uint8Array } = {}): Promise<void> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { maxPayload: 256 * 1024 * 1024 });
    ws.on('error', () => undefined);
    const send = () => {
      for (const f of frames) {
        if (typeof f === 'object' && 'raw' in f) (ws as unknown as { _socket: { write(b: Uint8Array): void } })._socket.write(f.raw);
        else ws.send(f, { binary: typeof f !== 'string' });
        stats.frames++;
      }
      setTimeout(() => ws.terminate(), opts.lingerMs ?? 150);
    };
    ws.once('open', () => {
      stats.connections++;
      if (!opts.hello) return send();
      ws.send(opts.hello);
      // The welcome: the frames now meet a worker that is following the run.
      ws.once('message', send);
      setTimeout(() => ws.terminate(), 5000);
    });
    ws.once('close', () => resolve());
  });
}

test('10,000 random and mutated frames against a live coordinator: no crash, no state change, training goes on', async () => {
  const lines: string[] = [];
  const coordinator = coordinatorFor(CONFIG, (l) => lines.push(l));
  const listener = await listenWs('127.0.0.1', 0, (t) => coordinator.accept(t), { log: (l) => lines.push(l) });
  let stopChild = () => {};
  // Ends the fuzzing lanes and the training loop when the test fails half way.
  let aborted = false;
  try {
    const url = `ws://127.0.0.1:${listener.port}`;
    // The real worker runs in its own process, as it would in a run; this one's event loop serves the fuzzing.
    const child = spawn(process.execPath, [CHILD, url, 'real'], { stdio: ['ignore', 'pipe', 'inherit'] });
    stopChild = () => child.kill();
    let childOut = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (childOut += d));
    const childExit = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    await coordinator.waitForWorkers(1, 60000);

    // Training runs throughout the fuzzing.
    let fuzzing = true;
    let steps = 0;
    let stepsDuringFuzz = 0;
    const training = (async () => {
      while ((fuzzing || steps < stepsDuringFuzz + 3) && !aborted) {
        await coordinator.step(batch(steps), 'all', SGD);
        steps++;
        // Paced: enough steps to see training go on, not so many that the reference run below takes long.
        await new Promise((r) => setTimeout(r, 100));
        if (fuzzing) stepsDuringFuzz = steps;
      }
    })();
    training.catch(() => undefined); // awaited below; this only keeps an early failure from going unhandled

    const started = Date.now();
    const stats: FuzzStats = { frames: 0, connections: 0 };
    let n = 0;
    const lane = async () => {
      while (stats.frames < FRAMES && !aborted) {
        const id = `fuzz${n++}`;
        const frames: Frame[] = [];
        // Half the connections introduce themselves first: their frames meet the checks of a worker's answers, not
        // only of the hello; some of them wait for their welcome, and follow the run meanwhile.
        const hello = encodeMessage(validMessages(id)[0] as unknown as Message);
        const r = rng.next();
        if (r < 0.4) frames.push(hello);
        for (let k = rng.next() < 0.3 ? 1 + rng.int(3) : 1; k > 0; k--) frames.push(fuzzFrame(id));
        await fuzzConnection(url, frames, stats, r >= 0.4 && r < 0.5 ? { hello } : {});
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, lane));
    // Oversized frames (the ws layer refuses them from their header) and stalled peers, silent before or after hello.
    // Both kinds at once: neither waits on the other, and each second here is ten more paced steps to replay below.
    const oversized = new Uint8Array(MAX_FRAME_BYTES + 1);
    await Promise.all([
      ...[0, 1, 2].map(() => fuzzConnection(url, [oversized], stats, { lingerMs: 2000 })),
      ...Array.from({ length: 8 }, () => fuzzConnection(url, [], stats, { lingerMs: 4500 })),
      ...Array.from({ length: 8 }, (_, i) => fuzzConnection(url, [encodeMessage(validMessages(`stalled${i}`)[0] as unknown as Message)], stats, { lingerMs: 4500 })),
    ]);
    const fuzzMs = Date.now() - started;
    fuzzing = false;
    await training;

    // Errors the coordinator logged for fuzz connections, by code; never an internal error.
    const codes = new Map<string, number>();
    for (const l of lines) {
      const m = /^error: worker at 127\.0\.0\.1:\d+: ([A-Za-z0-9_]+): /.exec(l);
      if (m) codes.set(m[1], (codes.get(m[1]) ?? 0) + 1);
    }
    const summary = `${stats.frames} frames over ${stats.connections} connections in ${fuzzMs} ms; ${steps} steps (${stepsDuringFuzz} during the fuzzing); errors logged: ${[...codes].map(([c, k]) => `${c} ${k}`).join(', ')}`;
    process.stdout.write(`# fuzz: ${summary}\n`);
    assert.ok(stats.frames >= FRAMES, summary);
    assert.ok(stepsDuringFuzz >= 3, `training went on during the fuzzing: ${summary}`);
    assert.equal(codes.get('INTERNAL'), undefined, `no unexpected exception: ${lines.filter((l) => l.includes('INTERNAL')).slice(0, 5).join('\n')}`);
    for (const c of ['BAD_MESSAGE', 'PROTOCOL', 'FRAME_TOO_LARGE', 'BAD_FRAME', 'REPLICA_DIVERGED']) assert.ok(codes.get(c), `${c} among the errors: ${summary}`);
    assert.ok((codes.get('HELLO_TIMEOUT') ?? 0) + (codes.get('PEER_TIMEOUT') ?? 0) >= 16, `stalled peers dropped: ${summary}`);
    assert.deepEqual(coordinator.workerIds, ['real']);

    // The same steps without any fuzzing: the same replica, bit for bit.
    // Every full-state answer after the BN synchronisation, and the parameter checksums, equal the coordinator's.
    await coordinator.syncBatchNormStats();
    await coordinator.verifyChecksums();
    assert.deepEqual(coordinator.workerIds, ['real']);
    const fuzzed = { params: coordinator.replica.checksum('parameters'), state: stateChecksum(coordinator.model) };
    const ref = coordinatorFor(CONFIG, noLog);
    const w = connectWorker(ref, 'real');
    await ref.waitForWorkers(1, 30000);
    for (let s = 0; s < steps; s++) await ref.step(batch(s), 'all', SGD);
    await ref.syncBatchNormStats();
    assert.deepEqual(fuzzed, { params: ref.replica.checksum('parameters'), state: stateChecksum(ref.model) });

    ref.shutdown('test done');
    coordinator.shutdown('test done');
    assert.equal(await childExit, 0);
    assert.match(childOut, new RegExp(`coordinator ended the session: test done; state checksum ${fuzzed.state}`));
    assert.equal(await w.done, undefined);
    ref.model.dispose();
  } finally {
    aborted = true;
    coordinator.shutdown('test done');
    stopChild();
    await listener.close();
    coordinator.model.dispose();
  }
});
