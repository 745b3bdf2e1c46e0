import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';

/** Debian's chromium, which the browser tests drive through playwright-core. */
export const CHROMIUM = '/usr/bin/chromium';
export const hasChromium = existsSync(CHROMIUM);

/** A tiny HTTP server on 127.0.0.1 (random port) serving fixed routes: text, or files read on request. */
export function serve(routes: Record<string, string | (() => Promise<Buffer>)>): Promise<Server> {
  const types: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.json': 'application/json' };
  const server = createServer(async (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const route = routes[path];
    if (route === undefined) {
      res.writeHead(404).end();
      return;
    }
    const body = typeof route === 'string' ? route : await route();
    const ext = path === '/' ? '.html' : path.slice(path.lastIndexOf('.'));
    res.writeHead(200, { 'content-type': types[ext] ?? 'application/octet-stream' }).end(body);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** Headless chromium with a throwaway profile; the caller closes the context. */
export async function launchChromium(profileDir: string): Promise<import('playwright-core').BrowserContext> {
  const { chromium } = await import('playwright-core');
  return chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}
