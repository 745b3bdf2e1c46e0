import { GdpError } from '../shared/errors.js';
import { asGdpError } from '../shared/protocol/peer.js';
import type { Transport } from '../shared/protocol/transport.js';

/** What one connection runs: resolves when the coordinator ends the session, rejects when it ends otherwise. */
export interface Session {
  run(): Promise<void>;
  close(reason: string): void;
  /** True once the coordinator's state was loaded: the connection was a working session. */
  readonly welcomed: boolean;
}

export interface ReconnectOptions {
  url: string;
  connect: (url: string) => Promise<Transport>;
  /** A fresh session on a new connection: the coordinator's welcome carries its whole state each time. */
  session: (t: Transport) => Session;
  /** Keep trying this long after the connection is lost (or the first attempt fails); 0: never retry. */
  retryForMs: number;
  /** Back-off between attempts: doubling from `minDelayMs` up to `maxDelayMs`. */
  minDelayMs?: number;
  maxDelayMs?: number;
  log: (line: string) => void;
}

/**
 * Codes of endings that another attempt may cure: the coordinator unreachable or gone without a 'shutdown' (killed,
 * restarting), silence, or a refusal because it still holds this worker's previous connection. Anything else (a
 * 'shutdown', a protocol-version refusal, an error the coordinator reports) ends the worker.
 */
const RETRYABLE = new Set(['CONNECT_FAILED', 'DISCONNECTED', 'PEER_TIMEOUT', 'DUPLICATE_WORKER', 'TOO_MANY_CONNECTIONS']);

export function isRetryable(err: unknown): boolean {
  return err instanceof GdpError && RETRYABLE.has(err.code);
}

/**
 * Connects and runs sessions until one ends for good. A lost connection is retried with exponential back-off
 * for up to `retryForMs` (the window and the back-off restart after every session that was welcomed).
 * `stop()` ends it: the current session is closed and no attempt follows.
 */
export class Reconnector {
  private current?: Session;
  private stopped = false;
  private wake?: () => void;

  constructor(private readonly o: ReconnectOptions) {}

  async run(): Promise<void> {
    const minDelay = this.o.minDelayMs ?? 500;
    const maxDelay = this.o.maxDelayMs ?? 10000;
    let delay = minDelay;
    let since = Date.now();
    let retries = 0;
    for (;;) {
      let welcomed = false;
      try {
        const transport = await this.o.connect(this.o.url);
        if (this.stopped) {
          transport.close('worker stopping');
          return;
        }
        this.current = this.o.session(transport);
        try {
          await this.current.run();
          return;
        } finally {
          welcomed = this.current.welcomed;
          this.current = undefined;
        }
      } catch (err) {
        if (this.stopped || !isRetryable(err)) throw err;
        if (welcomed) {
          delay = minDelay;
          since = Date.now();
          retries = 0;
        }
        const left = this.o.retryForMs - (Date.now() - since);
        const why = asGdpError(err).message;
        if (left <= 0) {
          throw new GdpError(
            asGdpError(err).code,
            `${why}; ${this.o.retryForMs > 0 ? `gave up after retrying for ${Math.round(this.o.retryForMs / 1000)} s` : 'not retrying (--retry-for 0)'}`,
          );
        }
        const wait = Math.min(delay, left);
        this.o.log(`${why}; reconnecting to ${this.o.url} in ${(wait / 1000).toFixed(1)} s (retry ${++retries}, giving up in ${Math.ceil(left / 1000)} s)`);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, wait);
          this.wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
        this.wake = undefined;
        if (this.stopped) throw err;
        delay = Math.min(2 * delay, maxDelay);
      }
    }
  }

  stop(reason: string): void {
    this.stopped = true;
    this.current?.close(reason);
    this.wake?.();
  }
}
