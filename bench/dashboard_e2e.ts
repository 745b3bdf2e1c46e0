/**
 * `node dist/bench/dashboard_e2e.js [pairs] [steps]`: what the live dashboard costs a real run. Runs the smoke
 * config's training stage (`steps` global steps of 32 images, default 20) with 2 `--local` worker processes,
 * `pairs` times (default 3) each with the dashboard open in headless Chromium and with `--no-dashboard`,
 * interleaved (ABBA order, so that a drift in the machine's load hits both alike). Prints per run the wall time of
 * the training stage (from its start line to its epoch line: the steps and the test evaluation), of the whole
 * process, and the CPU time of the coordinator and its workers (the shell's `times` of its children: on a loaded
 * machine wall times vary far more than 2%, CPU times less) and of the coordinator alone (/proc, up to its
 * `report:` line: the dashboard's cost is all there), then the medians and the dashboard's share. The micro-bench of
 * the coordinator's CPU time per step is dashboard_overhead.js.
 */
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
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
  /** User + system CPU time of gdp-coord and its worker processes. */
  cpuMs: number;
  /** User + system CPU time of gdp-coord alone (where the dashboard runs), up to its `report:` line. */
  coordCpuMs: number;
}

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }));

/** User + system CPU time of process `pid` so far (/proc/PID/stat fields 14 and 15, in clock ticks), in ms; 0 once it has ended. */
function processCpuMs(pid: number): number {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    // Already gone: the run then reports no coordinator time and fails.
    return 0;
  }
  // Fields after the command name, which may hold spaces: state is field 3.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
}

/** The children's user and system time from bash's `times` (its second line, e.g. `0m27.111s 0m2.209s`), in ms. */
function childrenCpuMs(times: string): number {
  const line = times.trim().split('\n').at(-1) ?? '';
  const parts = [...line.matchAll(/(\d+)m([\d.]+)s/g)].map((m) => Number(m[1]) * 60_000 + Number(m[2]) * 1000);
  if (parts.length !== 2) throw new Error(`cannot read the CPU times from '${times}'`);
  return parts[0] + parts[1];
}

/** One smoke run; with `browser`, a page of its dashboard stays open from the URL's line to the end. */
async function smokeRun(logDir: string, browser: Browser | undefined): Promise<Timing> {
  const args = [
    join(ROOT, 'bin', 'gdp-coord.js'),
    ...['--workers', '2', '--local', '--listen', '127.0.0.1:0', '--config', join(ROOT, 'configs', 'smoke.json')],
    ...['--set', 'stages=["train"]', '--set', `train.max_steps_per_epoch=${steps}`, '--set', `base.log_dir=${logDir}`],
    // Every run replaces the previous one in the same folder.
    '--overwrite',
    ...(browser ? [] : ['--no-dashboard']),
  ];
  const t0 = performance.now();
  // Through bash for its `times` builtin, which reports the CPU time of the coordinator and its reaped workers.
  const script = '"$0" "$@" & pid=$!; echo "pid $pid" >&3; wait $pid; code=$?; times >&3; exit $code';
  const child = spawn('bash', ['-c', script, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
  const [, stdout, stderr, fd3] = child.stdio as unknown as [null, Readable, Readable, Readable];
  let times = '';
  fd3.setEncoding('utf8').on('data', (d: string) => (times += d));
  const unregister = onAbort(() => {
    const pid = times.match(/^pid (\d+)/);
    if (pid) process.kill(Number(pid[1]), 'SIGINT');
  });
  let out = '';
  let err = '';
  let trainStart = 0;
  let trainEnd = 0;
  let coordCpuMs = 0;
  let opened: Promise<unknown> | undefined;
  stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    const url = out.match(/gdp-coord: dashboard (\S+)/);
    if (browser && url && !opened) opened = browser.newPage().then((p) => p.goto(url[1]));
    if (!trainStart && /stage 'train' on/.test(out)) trainStart = performance.now();
    if (!trainEnd && /train epoch 1\/1  lr /.test(out)) trainEnd = performance.now();
    const pid = times.match(/^pid (\d+)/);
    if (!coordCpuMs && pid && /^report: /m.test(out)) coordCpuMs = processCpuMs(Number(pid[1]));
  });
  const code = await new Promise<number | null>((r) => child.on('close', r));
  unregister();
  await opened;
  if (code !== 0 || !trainStart || !trainEnd || !coordCpuMs) throw new Error(`the smoke run failed (exit ${code}): ${err || out.slice(-1000)}`);
  return { dashboard: !!browser, trainMs: trainEnd - trainStart, totalMs: performance.now() - t0, cpuMs: childrenCpuMs(times), coordCpuMs };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = Math.floor(s.length / 2);
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

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
      console.log(
        `${open ? 'dashboard open  ' : '--no-dashboard  '} training stage ${(t.trainMs / 1000).toFixed(2)} s, whole run ${(t.totalMs / 1000).toFixed(2)} s, CPU ${(t.cpuMs / 1000).toFixed(2)} s, of which the coordinator ${(t.coordCpuMs / 1000).toFixed(2)} s`,
      );
    }
  }
} finally {
  await browser.close();
  await rm(logs, { recursive: true, force: true });
}
const m = (open: boolean, k: 'trainMs' | 'totalMs' | 'cpuMs' | 'coordCpuMs') => median(runs.filter((r) => r.dashboard === open).map((r) => r[k]));
const names = { trainMs: 'training stage', totalMs: 'whole run', cpuMs: 'CPU time', coordCpuMs: "coordinator's CPU time" };
for (const k of ['trainMs', 'totalMs', 'cpuMs', 'coordCpuMs'] as const) {
  const on = m(true, k);
  const off = m(false, k);
  console.log(`median ${names[k]}: open ${(on / 1000).toFixed(2)} s, closed ${(off / 1000).toFixed(2)} s: ${(100 * (on / off - 1)).toFixed(1)}%`);
}
