import { GdpError } from '../errors.js';
import type { Transport } from '../protocol/transport.js';

/**
 * A transport that holds the frames arriving before anyone listens, so that a link can change hands after its
 * handshake (the ring's peer link: `nextFrame` reads the hello, then the all-reduce engine takes the link) without
 * losing what the other side sent meanwhile. At most `maxQueued` frames wait; one more closes the link.
 */
export class HandshakeTransport implements Transport {
  private queue: Uint8Array[] = [];
  private frameFns: ((f: Uint8Array) => void)[] = [];
  private closeFns: ((reason: string, err?: GdpError) => void)[] = [];
  private ended?: [string, GdpError | undefined];
  private waiter?: { resolve: (f: Uint8Array) => void; reject: (e: GdpError) => void };

  constructor(
    private readonly inner: Transport,
    private readonly maxQueued = 4,
  ) {
    inner.onFrame((f) => this.arrive(f));
    inner.onClose((reason, err) => {
      this.ended = [reason, err];
      this.waiter?.reject(err ?? new GdpError('WORKER_LOST', `${inner.remote} closed the link: ${reason}`));
      this.waiter = undefined;
      for (const fn of this.closeFns) fn(reason, err);
    });
  }

  get remote(): string {
    return this.inner.remote;
  }

  private arrive(f: Uint8Array): void {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve(f);
    } else if (this.frameFns.length) {
      for (const fn of this.frameFns) fn(f);
    } else if (this.queue.length >= this.maxQueued) {
      this.inner.close(`more than ${this.maxQueued} frames before the link was taken`);
    } else {
      this.queue.push(f);
    }
  }

  /** The next frame not yet read (handshakes); rejects with WORKER_LOST on close, `code` after `timeoutMs`. */
  nextFrame(timeoutMs: number, code: 'PEER_TIMEOUT' | 'HELLO_TIMEOUT' = 'PEER_TIMEOUT'): Promise<Uint8Array> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.ended) return Promise.reject(new GdpError('WORKER_LOST', `${this.remote} closed the link: ${this.ended[0]}`));
    if (this.waiter) return Promise.reject(new GdpError('INTERNAL', `${this.remote}: a frame is already awaited`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new GdpError(code, `${this.remote}: nothing received within ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      this.waiter = {
        resolve: (f) => (clearTimeout(timer), resolve(f)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
    });
  }

  send(frame: Uint8Array, sent?: () => void): void {
    this.inner.send(frame, sent);
  }
  /** The first listener also gets the frames that arrived before it, at once and in order. */
  onFrame(fn: (frame: Uint8Array) => void): void {
    this.frameFns.push(fn);
    const q = this.queue;
    this.queue = [];
    for (const f of q) fn(f);
  }
  /** A listener added after the close hears of it at once. */
  onClose(fn: (reason: string, err?: GdpError) => void): void {
    this.closeFns.push(fn);
    if (this.ended) fn(...this.ended);
  }
  close(reason?: string): void {
    this.inner.close(reason);
  }
}
