import type { GdpError } from '../errors.js';

/**
 * Moves opaque frames between two endpoints; knows nothing of messages. Frames arrive in order; `onClose` fires
 * once, whichever side closed, with an error when the transport itself refused what the other side sent.
 */
export interface Transport {
  /** Who is on the other end, for logs (e.g. "127.0.0.1:50212"). */
  readonly remote: string;
  /**
   * Sends one frame. `sent`, when given, is called once the transport no longer reads `frame` (written to the socket,
   * or copied), so its buffer may be reused; never when the frame was not sent or its write failed.
   */
  send(frame: Uint8Array, sent?: () => void): void;
  onFrame(fn: (frame: Uint8Array) => void): void;
  onClose(fn: (reason: string, err?: GdpError) => void): void;
  close(reason?: string): void;
}

class MemoryTransport implements Transport {
  peer!: MemoryTransport;
  private frameFns: ((f: Uint8Array) => void)[] = [];
  private closeFns: ((r: string) => void)[] = [];
  private closed = false;
  constructor(readonly remote: string) {}

  send(frame: Uint8Array, sent?: () => void): void {
    if (this.closed) return;
    // A copy, delivered on a later turn of the event loop: the receiver never aliases the sender's memory (whose
    // buffer may serve the next frame once `sent` ran), and ordering is FIFO like a socket's. Uint8Array's slice, as
    // a Buffer's slice() is a view.
    const copy = Uint8Array.prototype.slice.call(frame);
    sent?.();
    setImmediate(() => {
      if (!this.peer.closed) for (const fn of this.peer.frameFns) fn(copy);
    });
  }
  onFrame(fn: (frame: Uint8Array) => void): void {
    this.frameFns.push(fn);
  }
  onClose(fn: (reason: string) => void): void {
    this.closeFns.push(fn);
  }
  close(reason = 'closed'): void {
    // Frames already sent are still delivered first, as a socket flushes before its close frame.
    setImmediate(() => {
      this.finish(reason);
      this.peer.finish(reason);
    });
  }
  private finish(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    for (const fn of this.closeFns) fn(reason);
  }
}

/** Two linked in-memory transports (tests and in-process workers): what one sends, the other receives. */
export function memoryPair(names: [string, string] = ['memory:a', 'memory:b']): [Transport, Transport] {
  const a = new MemoryTransport(names[1]);
  const b = new MemoryTransport(names[0]);
  a.peer = b;
  b.peer = a;
  return [a, b];
}
