import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { GdpError } from '../errors.js';
import { bearerToken, tokenMatches } from './auth.js';
import type { Transport } from './transport.js';
import { MAX_FRAME_BYTES } from './version.js';
import { WsTransport } from './ws_transport.js';

/**
 * Other paths served beside the workers' WebSocket on the same listener (the dashboard's page and its own socket).
 * They run their own checks (token, limits); workers' upgrades never reach them.
 */
export interface HttpRoutes {
  /** Answers a plain HTTP request and returns true, or returns false: not its path (the listener answers 426). */
  request(req: IncomingMessage, res: ServerResponse): boolean;
  /** Takes an upgrade request on its own path and returns true, or returns false: a worker's, checked as usual. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean;
  /** Its connections at most, added to the listener's TCP limit. */
  maxConnections: number;
  /** Called first when the listener closes. */
  close(): void;
}

export interface ListenOptions {
  /**
   * Shared secret every client presents as `Authorization: Bearer <token>` with its upgrade request. Checked before
   * the WebSocket opens: a client without it gets an HTTP 401 and nothing else.
   */
  token?: string;
  /** PEM certificate and private key: serve wss:// (TLS) rather than ws://. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Open WebSockets at most; more are refused with HTTP 503. Default 64. */
  maxConnections?: number;
  /** Largest frame accepted (ws maxPayload); a larger one closes that connection. Default MAX_FRAME_BYTES. */
  maxFrameBytes?: number;
  /** Refusals are logged here. */
  log?: (line: string) => void;
  /** Paths served beside the workers' socket (e.g. the dashboard); without it, other requests get 426. */
  routes?: HttpRoutes;
}

export interface WsListener {
  /** The bound address, e.g. { host: '127.0.0.1', port: 7070 }. */
  host: string;
  port: number;
  /** 'wss' with TLS, else 'ws'. */
  scheme: 'ws' | 'wss';
  /** Stops listening and closes every connection, gracefully within `graceMs` (default 3 s), then by force. */
  close(graceMs?: number): Promise<void>;
}

/** TCP connections allowed beyond the WebSocket limit, for upgrade requests still in progress. */
const HANDSHAKE_MARGIN = 16;

function refuse(socket: Duplex, status: number, text: string, body: string): void {
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
}

function remoteOf(req: IncomingMessage): string {
  return `${req.socket.remoteAddress}:${req.socket.remotePort}`;
}

/** Listens for workers; every accepted WebSocket becomes a Transport handed to `onConnection`. */
export function listenWs(host: string, port: number, onConnection: (t: Transport) => void, opts: ListenOptions = {}): Promise<WsListener> {
  const log = opts.log ?? (() => {});
  const max = opts.maxConnections ?? 64;
  let server: Server;
  try {
    server = opts.tls ? createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key }) : createHttpServer();
  } catch (err) {
    return Promise.reject(new GdpError('BAD_TLS', `cannot use the TLS certificate and key: ${(err as Error).message}`));
  }
  // Slow or silent clients do not hold a connection slot for long before their upgrade request is complete.
  server.headersTimeout = 10000;
  server.requestTimeout = 15000;
  // Backstop against a flood of raw TCP connections that never ask for an upgrade.
  server.maxConnections = max + HANDSHAKE_MARGIN + (opts.routes?.maxConnections ?? 0);
  server.on('drop', (d?: { remoteAddress?: string; remotePort?: number }) =>
    log(`refused a connection from ${d?.remoteAddress}:${d?.remotePort}: too many open connections`),
  );
  const wss = new WebSocketServer({ noServer: true, maxPayload: opts.maxFrameBytes ?? MAX_FRAME_BYTES });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (opts.routes?.upgrade(req, socket, head)) return;
    socket.on('error', () => socket.destroy());
    const remote = remoteOf(req);
    if (opts.token !== undefined && !tokenMatches(opts.token, bearerToken(req.headers.authorization))) {
      log(`refused a connection from ${remote}: missing or wrong token`);
      refuse(socket, 401, 'Unauthorized', 'gdp: missing or wrong token\n');
      return;
    }
    if (wss.clients.size >= max) {
      log(`refused a connection from ${remote}: ${wss.clients.size} connections open (--max-connections ${max})`);
      refuse(socket, 503, 'Service Unavailable', 'gdp: too many connections\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => onConnection(new WsTransport(ws, remote)));
  });
  // Anything but a WebSocket upgrade (a browser, a scanner): a fixed answer, nothing read.
  server.on('request', (req, res) => {
    if (opts.routes?.request(req, res)) return;
    res.writeHead(426, { 'content-type': 'text/plain', connection: 'close' });
    res.end('gdp coordinator: WebSocket connections only\n');
  });
  // TLS handshake failures (a plain ws:// client, a wrong certificate) concern that client only.
  server.on('tlsClientError', (err, socket) => {
    log(`refused a connection from ${socket.remoteAddress}:${socket.remotePort}: TLS: ${err.message}`);
    socket.destroy();
  });
  return new Promise((resolve, reject) => {
    server.once('error', (err) => reject(new GdpError('LISTEN_FAILED', `cannot listen on ${host}:${port}: ${err.message}`)));
    server.listen(port, host, () => {
      const addr = server.address();
      const bound = typeof addr === 'string' || addr === null ? { host, port } : { host: addr.address, port: addr.port };
      resolve({
        ...bound,
        scheme: opts.tls ? 'wss' : 'ws',
        close: (graceMs = 3000) =>
          new Promise<void>((res) => {
            opts.routes?.close();
            // A close handshake first: a socket destroyed while the peer's frames are still unread is reset, and the
            // reset makes the peer drop the last frames it was sent (a worker would miss its 'shutdown' and retry).
            for (const c of wss.clients) c.close(1001, 'coordinator closing');
            const timer = setTimeout(() => {
              for (const c of wss.clients) c.terminate();
              server.closeAllConnections();
            }, graceMs);
            timer.unref();
            wss.close();
            server.close(() => {
              clearTimeout(timer);
              res();
            });
            // Connections that never upgraded (refused, idle) hold no WebSocket to close politely.
            server.closeIdleConnections();
          }),
      });
    });
  });
}
