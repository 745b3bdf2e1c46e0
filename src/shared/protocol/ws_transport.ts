import { WebSocket, WebSocketServer } from 'ws';
import { GdpError } from '../errors.js';
import type { Transport } from './transport.js';
import { MAX_FRAME_BYTES } from './version.js';

class WsTransport implements Transport {
  constructor(
    private readonly ws: WebSocket,
    readonly remote: string,
  ) {
    ws.binaryType = 'nodebuffer';
  }
  send(frame: Uint8Array): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(frame, { binary: true });
  }
  onFrame(fn: (frame: Uint8Array) => void): void {
    this.ws.on('message', (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => {
      // A text frame is passed on as bytes too: the codec rejects it with a clear error.
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      void isBinary;
      fn(buf);
    });
  }
  onClose(fn: (reason: string) => void): void {
    let done = false;
    const once = (r: string) => {
      if (!done) {
        done = true;
        fn(r);
      }
    };
    this.ws.on('close', (code, reason) => once(reason.toString() || `socket closed (${code})`));
    this.ws.on('error', (err) => once(`socket error: ${err.message}`));
  }
  close(reason = 'closed'): void {
    // Close reasons are limited to 123 bytes by the WebSocket spec.
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close(1000, reason.slice(0, 120));
  }
}

/** Connects to a coordinator at ws://host:port. */
export function connectWs(url: string, timeoutMs = 30000): Promise<Transport> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { maxPayload: MAX_FRAME_BYTES, handshakeTimeout: timeoutMs });
    ws.once('open', () => resolve(new WsTransport(ws, url)));
    ws.once('error', (err) => reject(new GdpError('CONNECT_FAILED', `cannot connect to ${url}: ${err.message}`)));
  });
}

export interface WsListener {
  /** The bound address, e.g. { host: '127.0.0.1', port: 7070 }. */
  host: string;
  port: number;
  /** Stops listening and closes every connection, gracefully within `graceMs` (default 3 s), then by force. */
  close(graceMs?: number): Promise<void>;
}

/** Listens for workers; every accepted socket becomes a Transport handed to `onConnection`. */
export function listenWs(host: string, port: number, onConnection: (t: Transport) => void): Promise<WsListener> {
  return new Promise((resolve, reject) => {
    const wss = new WebSocketServer({ host, port, maxPayload: MAX_FRAME_BYTES });
    wss.once('error', (err) => reject(new GdpError('LISTEN_FAILED', `cannot listen on ${host}:${port}: ${err.message}`)));
    wss.on('connection', (ws, req) => {
      const remote = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
      onConnection(new WsTransport(ws, remote));
    });
    wss.once('listening', () => {
      const addr = wss.address();
      const bound = typeof addr === 'string' || addr === null ? { host, port } : { host: addr.address, port: addr.port };
      resolve({
        ...bound,
        close: (graceMs = 3000) =>
          new Promise<void>((res) => {
            // A close handshake first: a socket destroyed while the peer's frames are still unread is reset, and the
            // reset makes the peer drop the last frames it was sent (a worker would miss its 'shutdown' and retry).
            for (const c of wss.clients) c.close(1001, 'coordinator closing');
            const timer = setTimeout(() => {
              for (const c of wss.clients) c.terminate();
            }, graceMs);
            wss.close(() => {
              clearTimeout(timer);
              res();
            });
          }),
      });
    });
  });
}
