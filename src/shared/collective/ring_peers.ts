import { GdpError } from '../errors.js';
import { asGdpError } from '../protocol/peer.js';
import type { Transport } from '../protocol/transport.js';
import { listenWs, type ListenOptions, type WsListener } from '../protocol/ws_listener.js';
import { connectWs } from '../protocol/ws_transport.js';
import { HandshakeTransport } from './handshake_transport.js';
import type { RingLinks } from './ring_allreduce.js';
import { decodeRingMessage, encodeRingMessage, RING_PROTOCOL_VERSION, type RingMessageOf } from './ring_messages.js';
import { mod } from './ring_schedule.js';

/** Where a rank stands in a ring, as the coordinator tells every member when it forms (or re-forms) the ring. */
export interface RingSpec {
  /** The formation id: a new one for every (re-)formation, so links of an old ring are never taken into a new one. */
  ring: number;
  rank: number;
  size: number;
  /** The predecessor's (rank - 1) peer address, ws://HOST:PORT or wss://HOST:PORT (its RingEndpoint.url). */
  prev: string;
}

export interface RingDialOptions {
  /** The shared token (the coordinator's), sent with the upgrade request to the predecessor. */
  token?: string;
  /** PEM certificate(s) to trust for wss:// peers. */
  ca?: string | Buffer;
  /** Both links must be up within this time, else PEER_TIMEOUT. */
  timeoutMs: number;
}

export interface RingListenOptions extends Pick<ListenOptions, 'token' | 'tls' | 'log'> {
  /** An accepted connection must say ring_hello within this time (default 10 s); an unclaimed one waits as long. */
  helloTimeoutMs?: number;
  /** Successor links that arrived before this rank joined their ring, kept at most (default 4). */
  maxUnclaimed?: number;
}

interface Arrival {
  link: HandshakeTransport;
  hello: RingMessageOf<'ring_hello'>;
  timer: NodeJS.Timeout;
}

interface Waiter {
  spec: RingSpec;
  resolve: (t: HandshakeTransport) => void;
  reject: (e: GdpError) => void;
}

/**
 * A worker's peer port for ring all-reduces: listens (same token and TLS rules as the coordinator's port, through
 * listenWs), accepts its successor's link and dials its predecessor when it joins a ring. One ws link per
 * neighbour pair, opened by the receiving side (rank k dials k - 1), with a ring_hello naming the formation, the
 * dialer's rank and the ring size, answered by ring_accept. The chunks then flow from the listening side to the
 * dialer: server-to-client WebSocket frames are not masked, which saves two passes over every chunk (masking and
 * unmasking) against the other direction. A successor may dial before this rank was told of the ring: its link
 * waits (bounded: `maxUnclaimed`, `helloTimeoutMs`).
 */
export class RingEndpoint {
  private waiters = new Map<number, Waiter>();
  private unclaimed: Arrival[] = [];
  private closed = false;

  private constructor(
    private listener: WsListener | undefined,
    private readonly opts: RingListenOptions,
  ) {}

  /** Listens on host:port (port 0: any free port); see `url` for the address to give the predecessor. */
  static async listen(host: string, port: number, opts: RingListenOptions = {}): Promise<RingEndpoint> {
    const ep = new RingEndpoint(undefined, opts);
    ep.listener = await listenWs(host, port, (t) => void ep.accept(t), { token: opts.token, tls: opts.tls, log: opts.log, maxConnections: 16 });
    return ep;
  }

  /** This endpoint's address for its successor, e.g. ws://127.0.0.1:40213. */
  get url(): string {
    const l = this.listener!;
    const host = l.host.includes(':') ? `[${l.host}]` : l.host;
    return `${l.scheme}://${host}:${l.port}`;
  }

  private get helloTimeoutMs(): number {
    return this.opts.helloTimeoutMs ?? 10000;
  }

  private async accept(t: Transport): Promise<void> {
    const link = new HandshakeTransport(t);
    let hello: RingMessageOf<'ring_hello'>;
    try {
      const m = decodeRingMessage(await link.nextFrame(this.helloTimeoutMs, 'HELLO_TIMEOUT'));
      if (m.type !== 'ring_hello') throw new GdpError('PROTOCOL', `'${m.type}' as the first message, expected ring_hello`);
      if (m.protocol !== RING_PROTOCOL_VERSION)
        throw new GdpError('PROTOCOL_VERSION', `ring protocol ${m.protocol}, this worker speaks ${RING_PROTOCOL_VERSION}`);
      hello = m;
    } catch (err) {
      this.refuse(link, asGdpError(err));
      return;
    }
    const w = this.waiters.get(hello.ring);
    if (w) {
      this.claim(w, link, hello);
      return;
    }
    if (this.closed || this.unclaimed.length >= (this.opts.maxUnclaimed ?? 4)) {
      this.refuse(link, new GdpError('PROTOCOL', `ring ${hello.ring} is unknown here and ${this.unclaimed.length} links already wait`));
      return;
    }
    const arrival: Arrival = {
      link,
      hello,
      timer: setTimeout(() => {
        this.unclaimed = this.unclaimed.filter((a) => a !== arrival);
        this.refuse(link, new GdpError('PEER_TIMEOUT', `ring ${hello.ring} was not joined here within ${this.helloTimeoutMs} ms`));
      }, this.helloTimeoutMs),
    };
    arrival.timer.unref();
    this.unclaimed.push(arrival);
  }

