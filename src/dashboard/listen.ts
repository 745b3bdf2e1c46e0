import { listenWs, type ListenOptions, type WsListener } from '../shared/protocol/ws_listener.js';
import type { Dashboard } from './dashboard.js';

/**
 * A listener for the dashboard alone, for a run without a worker listener (`--in-process`): the same server code,
 * token and TLS rules as the coordinator's; a worker that connects is closed at once. The dashboard's page is at
 * `dashboard.url(listener.scheme === 'wss' ? 'https' : 'http', listener.host, listener.port)`.
 * @throws GdpError LISTEN_FAILED, BAD_TLS as listenWs.
 */
export function listenDashboard(dashboard: Dashboard, host: string, port: number, opts: Omit<ListenOptions, 'routes'> = {}): Promise<WsListener> {
  return listenWs(host, port, (t) => t.close('this address serves the dashboard only'), { ...opts, routes: dashboard });
}
