/**
 * `node dist/bench/dashboard_overhead.js [steps]`: what the dashboard costs the coordinator per training step. A
 * Dashboard on a real listener with one browser-like client reading /events; a loop publishes what RunFeed sends
 * per step of a 2-worker run (the step, 2 worker stats, the progress), yielding to the event loop after each step
 * as the coordinator does while it waits for workers, and pushing each step's delta (a real step outlasts the push
 * interval). Prints the coordinator process's CPU time per step with and
 * without the dashboard, and the size of the whole view a page receives when it opens at the end.
 */
import WebSocket from 'ws';
import { Dashboard } from '../src/dashboard/dashboard.js';
import { RunFeed } from '../src/dashboard/feed.js';
import { listenDashboard } from '../src/dashboard/listen.js';

const steps = Number(process.argv[2] ?? 100_000);
const tick = () => new Promise<void>((r) => setImmediate(r));

async function loop(feed: RunFeed | undefined, flushEach?: Dashboard): Promise<number> {
  const start = process.cpuUsage();
  for (let s = 1; s <= steps; s++) {
    const r = {
      stats: { lossSum: 32 * (2 / Math.sqrt(s)), correct1: 16, count: 32 },
      perWorker: [
        { id: 'local0', count: 16, ms: 300 },
        { id: 'local1', count: 16, ms: 310 },
      ],
    };
    feed?.step('train', s, r, 0.1, 400);
    feed?.progress('train', `train epoch ${Math.ceil(s / 63)}/x`, ((s - 1) % 63) + 1, 63);
    // A real step takes ~0.5 s, longer than the push interval: every step is pushed on its own.
    flushEach?.flush();
    await tick();
  }
  const u = process.cpuUsage(start);
  return (u.user + u.system) / steps;
}

const bare = await loop(undefined);
const dash = new Dashboard({ host: '127.0.0.1' });
const listener = await listenDashboard(dash, '127.0.0.1', 0);
let received = 0;
const ws = new WebSocket(`ws://127.0.0.1:${listener.port}/events`);
ws.on('message', (d: Buffer) => (received += d.byteLength));
await new Promise((r) => ws.once('open', r));
const withDash = await loop(new RunFeed(dash), dash);
dash.flush();
const view = JSON.stringify({ kind: 'view', view: dash.history.view() });
ws.close();
await listener.close(200);
console.log(
  `${steps} steps: ${bare.toFixed(1)} us CPU per step bare, ${withDash.toFixed(1)} us with the dashboard (+${(withDash - bare).toFixed(1)} us); ` +
    `pushed ${(received / 1e6).toFixed(2)} MB; the whole view at the end: ${(view.length / 1e3).toFixed(0)} kB`,
);
