import { GdpError } from '../errors.js';
import { EncodedMessage, decodeMessage, encodeMessage, frameSent } from './codec.js';
import type { Message } from './messages.js';
import type { Transport } from './transport.js';

export interface PeerOptions {
  /** For logs: "worker w1 (127.0.0.1:5123)". */
  name: string;
  heartbeatMs: number;
  /**
   * Silence longer than this closes the connection. A function when the allowance depends on what the other side
   * is doing (a peer computing cannot send heartbeats).
   */
  timeoutMs: number | (() => number);
  log: (line: string) => void;
}

/**
 * One end of a connection as validated, typed messages. Heartbeats are sent and consumed here. A frame that does
 * not decode, or a handler that rejects a message, ends the connection with a logged error naming the problem;
 * nothing of that message reaches the caller.
 */
export class Peer {
  private handlers: ((m: Message) => void)[] = [];
  private closeHandlers: ((reason: string, err?: GdpError) => void)[] = [];
  private lastSeen = Date.now();
  private lastTick = Date.now();
  private timer: NodeJS.Timeout;
  private closing = false;
  closed = false;
  /** Set when the connection ended because of an error. */
  error?: GdpError;

  constructor(
    readonly transport: Transport,
    private readonly opts: PeerOptions,
  ) {
    transport.onFrame((frame) => this.receive(frame));
    transport.onClose((reason, err) => this.finish(reason, err));
    this.timer = this.startTimer();
  }

  private startTimer(): NodeJS.Timeout {
    const t = setInterval(() => this.tick(), this.opts.heartbeatMs);
    t.unref();
    return t;
  }

  get name(): string {
    return this.opts.name;
  }

  /** True from the moment this side decided to close (a failure, a close call): nothing more is sent or read. */
  get ending(): boolean {
    return this.closing;
  }

  /** Changes the heartbeat period and silence timeout (a worker follows the coordinator's config once welcomed). */
  configure(o: { heartbeatMs: number; timeoutMs: number | (() => number) }): void {
    this.opts.heartbeatMs = o.heartbeatMs;
    this.opts.timeoutMs = o.timeoutMs;
    if (this.closing) return;
    clearInterval(this.timer);
    this.timer = this.startTimer();
  }

  onMessage(fn: (m: Message) => void): void {
    this.handlers.push(fn);
  }
  onClose(fn: (reason: string, err?: GdpError) => void): void {
    this.closeHandlers.push(fn);
  }

  /** Sends a message, or the frame of one encoded once for several peers (codec.ts' encodeOnce). */
  send(msg: Message | EncodedMessage): void {
    if (this.closing) return;
    if (msg instanceof EncodedMessage) {
      this.transport.send(msg.frame, msg.sending());
      return;
    }
    const frame = encodeMessage(msg);
    this.transport.send(frame, () => frameSent(frame));
  }

  /** Ends the connection because of `err`: logs it, tells the other side, closes. */
  fail(err: GdpError): void {
    if (this.closing) return;
    this.error = err;
    this.opts.log(`error: ${this.opts.name}: ${err.code}: ${err.message}; closing the connection`);
    try {
      this.transport.send(encodeMessage({ type: 'error', code: err.code, message: err.message }));
    } catch {
      // The error message itself is best effort.
    }
    this.close(`${err.code}: ${err.message}`);
  }

  close(reason = 'closed'): void {
    if (this.closing) return;
    this.closing = true;
    clearInterval(this.timer);
    try {
      this.transport.close(reason);
    } catch (err) {
      // Closing must not throw into whoever reads frames; the connection is over either way.
      this.opts.log(`error: ${this.opts.name}: closing the connection: ${(err as Error).message}`);
    }
    // Over for us now, not when the other side acknowledges: a stalled peer never would, and requests waiting on
    // it must fail at once so that the operation is redone without it.
    this.finish(reason);
  }

  private receive(frame: Uint8Array): void {
    if (this.closing) return;
    this.lastSeen = Date.now();
    let msg: Message;
    try {
      msg = decodeMessage(frame);
    } catch (err) {
      this.fail(asGdpError(err));
      return;
    }
    if (msg.type === 'heartbeat') return;
    try {
      // A copy: a handler may add handlers (for the next messages, not this one).
      for (const fn of [...this.handlers]) fn(msg);
    } catch (err) {
      this.fail(asGdpError(err));
    }
  }

  private tick(): void {
    const now = Date.now();
    // Our own event loop was blocked (a long computation, a checkpoint): frames that arrived meanwhile are still
    // unread, and timers run first, so the silence is ours, not the peer's. Start counting afresh.
    if (now - this.lastTick > 3 * this.opts.heartbeatMs) this.lastSeen = now;
    this.lastTick = now;
    const limit = typeof this.opts.timeoutMs === 'function' ? this.opts.timeoutMs() : this.opts.timeoutMs;
    if (now - this.lastSeen > limit) {
      this.fail(new GdpError('PEER_TIMEOUT', `nothing received for ${now - this.lastSeen} ms (limit ${limit} ms): the peer stopped or stalled`));
      return;
    }
    try {
      this.send({ type: 'heartbeat', t: Date.now() });
    } catch {
      // A failed heartbeat shows up as a closed socket.
    }
  }

  private finish(reason: string, err?: GdpError): void {
    if (this.closed) return;
    // The transport refused a frame (oversized, not a valid WebSocket frame): the same clear error as ours.
    if (err && !this.error && !this.closing) {
      this.error = err;
      this.opts.log(`error: ${this.opts.name}: ${err.code}: ${err.message}; connection closed`);
    }
    this.closed = true;
    this.closing = true;
    clearInterval(this.timer);
    for (const fn of this.closeHandlers) fn(reason, this.error);
  }
}

export function asGdpError(err: unknown): GdpError {
  if (err instanceof GdpError) return err;
  return new GdpError('INTERNAL', err instanceof Error ? err.message : String(err));
}
