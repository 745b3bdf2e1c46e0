/**
 * `node dist/bench/dashboard_e2e.js [pairs] [steps]`: what the live dashboard costs a real run. Runs the smoke
 * config's training stage (`steps` global steps of 32 images, default 20) with 2 `--local` worker processes,
 * `pairs` times (default 3) each with the dashboard open in headless Chromium and with `--no-dashboard`,
 * interleaved (ABBA order, so that a drift in the machine's load hits both alike). Prints per run the wall time of
 * the training stage (from its start line to its epoch line: the steps and the test evaluation) and of the whole
 * process, then the medians and the dashboard's share. The micro-bench of the coordinator's CPU time per step is
 * dashboard_overhead.js.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser } from 'playwright-core';
import { installAbortHandlers, onAbort } from './cleanup.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const pairs = Number(process.argv[2] ?? 3);
const steps = Number(process.argv[3] ?? 20);

interface Timing {
  dashboard: boolean;
  trainMs: number;
  totalMs: number;
}

/** One smoke run; with `browser`, a page of its dashboard stays open from the URL's line to the end. */
async function smokeRun(logDir: string, browser: Browser | undefined): Promise<Timing> {
  const args = [
    join(ROOT, 'bin', 'gdp-coord.js'),
    ...['--workers', '2', '--local', '--listen', '127.0.0.1:0', '--config', join(ROOT, 'configs', 'smoke.json')],
    ...['--set', 'stages=["train"]', '--set', `train.max_steps_per_epoch=${steps}`, '--set', `base.log_dir=${logDir}`],
    ...(browser ? [] : ['--no-dashboard']),
  ];
  const t0 = performance.now();
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const unregister = onAbort(() => child.kill('SIGKILL'));
  let out = '';
  let err = '';
  let trainStart = 0;
  let trainEnd = 0;
  let opened: Promise<unknown> | undefined;
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    const url = out.match(/gdp-coord: dashboard (\S+)/);
    if (browser && url && !opened) opened = browser.newPage().then((p) => p.goto(url[1]));
    if (!trainStart && /stage 'train' on/.test(out)) trainStart = performance.now();
    if (!trainEnd && /train epoch 1\/1  lr /.test(out)) trainEnd = performance.now();
  });
  const code = await new Promise<number | null>((r) => child.on('exit', r));
  unregister();
  await opened;
  if (code !== 0 || !trainStart || !trainEnd) throw new Error(`the smoke run failed (exit ${code}): ${err || out.slice(-1000)}`);
  return { dashboard: !!browser, trainMs: trainEnd - trainStart, totalMs: performance.now() - t0 };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

installAbortHandlers();
const { chromium } = await import('playwright-core');
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox', '--disable-gpu'] });
const logs = await mkdtemp(join(tmpdir(), 'gdp-dash-e2e-'));
const runs: Timing[] = [];
try {
  for (let i = 0; i < pairs; i++) {
    // ABBA: open, closed, closed, open, ...
    for (const open of i % 2 === 0 ? [true, false] : [false, true]) {
      const t = await smokeRun(logs, open ? browser : undefined);
      runs.push(t);
      console.log(`${open ? 'dashboard open  ' : '--no-dashboard  '} training stage ${(t.trainMs / 1000).toFixed(2)} s, whole run ${(t.totalMs / 1000).toFixed(2)} s`);
    }
  }
} finally {
  await browser.close();
  await rm(logs, { recursive: true, force: true });
}
const m = (open: boolean, k: 'trainMs' | 'totalMs') => median(runs.filter((r) => r.dashboard === open).map((r) => r[k]));
for (const k of ['trainMs', 'totalMs'] as const) {
  const on = m(true, k);
  const off = m(false, k);
  console.log(`median ${k === 'trainMs' ? 'training stage' : 'whole run'}: open ${(on / 1000).toFixed(2)} s, closed ${(off / 1000).toFixed(2)} s: ${(100 * (on / off - 1)).toFixed(1)}%`);
}
