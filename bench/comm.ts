import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { WebSocketServer, type WebSocket } from 'ws';
import { GradientReducer, postAveragedBucket } from '../src/coordinator/gradient_reducer.js';
import { RequestNumbers, WorkerLink, type Hello } from '../src/coordinator/worker_link.js';
import type { BucketDtype } from '../src/shared/protocol/buckets.js';
import { Peer } from '../src/shared/protocol/peer.js';
import { toWire } from '../src/shared/protocol/tensor.js';
import { MAX_FRAME_BYTES, bucketElements } from '../src/shared/protocol/version.js';
import { listenWs } from '../src/shared/protocol/ws_listener.js';
import { onAbort } from './cleanup.js';
import { receiveBytes, sendFrames } from './ws_frames.js';

const CHILD = fileURLToPath(new URL('./ws_peer_child.js', import.meta.url));
const MB = 1e6;

/** Starts the far end; `exited` rejects when it exits (its stderr in the message), so a wait can race it. */
function startChild(args: string[]): { child: ChildProcess; exited: Promise<never>; stop: () => Promise<void> } {
  const child = spawn(process.execPath, [CHILD, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  const unregister = onAbort(() => child.kill('SIGKILL'));
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (code, sig) => reject(new Error(`ws peer process (${args[0]}) exited (${code ?? sig}): ${stderr.trim()}`))),
  );
  exited.catch(() => undefined);
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const gone = new Promise<void>((res) => child.once('exit', () => res()));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await gone;
      clearTimeout(t);
    }
    unregister();
  };
  return { child, exited, stop };
}

/**
 * Raw ws throughput on 127.0.0.1, one direction, between this process and `clients` other processes (default 1):
 * `up` is worker -> coordinator (client frames, which WebSocket masks: what a gradient upload pays), `down`
 * coordinator -> worker (unmasked: the averaged gradient's way). Each client moves `totalBytes` in `frameBytes`
 * binary frames, all at once, timed from the start signal to the last byte received. No codec, no buckets: the
 * ceiling the protocol can approach.
 */
export async function rawWsThroughput(
  direction: 'up' | 'down',
  totalBytes: number,
  frameBytes: number,
  clients = 1,
): Promise<{ mbPerSec: number; ms: number }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, maxPayload: MAX_FRAME_BYTES });
  await new Promise<void>((res) => wss.once('listening', () => res()));
  const port = (wss.address() as { port: number }).port;
  const sockets: WebSocket[] = [];
  const connected = new Promise<void>((res) =>
    wss.on('connection', (s) => {
      if (sockets.push(s) === clients) res();
    }),
  );
  const peers = Array.from({ length: clients }, () => startChild([`raw-${direction}`, `ws://127.0.0.1:${port}`, String(totalBytes), String(frameBytes)]));
  const exited = Promise.race(peers.map((p) => p.exited));
  try {
    await Promise.race([connected, exited]);
    const t0 = performance.now();
    const done = sockets.map((ws) => {
      if (direction === 'up') {
        const got = receiveBytes(ws, totalBytes);
        ws.send('go');
        return got;
      }
      const got = new Promise<number>((res) => ws.once('message', () => res(performance.now())));
      void sendFrames(ws, totalBytes, frameBytes).catch(() => undefined);
      return got;
    });
    const ms = Math.max(...(await Promise.race([Promise.all(done), exited]))) - t0;
    return { mbPerSec: (clients * totalBytes) / MB / (ms / 1000), ms };
  } finally {
    for (const c of wss.clients) c.terminate();
    await new Promise<void>((res) => wss.close(() => res()));
    await Promise.all(peers.map((p) => p.stop()));
  }
}

export interface GradExchange {
  elems: number;
  workers: number;
  /** One exchange: every worker's gradient up, averaged, averaged gradient down (ms, mean over `rounds`). */
  ms: number;
  /** Gradient payload moved (up + down, all workers) per second, counted as float32 (float16 uploads move half). */
  mbPerSec: number;
  rounds: number;
}

/**
 * A gradient of `elems` floats from each of `workers` (default 1) worker processes through the real protocol over
 * ws on 127.0.0.1, with the coordinator's own code on this side (WorkerLink's requests, the GradientReducer's
 * streaming reduction with its checks, Peer codec) doing what Collectives' gather and commit do: `compute` ->
 * `grad` buckets + `computed`, each averaged bucket sent back behind `average` as soon as it is complete, then
 * `apply`; closed by a checksum request the far ends answer only after the update arrived. The workers' gradient
 * computation and the SGD updates are not included.
 */
