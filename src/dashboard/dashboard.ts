import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, WebSocket } from 'ws';
import { GdpError } from '../shared/errors.js';
import { isLoopbackHost, tokenMatches } from '../shared/protocol/auth.js';
import type { HttpRoutes } from '../shared/protocol/ws_listener.js';
import { dashboardEventSchema, type DashboardEvent } from './events.js';
import { renderPage } from './page.js';
import { RunHistory, type RunHistoryOptions } from './run_history.js';

/** The dashboard's paths on the coordinator's listener; every other path stays the workers'. */
export const PAGE_PATH = '/';
export const EVENTS_PATH = '/events';

/**
 * Whether a browser must present the token (`?token=` in the page URL; the page passes it on to /events): always
 * when the listener has a token, so on loopback exactly when workers need one too. Off loopback the coordinator
 * never runs without one (README, Security), and neither does the dashboard.
 * @throws GdpError BAD_FLAG for an address other than loopback without a token.
 */
export function dashboardNeedsToken(host: string, token: string | undefined): boolean {
  if (token !== undefined) return true;
  if (!isLoopbackHost(host)) throw new GdpError('BAD_FLAG', `the dashboard on ${host} (not loopback) needs a token (--token or GDP_TOKEN)`);
  return false;
}

export interface DashboardOptions extends RunHistoryOptions {
  /** The listener's address: with `token`, decides whether a browser must present the token (dashboardNeedsToken). */
  host: string;
  token?: string;
  /** Browsers connected to /events at most (default 16); more get HTTP 503. */
  maxClients?: number;
  /** Changes are pushed at most this often, in one delta (default 250 ms): a step costs the run one history update. */
  flushMs?: number;
  /** A browser that has not read this many bytes of pushes is disconnected (it reconnects and gets the whole view). */
  maxBufferedBytes?: number;
  log?: (line: string) => void;
}

/** The request's path and query; a target no URL parser takes gives an empty path (no route matches it). */
function target(req: IncomingMessage): URL {
  try {
    return new URL(req.url ?? '/', 'http://x');
  } catch {
    return new URL('http://x/..invalid');
  }
}

/** Whether an Origin header names the host the request was sent to (a page served here), or is absent (not a browser). */
function sameOrigin(req: IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (origin === undefined) return true;
  try {
    return new URL(origin).host === req.headers.host;
  } catch {
    return false;
  }
}

