import { RingAllReduce, type RingLinks } from '../../src/shared/collective/ring_allreduce.js';
import { memoryPair, type Transport } from '../../src/shared/protocol/transport.js';
import { randomArray } from '../helpers.js';

/**
 * Links of an N-rank ring over in-memory transports: rank k's `next` is linked to rank k+1's `prev`. `wrapNext`
 * may replace a rank's outgoing transport (to tamper with what it sends).
 */
export function memoryRingLinks(n: number, wrapNext: (rank: number, t: Transport) => Transport = (_, t) => t): (RingLinks | null)[] {
  if (n === 1) return [null];
  const links: { next?: Transport; prev?: Transport }[] = Array.from({ length: n }, () => ({}));
  for (let k = 0; k < n; k++) {
    const [a, b] = memoryPair([`rank${k}`, `rank${(k + 1) % n}`]);
    links[k].next = wrapNext(k, a);
    links[(k + 1) % n].prev = b;
  }
  return links.map((l) => ({ next: l.next!, prev: l.prev! }));
}

export function memoryRing(n: number, bucketElems: number, timeoutMs = 20000, wrapNext?: (rank: number, t: Transport) => Transport): RingAllReduce[] {
  return memoryRingLinks(n, wrapNext).map((links, rank) => new RingAllReduce(links, { rank, size: n, bucketElems, timeoutMs }));
}

/** Per-rank gradient sums: random values of a few magnitudes, so that the summation order shows in the bits. */
export function rankGradients(n: number, size: number, seed: number): Float32Array[] {
  return Array.from({ length: n }, (_, k) => {
    const g = randomArray(size, seed * 101 + k + 1, 10 ** ((k % 3) - 1));
    return g;
  });
}

export function bits(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

/** Settles every promise; the outcome per rank: the value or the error's code. */
export async function outcomes<T>(ps: Promise<T>[]): Promise<(T | string)[]> {
  const r = await Promise.allSettled(ps);
  return r.map((x) => (x.status === 'fulfilled' ? x.value : ((x.reason as { code?: string }).code ?? String(x.reason))));
}

export function delay(ms: number): Promise<void> {
  return new Promise((res) => setTimeout(res, ms));
}