export async function gradExchange(
  elems: number,
  opts: { bucketMib: number; rounds: number; warmup: number; dtype?: BucketDtype; workers?: number },
): Promise<GradExchange> {
  const bucketElems = bucketElements(opts.bucketMib);
  const dtype = opts.dtype ?? 'float32';
  const n = opts.workers ?? 1;
  const peers: Peer[] = [];
  const hellos: Promise<Hello>[] = [];
  let connected!: () => void;
  const all = new Promise<void>((res) => (connected = res));
  // The Peer goes on at once: a worker's hello follows its connection before the other workers have connected.
  const listener = await listenWs('127.0.0.1', 0, (transport) => {
    const p = new Peer(transport, { name: 'bench worker', heartbeatMs: 2000, timeoutMs: 600000, log: (l) => process.stderr.write(`  ${l}\n`) });
    hellos.push(new Promise<Hello>((res) => p.onMessage((m) => m.type === 'hello' && res(m))));
    if (peers.push(p) === n) connected();
  });
  const far = Array.from({ length: n }, () => startChild(['grad', `ws://${listener.host}:${listener.port}`, String(elems), String(bucketElems), dtype]));
  const exited = Promise.race(far.map((f) => f.exited));
  const reducer = new GradientReducer();
  try {
    await Promise.race([all, exited]);
    const numbers = new RequestNumbers();
    const links = await Promise.all(peers.map(async (p, i) => new WorkerLink(p, await Promise.race([hellos[i], exited]), 600000, 600000, numbers)));
    const exchange = () => starExchange(links, reducer, elems, bucketElems, dtype, (w) => w);
    for (let i = 0; i < opts.warmup; i++) await Promise.race([exchange(), exited]);
    const t0 = performance.now();
    for (let i = 0; i < opts.rounds; i++) await Promise.race([exchange(), exited]);
    const ms = (performance.now() - t0) / opts.rounds;
    return { elems, workers: n, ms, mbPerSec: (2 * n * elems * 4) / MB / (ms / 1000), rounds: opts.rounds };
  } finally {
    for (const p of peers) p.close('bench finished');
    await listener.close();
    await Promise.all(far.map((f) => f.stop()));
  }
}

/**
 * One star all-reduce through the coordinator's own code: compute requests to every link (sample index
 * `sample(w)`), each worker's buckets reduced as they arrive and every averaged bucket sent back at once behind an
 * `average` header, then `apply`; closed by a checksum request the far ends answer only after the update arrived.
 */
export async function starExchange(
  links: WorkerLink[],
  reducer: GradientReducer,
  elems: number,
  bucketElems: number,
  dtype: BucketDtype,
  sample: (w: number) => number,
): Promise<void> {
  const sgd = { lr: 0.01, momentum: 0.9, weightDecay: 0, nesterov: false };
  // One number for every link's step messages (links made with one RequestNumbers, as the cluster's are), so each
  // averaged bucket is encoded once for all of them, as Collectives' gather does.
  const step = links.every((l) => l.numbers === links[0].numbers) ? links[0].numbers.take() : undefined;
  const seqs = new Map<WorkerLink, number>();
  const reduction = reducer.begin({
    size: elems,
    bucketElems,
    workers: links.map((l) => l.id),
    count: links.length,
    dtype,
    onAveraged: (index, values) => postAveragedBucket(seqs, index, values),
    fail: (w, err) => links[w].peer.fail(err),
  });
  const answers = links.map((link, w) =>
    link.request(
      'computed',
      (seq) => {
        seqs.set(link, seq);
        return [{ type: 'compute', seq, set: 'all', indices: toWire(new Int32Array([sample(w)])), seed: 0 }];
      },
      () => reduction.sink(w),
      step,
    ),
  );
  links.forEach((l) => l.post((seq) => [{ type: 'average', seq, set: 'all' }], seqs.get(l)));
  await Promise.all(answers);
  reduction.result();
  links.forEach((l) => l.post((seq) => [{ type: 'apply', seq, set: 'all', sgd }], seqs.get(l)));
  await Promise.all(links.map((l) => l.request('checksum', (seq) => [{ type: 'checksum_request', seq }])));
}
