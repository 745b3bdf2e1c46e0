import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { WebSocketServer, type WebSocket } from 'ws';
import { GradientReducer } from '../src/coordinator/gradient_reducer.js';
import { WorkerLink, type Hello } from '../src/coordinator/worker_link.js';
import { splitBuckets, type BucketDtype } from '../src/shared/protocol/buckets.js';
import { Peer } from '../src/shared/protocol/peer.js';
import { toWire } from '../src/shared/protocol/tensor.js';
import type { Transport } from '../src/shared/protocol/transport.js';
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
  const exited = new Promise<never>((_, reject) => child.once('exit', (code, sig) => reject(new Error(`ws peer process (${args[0]}) exited (${code ?? sig}): ${stderr.trim()}`))));
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
 * Raw ws throughput on 127.0.0.1, one direction, between this process and another: `up` is worker ->
 * coordinator (client frames, which WebSocket masks: what a gradient upload pays), `down` coordinator -> worker
 * (unmasked: the averaged gradient's way). `totalBytes` in `frameBytes` binary frames, timed from the start
 * signal to the last byte received. No codec, no buckets: the ceiling the protocol can approach.
 */
export async function rawWsThroughput(direction: 'up' | 'down', totalBytes: number, frameBytes: number): Promise<{ mbPerSec: number; ms: number }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, maxPayload: MAX_FRAME_BYTES });
  await new Promise<void>((res) => wss.once('listening', () => res()));
  const port = (wss.address() as { port: number }).port;
  const peer = startChild([`raw-${direction}`, `ws://127.0.0.1:${port}`, String(totalBytes), String(frameBytes)]);
  try {
    const ws = await Promise.race([new Promise<WebSocket>((res) => wss.once('connection', (s) => res(s))), peer.exited]);
    let done: Promise<number>;
    const t0 = performance.now();
    if (direction === 'up') {
      done = receiveBytes(ws, totalBytes);
      ws.send('go');
    } else {
      done = new Promise<number>((res) => ws.once('message', () => res(performance.now())));
      void sendFrames(ws, totalBytes, frameBytes).catch(() => undefined);
    }
    const ms = (await Promise.race([done, peer.exited])) - t0;
    return { mbPerSec: totalBytes / MB / (ms / 1000), ms };
  } finally {
    for (const c of wss.clients) c.terminate();
    await new Promise<void>((res) => wss.close(() => res()));
    await peer.stop();
  }
}

export interface GradExchange {
  elems: number;
  /** One exchange: worker's gradient up, averaged, averaged gradient down (ms, mean over `rounds`). */
  ms: number;
  /** Gradient payload moved (up + down) per second, counted as float32 (a float16 upload moves half the bytes). */
  mbPerSec: number;
  rounds: number;
}

/**
 * A gradient of `elems` floats through the real protocol over ws on 127.0.0.1, with the coordinator's own
 * code on this side (WorkerLink's request + BucketAssembler reassembly and validation, GradientReducer, bucket
 * split, Peer codec) and a worker's side in another process: `compute` -> `grad` buckets + `computed` -> average
 * -> `apply` + `avg` buckets, closed by a checksum request the far end answers only after the update arrived.
 * The worker's gradient computation and both sides' SGD updates are not included.
 */
export async function gradExchange(
  elems: number,
  opts: { bucketMib: number; rounds: number; warmup: number; dtype?: BucketDtype },
): Promise<GradExchange> {
  const bucketElems = bucketElements(opts.bucketMib);
  const dtype = opts.dtype ?? 'float32';
  let accept!: (t: Transport) => void;
  const accepted = new Promise<Transport>((res) => (accept = res));
  const listener = await listenWs('127.0.0.1', 0, (t) => accept(t));
  const far = startChild(['grad', `ws://${listener.host}:${listener.port}`, String(elems), String(bucketElems), dtype]);
  const reducer = new GradientReducer();
  let peer: Peer | undefined;
  try {
    const transport = await Promise.race([accepted, far.exited]);
    peer = new Peer(transport, { name: 'bench worker', heartbeatMs: 2000, timeoutMs: 600000, log: (l) => process.stderr.write(`  ${l}\n`) });
    const p = peer;
    const hello = await Promise.race([
      new Promise<Hello>((res) => p.onMessage((m) => m.type === 'hello' && res(m))),
      far.exited,
    ]);
    const link = new WorkerLink(p, hello, 600000, 600000);
    const sgd = { lr: 0.01, momentum: 0.9, weightDecay: 0, nesterov: false };
    const exchange = async () => {
      const answer = await link.request(
        'computed',
        (seq) => [{ type: 'compute', seq, set: 'all', indices: toWire(new Int32Array([0])), seed: 0 }],
        (seq) => reducer.gradientSink(`gradient for request ${seq}`, elems, bucketElems, 1, dtype),
      );
      const avg = await reducer.average([answer.grad], answer.stats.count);
      const buckets = splitBuckets(avg, bucketElems);
      link.post((seq) => [{ type: 'apply', seq, set: 'all', sgd }, ...buckets.map((data, index) => ({ type: 'bucket' as const, stream: 'avg' as const, seq, index, data }))], answer.seq);
      await link.request('checksum', (seq) => [{ type: 'checksum_request', seq }]);
    };
    for (let i = 0; i < opts.warmup; i++) await Promise.race([exchange(), far.exited]);
    const t0 = performance.now();
    for (let i = 0; i < opts.rounds; i++) await Promise.race([exchange(), far.exited]);
    const ms = (performance.now() - t0) / opts.rounds;
    return { elems, ms, mbPerSec: (2 * elems * 4) / MB / (ms / 1000), rounds: opts.rounds };
  } finally {
    peer?.close('bench finished');
    await reducer.close();
    await listener.close();
    await far.stop();
  }
}
