import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import WebSocket from 'ws';
import { Dashboard, dashboardNeedsToken } from '../../src/dashboard/dashboard.js';
import type { DashboardEvent } from '../../src/dashboard/events.js';
import { GdpError } from '../../src/shared/errors.js';
import { listenDashboard } from '../../src/dashboard/listen.js';
import type { WsListener } from '../../src/shared/protocol/ws_listener.js';
import { noChromium, withChromium } from './browser.js';

const TOKEN = 'dashboard-test-token-0123456789';

/** The dashboard mounted on a listener as the coordinator's (listenWs with routes); worker connections are closed. */
async function start(token?: string): Promise<{ dash: Dashboard; listener: WsListener; base: string }> {
  const dash = new Dashboard({ host: '127.0.0.1', token, flushMs: 20 });
  const listener = await listenDashboard(dash, '127.0.0.1', 0, { token });
  return { dash, listener, base: `http://127.0.0.1:${listener.port}` };
}

function status(url: string): Promise<number> {
  return new Promise((resolve, reject) =>
    request(url, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    })
      .on('error', reject)
      .end(),
  );
}

function upgradeStatus(url: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { headers });
    ws.on('open', () => {
      ws.close();
      resolve(101);
    });
    ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    ws.on('error', () => resolve(-1));
  });
}

/** Page-side condition (the tests' TypeScript has no DOM types): the loss chart draws `n` points. */
const pointsAre = (n: number) => `Number(document.querySelector('[data-chart="steps"]')?.getAttribute('data-points')) === ${n}`;

test('a browser needs the token whenever the listener has one, and off loopback one must exist', () => {
  assert.equal(dashboardNeedsToken('127.0.0.1', undefined), false);
  assert.equal(dashboardNeedsToken('::1', undefined), false);
  assert.equal(dashboardNeedsToken('0.0.0.0', TOKEN), true);
  assert.equal(dashboardNeedsToken('127.0.0.1', TOKEN), true);
  assert.throws(
    () => dashboardNeedsToken('0.0.0.0', undefined),
    (e: unknown) => e instanceof GdpError && e.code === 'BAD_FLAG',
  );
  assert.throws(
    () => dashboardNeedsToken('192.168.1.5', undefined),
    (e: unknown) => e instanceof GdpError && e.code === 'BAD_FLAG',
  );
});

test('with a token, the page and its socket answer 401 without it; the workers keep their own check', async () => {
  const { dash, listener, base } = await start(TOKEN);
  try {
    assert.equal(dash.url('http', '0.0.0.0', 7070), `http://HOST:7070/?token=${TOKEN}`);
    assert.equal(await status(`${base}/`), 401);
    assert.equal(await status(`${base}/?token=wrong-token-wrong-token`), 401);
    assert.equal(await status(`${base}/?token=${TOKEN}`), 200);
    assert.equal(await upgradeStatus(`ws://127.0.0.1:${listener.port}/events`), 401);
    assert.equal(await upgradeStatus(`ws://127.0.0.1:${listener.port}/events?token=${TOKEN}`), 101);
    // Another site's page may not read the run.
    assert.equal(await upgradeStatus(`ws://127.0.0.1:${listener.port}/events?token=${TOKEN}`, { origin: 'http://evil.example' }), 403);
    // The browser's token in a query does not open the workers' socket; their bearer header does.
    assert.equal(await upgradeStatus(`ws://127.0.0.1:${listener.port}/?token=${TOKEN}`), 401);
    assert.equal(await upgradeStatus(`ws://127.0.0.1:${listener.port}/`, { authorization: `Bearer ${TOKEN}` }), 101);
    assert.equal(await status(`${base}/other`), 426);
  } finally {
    await listener.close(200);
  }
});

test('on loopback without a token the page opens as is, and its printed URL carries no token', async () => {
  const { dash, listener, base } = await start();
  try {
    assert.equal(dash.url('http', '127.0.0.1', listener.port), `${base}/`);
    assert.equal(await status(`${base}/`), 200);
    assert.equal(await upgradeStatus(`ws://127.0.0.1:${listener.port}/events`), 101);
  } finally {
    await listener.close(200);
  }
});

test('a bad event is refused by name before it reaches any page', () => {
  const dash = new Dashboard({ host: '127.0.0.1' });
  assert.throws(
    () => dash.publish({ type: 'worker_lost', t: 1, id: '', step: 1, reason: 'x' }),
    (e: unknown) => e instanceof GdpError && e.code === 'BAD_MESSAGE' && /id/.test(e.message),
  );
  dash.close();
});

test(
  'chromium: the page shows the history so far, its loss curve gains points as steps arrive, and a lost worker',
  { skip: noChromium, timeout: 120_000 },
  async () => {
    const { dash, listener, base } = await start(TOKEN);
    let step = 0;
    const push = (n: number) => {
      for (let i = 0; i < n; i++) {
        step++;
        dash.publish({ type: 'step', t: 1000 + step, step, stage: 'train', loss: 2 / step, acc1: 0.5, lr: 0.1, imgS: 40 });
        dash.publish({ type: 'stage', t: 1000 + step, stage: 'train', label: 'train epoch 1/2', done: step, total: 100 });
      }
    };
    const joined = (id: string): DashboardEvent => ({ type: 'worker_joined', t: 1000, id, host: 'box', backend: 'wasm', gpu: null, step: 0 });
    try {
      dash.publish({ type: 'run', t: 1000, task: 'fake', stages: ['train'], workers: 2 });
      dash.publish(joined('local0'));
      dash.publish(joined('local1'));
      push(5);
      await withChromium(async (context) => {
        const page = await context.newPage();
        const errors: string[] = [];
        page.on('pageerror', (e) => errors.push(e.message));
        await page.goto(`${base}/?token=${TOKEN}`);
        // Opened mid-run: the history so far first.
        await page.waitForFunction(`document.querySelectorAll('#workers tr[data-id]').length === 2`);
        await page.waitForFunction(pointsAre(5));
        push(7);
        await page.waitForFunction(pointsAre(12));
        assert.match((await page.textContent('#stage')) ?? '', /train epoch 1\/2: 12\/100 steps/);
        dash.publish({ type: 'worker_lost', t: 2000, id: 'local1', step: 13, reason: 'connection closed' });
        await page.waitForFunction(`/lost at step 13/.test(document.querySelector('#workers tr[data-id="local1"] td.state')?.textContent ?? '')`);
        assert.match((await page.textContent('#workers tr[data-id="local0"] td.state')) ?? '', /active/);
        // What the page holds equals the server's history (the same delta rule on both sides).
        dash.flush();
        await page.waitForFunction(`window.gdpView().workers[1].state === 'lost'`);
        assert.deepEqual(await page.evaluate('window.gdpView()'), dash.history.view());
        assert.deepEqual(errors, []);
      });
    } finally {
      await listener.close(200);
    }
  },
);
