import { WebSocket } from 'ws';
import { GdpError, type ErrorCode } from '../errors.js';
import type { Transport } from './transport.js';
import { MAX_FRAME_BYTES } from './version.js';

/** ws' own refusals of what the other side sent (ws error codes), as GdpErrors; socket-level errors stay plain. */
function frameError(err: Error & { code?: string }): GdpError | undefined {
  if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH')
    return new GdpError('FRAME_TOO_LARGE', `a frame over the ${MAX_FRAME_BYTES}-byte limit (${err.message})`);
  if (err.code?.startsWith('WS_ERR_')) return new GdpError('BAD_FRAME', `not a valid WebSocket frame: ${err.message}`);
  return undefined;
}

/** A close reason within the WebSocket limit of 123 bytes of UTF-8 (ws throws beyond it). */
export function closeReason(reason: string): string {
  let r = reason.slice(0, 123);
  while (Buffer.byteLength(r, 'utf8') > 123) r = r.slice(0, -1);
  return r;
}

export class WsTransport implements Transport {
  constructor(
    private readonly ws: WebSocket,
    readonly remote: string,
  ) {
    ws.binaryType = 'nodebuffer';
  }
  send(frame: Uint8Array, sent?: () => void): void {
    // ws calls back once the frame is written to the socket (or with an error: then it is not reused).
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(frame, { binary: true }, sent && ((err) => !err && sent()));
  }
  onFrame(fn: (frame: Uint8Array) => void): void {
    this.ws.on('message', (data: Buffer | ArrayBuffer | Buffer[]) => {
      // A text frame is passed on as bytes too: the codec rejects it with a clear error.
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      fn(buf);
    });
  }
  onClose(fn: (reason: string, err?: GdpError) => void): void {
    let done = false;
    const once = (r: string, err?: GdpError) => {
      if (!done) {
        done = true;
        fn(r, err);
      }
    };
    this.ws.on('close', (code, reason) => once(reason.toString() || `socket closed (${code})`));
    this.ws.on('error', (err) => once(`socket error: ${err.message}`, frameError(err)));
  }
  close(reason = 'closed'): void {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
      this.ws.close(1000, closeReason(reason));
      // A peer that does not answer the closing handshake (stopped, stalled) loses its socket soon anyway.
      setTimeout(() => this.ws.terminate(), 2000).unref();
    }
  }
}

export interface ConnectOptions {
  /** The coordinator's shared token, sent as `Authorization: Bearer` with the upgrade request. */
  token?: string;
  /** PEM certificate(s) to trust for wss:// besides the system's (a self-signed coordinator certificate). */
  ca?: string | Buffer;
  timeoutMs?: number;
}

const REFUSALS: Record<number, [ErrorCode, string]> = {
  401: ['AUTH_REFUSED', "missing or wrong token (give the coordinator's token with --token or GDP_TOKEN)"],
  503: ['TOO_MANY_CONNECTIONS', 'the coordinator is at its connection limit (--max-connections)'],
};

/**
 * The masking key of every frame a gdp client sends: zero, so ws neither copies nor XORs the payload on either side
 * (RFC 6455 5.3 asks clients for an unpredictable key; its purpose is to keep script in a browser from shaping the
 * bytes an HTTP intermediary sees, and gdp's clients are worker processes, not browsers. A zero key is still a valid
 * masked frame to any server, and wss:// is what protects the bytes). Each 16 MiB bucket upload saves a copy and a pass.
 */
const zeroMask = (mask: Uint8Array): void => void mask.fill(0);

/** The socket options of every gdp client connection (also the raw-ws baseline of the benchmarks, to compare alike). */
export const CLIENT_SOCKET_OPTIONS = { maxPayload: MAX_FRAME_BYTES, generateMask: zeroMask } as const;

/** Connects to a coordinator at ws://host:port or wss://host:port. */
export function connectWs(url: string, opts: ConnectOptions = {}): Promise<Transport> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, {
      ...CLIENT_SOCKET_OPTIONS,
      handshakeTimeout: opts.timeoutMs ?? 30000,
      headers: opts.token !== undefined ? { authorization: `Bearer ${opts.token}` } : undefined,
      ca: opts.ca,
    });
    // A refusal arrives as a plain HTTP answer to the upgrade request.
    ws.once('unexpected-response', (req, res) => {
      const [code, why] = REFUSALS[res.statusCode ?? 0] ?? ['CONNECT_FAILED', `HTTP ${res.statusCode} ${res.statusMessage ?? ''}`.trim()];
      reject(new GdpError(code, `the coordinator at ${url} refused the connection: ${why}`));
      req.destroy();
    });
    ws.once('open', () => resolve(new WsTransport(ws, url)));
    ws.once('error', (err) => reject(new GdpError('CONNECT_FAILED', `cannot connect to ${url}: ${err.message}`)));
  });
}
