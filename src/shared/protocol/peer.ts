import { GdpError } from '../errors.js';
import { decodeMessage, encodeMessage } from './codec.js';
import type { Message } from './messages.js';
import type { Transport } from './transport.js';

export interface PeerOptions {
  /** For logs: "worker w1 (127.0.0.1:5123)". */
  name: string;
  heartbeatMs: number;
  /** Silence longer than this closes the connection (generous: a busy peer's event loop may be blocked). */
  timeoutMs: number;
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
    transport.onClose((reason) => this.finish(reason));
    this.timer = setInterval(() => this.tick(), opts.heartbeatMs);
    this.timer.unref();
  }

  get name(): string {
    return this.opts.name;
  }

  onMessage(fn: (m: Message) => void): void {
    this.handlers.push(fn);
  }
  onClose(fn: (reason: string, err?: GdpError) => void): void {
    this.closeHandlers.push(fn);
  }

  send(msg: Message): void {
    if (this.closing) return;
    this.transport.send(encodeMessage(msg));
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
    this.transport.close(reason);
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
    if (Date.now() - this.lastSeen > this.opts.timeoutMs) {
      this.fail(new GdpError('PEER_TIMEOUT', `nothing received for ${this.opts.timeoutMs} ms`));
      return;
    }
    try {
      this.send({ type: 'heartbeat', t: Date.now() });
    } catch {
      // A failed heartbeat shows up as a closed socket.
    }
  }

  private finish(reason: string): void {
    if (this.closed) return;
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