function reject(socket: Duplex, status: number, text: string): void {
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${text.length + 1}\r\n\r\n${text}\n`);
}

/**
 * The live dashboard: the run's history (RunHistory), the page at `/` and the push socket at `/events`, mounted on
 * a listener through `HttpRoutes` (the coordinator's worker listener, or `serveDashboard`). The browser only
 * receives: `{ kind: 'view', view }` when it connects (the history so far), then `{ kind: 'delta', delta }`
 * (RunDelta) at most every `flushMs`; what it sends is ignored, and its socket never reaches the worker protocol.
 */
export class Dashboard implements HttpRoutes {
  readonly history: RunHistory;
  readonly needsToken: boolean;
  readonly maxConnections: number;
  private readonly wss: WebSocketServer;
  private timer?: NodeJS.Timeout;
  private page?: string;

  constructor(private readonly opts: DashboardOptions) {
    this.needsToken = dashboardNeedsToken(opts.host, opts.token);
    this.history = new RunHistory(opts);
    this.maxConnections = opts.maxClients ?? 16;
    this.wss = new WebSocketServer({ noServer: true, maxPayload: 1024 });
  }

  /**
   * Records one event and schedules its push. Validated first (nothing unchecked reaches a browser).
   * @throws GdpError BAD_MESSAGE naming the field that is wrong.
   */
  publish(event: DashboardEvent): void {
    const r = dashboardEventSchema.safeParse(event);
    if (!r.success) {
      const issue = r.error.issues[0];
      throw new GdpError('BAD_MESSAGE', `dashboard event '${(event as { type?: unknown })?.type}': ${issue.path.join('.') || '(root)'}: ${issue.message}`);
    }
    this.history.apply(r.data);
    // unref: a push still pending never keeps the process alive.
    this.timer ??= setTimeout(() => this.flush(), this.opts.flushMs ?? 250).unref();
  }

  /** Pushes what changed since the last push to every browser now. */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const delta = this.history.takeDelta();
    if (!delta || !this.wss.clients.size) return;
    const text = JSON.stringify({ kind: 'delta', delta });
    const limit = this.opts.maxBufferedBytes ?? 8 << 20;
    for (const c of this.wss.clients) {
      if (c.readyState !== WebSocket.OPEN) continue;
      // A delta skipped would leave that page wrong; a page dropped reconnects and starts from the whole view.
      if (c.bufferedAmount > limit) c.terminate();
      else c.send(text);
    }
  }

  /** The URL to print: what a browser needs to open the page, the token included when one is required. */
  url(scheme: 'http' | 'https', host: string, port: number): string {
    const h = host.includes(':') ? `[${host}]` : host;
    const shown = h === '0.0.0.0' || h === '[::]' ? 'HOST' : h;
    return `${scheme}://${shown}:${port}${PAGE_PATH}${this.needsToken ? `?token=${encodeURIComponent(this.opts.token!)}` : ''}`;
  }

  private authorized(req: IncomingMessage): boolean {
    if (!this.needsToken) return true;
    const presented = target(req).searchParams.get('token') ?? undefined;
    return tokenMatches(this.opts.token!, presented);
  }

  /** GET / (the page, with the token when required); false for any other path. */
  request(req: IncomingMessage, res: ServerResponse): boolean {
    const path = target(req).pathname;
    // Browsers ask for it unprompted; an empty answer keeps their console clean.
    if (path === '/favicon.ico') {
      res.writeHead(204).end();
      return true;
    }
    if (path !== PAGE_PATH && path !== '/index.html') return false;
    if (!this.authorized(req)) {
      this.opts.log?.(`dashboard: refused ${req.socket.remoteAddress}: missing or wrong token`);
      res
        .writeHead(401, { 'content-type': 'text/plain', connection: 'close' })
        .end('gdp dashboard: missing or wrong token (open the URL the coordinator printed)\n');
      return true;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return true;
    }
    this.page ??= renderPage({ mode: 'live', title: 'gdp dashboard' });
    res.writeHead(200, {
      'content-type': 'text/html; charset=utf-8',
      'cache-control': 'no-store',
      // The token travels in the URL: never in a Referer.
      'referrer-policy': 'no-referrer',
      'x-content-type-options': 'nosniff',
    });
    res.end(req.method === 'HEAD' ? undefined : this.page);
    return true;
  }

  /** The upgrade to /events: token, same-origin and client-count checks, then the whole view; false for other paths. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    if (target(req).pathname !== EVENTS_PATH) return false;
    socket.on('error', () => socket.destroy());
    if (!this.authorized(req)) {
      this.opts.log?.(`dashboard: refused a socket from ${req.socket.remoteAddress}: missing or wrong token`);
      reject(socket, 401, 'Unauthorized');
      return true;
    }
    // Another site open in the same browser must not read the run (loopback needs no token).
    if (!sameOrigin(req)) {
      reject(socket, 403, 'Forbidden');
      return true;
    }
    if (this.wss.clients.size >= this.maxConnections) {
      reject(socket, 503, 'Service Unavailable');
      return true;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('error', () => ws.terminate());
      ws.send(JSON.stringify({ kind: 'view', view: this.history.view() }));
    });
    return true;
  }

  /** Pushes what is pending, then closes every browser socket. */
  close(): void {
    this.flush();
    for (const c of this.wss.clients) c.close(1001, 'run ended');
    this.wss.close();
  }
}
