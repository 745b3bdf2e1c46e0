/**
 * The star all-reduce with N synthetic workers (no compute), for the exchange table beside the ring (bench/ring.ts):
 * N worker processes (bench/ws_peer_child.ts, grad mode) speak the real protocol to the coordinator's own code in
 * this process (WorkerLink requests, BucketAssembler checks, GradientReducer's sum in join order, bucket split):
 * `compute` to all -> N gradients up -> average -> `apply` + `avg` buckets to all, closed by a checksum request each
 * worker answers after its update arrived. Over emulated links (bench/netns.ts, root) the coordinator's side runs
 * in a namespace of its own: `node dist/bench/star.js ELEMS BUCKET_MIB REPS HOST WORKER_NS...` (run inside that
 * namespace, it prints `star_ms: X`), each worker in its namespace.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { GradientReducer } from '../src/coordinator/gradient_reducer.js';
import { starExchange } from './comm.js';
import { RequestNumbers, WorkerLink, type Hello } from '../src/coordinator/worker_link.js';
import { Peer } from '../src/shared/protocol/peer.js';
import type { Transport } from '../src/shared/protocol/transport.js';
import { bucketElements } from '../src/shared/protocol/version.js';
import { listenWs } from '../src/shared/protocol/ws_listener.js';
import { onAbort } from './cleanup.js';

const CHILD = fileURLToPath(new URL('./ws_peer_child.js', import.meta.url));

/**
 * Median ms of one star all-reduce of `elems` float32 values over `workers` worker processes on 127.0.0.1, over
 * `reps` rounds after one warm-up. Throws when a worker process exits early.
 */
export async function starAllReduceMs(
  elems: number,
  workers: number,
  opts: { bucketMib: number; reps: number; host?: string; workerNs?: string[] },
): Promise<number> {
  const bucketElems = bucketElements(opts.bucketMib);
  const host = opts.host ?? '127.0.0.1';
  const peers: Peer[] = [];
  const hellos: Promise<Hello>[] = [];
  let arrived: () => void = () => undefined;
  const all = new Promise<void>((res) => (arrived = res));
  // The Peer is made at once: a worker's hello may arrive before the others have connected.
  const listener = await listenWs(host, 0, (t: Transport) => {
    const peer = new Peer(t, { name: `bench worker ${peers.length}`, heartbeatMs: 2000, timeoutMs: 600000, log: (l) => process.stderr.write(`  ${l}\n`) });
    peers.push(peer);
    hellos.push(new Promise<Hello>((res) => peer.onMessage((m) => m.type === 'hello' && res(m))));
    if (peers.length === workers) arrived();
  });
  const children: ChildProcess[] = Array.from({ length: workers }, (_, k) => {
    const args = [CHILD, 'grad', `ws://${host}:${listener.port}`, String(elems), String(bucketElems), 'float32'];
    const ns = opts.workerNs?.[k];
    return ns
      ? spawn('ip', ['netns', 'exec', ns, process.execPath, ...args], { stdio: ['ignore', 'ignore', 'inherit'] })
      : spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  });
  const unregister = onAbort(() => children.forEach((c) => c.kill('SIGKILL')));
  const exited = Promise.race(children.map((c) => once(c, 'exit').then(([code]) => Promise.reject(new Error(`a star worker exited early (${code})`)))));
  exited.catch(() => undefined);
  const reducer = new GradientReducer();
  try {
    await Promise.race([all, exited]);
    const numbers = new RequestNumbers();
    const links = await Promise.all(peers.map(async (peer, i) => new WorkerLink(peer, { ...(await hellos[i]), workerId: `w${i}` }, 600000, 600000, numbers)));
    const round = async (): Promise<number> => {
      const t0 = performance.now();
      await starExchange(links, reducer, elems, bucketElems, 'float32', () => 0);
      return performance.now() - t0;
    };
    const ms: number[] = [];
    for (let i = 0; i <= opts.reps; i++) ms.push(await Promise.race([round(), exited]));
    const s = ms.slice(1).sort((a, b) => a - b);
    return s[Math.floor(s.length / 2)];
  } finally {
    for (const p of peers) p.close('bench finished');
    await listener.close();
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? once(c, 'exit') : undefined)));
    unregister();
  }
}

// Run as a script (inside the coordinator's namespace): ELEMS BUCKET_MIB REPS HOST WORKER_NS...
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [elems, bucketMib, reps, host, ...workerNs] = process.argv.slice(2);
  const ms = await starAllReduceMs(Number(elems), workerNs.length, { bucketMib: Number(bucketMib), reps: Number(reps), host, workerNs });
  console.log(`star_ms: ${ms}`);
}