  private refuse(link: Transport, err: GdpError): void {
    this.opts.log?.(`ring: refused a link from ${link.remote}: ${err.code}: ${err.message}`);
    link.close(`${err.code}: ${err.message}`);
  }

  /** Takes `link` as the successor's in the waiter's ring if the hello fits it, else refuses it. */
  private claim(w: Waiter, link: HandshakeTransport, hello: RingMessageOf<'ring_hello'>): void {
    const { ring, rank, size } = w.spec;
    if (hello.size !== size || hello.rank !== mod(rank + 1, size)) {
      this.refuse(
        link,
        new GdpError(
          'PROTOCOL',
          `ring ${ring}: rank ${hello.rank} of ${hello.size} dialed rank ${rank} of ${size}, whose successor is rank ${mod(rank + 1, size)}`,
        ),
      );
      return;
    }
    this.waiters.delete(ring);
    link.send(encodeRingMessage({ type: 'ring_accept', ring }));
    w.resolve(link);
  }

  /**
   * Joins ring `spec.ring` as rank `spec.rank`: dials the predecessor at `spec.prev` and takes the successor's link
   * (already waiting, or arriving within `dial.timeoutMs`). Resolves with both links for RingAllReduce (null for a
   * ring of 1). Rejects with CONNECT_FAILED or AUTH_REFUSED (dial), PROTOCOL (a link refused), WORKER_LOST (a
   * link closed during the handshake), PEER_TIMEOUT; nothing stays open then.
   */
  async join(spec: RingSpec, dial: RingDialOptions): Promise<RingLinks | null> {
    const { ring, rank, size } = spec;
    if (this.closed) throw new GdpError('INTERNAL', 'the ring endpoint is closed');
    if (!Number.isInteger(size) || size < 1 || !Number.isInteger(rank) || rank < 0 || rank >= size) {
      throw new GdpError('INTERNAL', `ring ${ring}: rank ${rank} of ${size}: need integers 0 <= rank < size`);
    }
    if (size === 1) return null;
    if (this.waiters.has(ring)) throw new GdpError('INTERNAL', `ring ${ring} is already being joined`);
    let timer: NodeJS.Timeout | undefined;
    let waiter: Waiter | undefined;
    const inbound = new Promise<HandshakeTransport>((resolve, reject) => {
      const w: Waiter = { spec, resolve, reject };
      waiter = w;
      this.waiters.set(ring, w);
      timer = setTimeout(() => {
        if (this.waiters.get(ring) === w) this.waiters.delete(ring);
        reject(new GdpError('PEER_TIMEOUT', `ring ${ring}: rank ${mod(rank + 1, size)} did not connect to rank ${rank} within ${dial.timeoutMs} ms`));
      }, dial.timeoutMs);
      timer.unref();
      const early = this.unclaimed.find((a) => a.hello.ring === ring);
      if (early) {
        clearTimeout(early.timer);
        this.unclaimed = this.unclaimed.filter((a) => a !== early);
        this.claim(w, early.link, early.hello);
      }
    });
    const outbound = this.dial(spec, dial);
    // A failed dial fails the join at once, not after the successor's timeout.
    outbound.catch((err) => waiter?.reject(asGdpError(err)));
    const [next, prev] = await Promise.allSettled([inbound, outbound]);
    clearTimeout(timer);
    this.waiters.delete(ring);
    if (prev.status === 'fulfilled' && next.status === 'fulfilled') return { prev: prev.value, next: next.value };
    if (prev.status === 'fulfilled') prev.value.close('ring formation failed');
    if (next.status === 'fulfilled') next.value.close('ring formation failed');
    throw asGdpError(prev.status === 'rejected' ? prev.reason : (next as PromiseRejectedResult).reason);
  }

  private async dial(spec: RingSpec, dial: RingDialOptions): Promise<HandshakeTransport> {
    const start = Date.now();
    const link = new HandshakeTransport(await connectWs(spec.prev, { token: dial.token, ca: dial.ca, timeoutMs: dial.timeoutMs }));
    try {
      link.send(encodeRingMessage({ type: 'ring_hello', protocol: RING_PROTOCOL_VERSION, ring: spec.ring, rank: spec.rank, size: spec.size }));
      const m = decodeRingMessage(await link.nextFrame(Math.max(1, dial.timeoutMs - (Date.now() - start))));
      if (m.type !== 'ring_accept' || m.ring !== spec.ring) throw new GdpError('PROTOCOL', `${spec.prev} answered ring_hello with '${m.type}'`);
      return link;
    } catch (err) {
      link.close('ring handshake failed');
      const e = asGdpError(err);
      throw new GdpError(e.code, `ring ${spec.ring}: rank ${spec.rank} dialing ${spec.prev}: ${e.message}`);
    }
  }

  /** Stops listening, fails pending joins and closes every link it accepted, handed out or not. */
  async close(): Promise<void> {
    this.closed = true;
    for (const a of this.unclaimed) {
      clearTimeout(a.timer);
      a.link.close('ring endpoint closing');
    }
    this.unclaimed = [];
    for (const w of this.waiters.values()) w.reject(new GdpError('WORKER_LOST', 'the ring endpoint closed'));
    this.waiters.clear();
    await this.listener?.close(500);
  }
}
