/**
 * `node dist/bench/step_timeline.js [--workers N] [--steps K] [--show S] [--set key=value ...]`: the timeline of
 * local-mode steps (mnist.resnet20, global batch 64, star all-reduce): the coordinator in this process and N
 * gdp-worker processes record their events (src/shared/timeline.ts, GDP_TIMELINE); this prints the last S steps
 * event by event and, over the K timed steps, the median of each phase, to find the serial parts of a step.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { initBackend, type BackendChoice } from '../src/shared/backend.js';
import { backendOption } from '../src/shared/cli_options.js';
import { takeTimeline, type TimelineEvent } from '../src/shared/timeline.js';
import { installAbortHandlers } from './cleanup.js';
import { localScaling } from './local_scaling.js';

const opts = new Command()
  .name('node dist/bench/step_timeline.js')
  .option('--workers <n>', 'worker processes', '2')
  .option('--steps <k>', 'timed steps (after 3 untimed ones)', '6')
  .option('--show <s>', 'steps printed event by event', '2')
  .option('--set <key=value...>', 'config overrides, e.g. dist.bucket_mib=0.25', [])
  .addOption(backendOption())
  .parse()
  .opts<{ workers: string; steps: string; show: string; set: string[]; backend: BackendChoice }>();

installAbortHandlers();
const info = await initBackend(opts.backend);
const dir = mkdtempSync(join(tmpdir(), 'gdp-timeline-'));
// Read at the first event, here and in the worker processes (which inherit the environment).
process.env.GDP_TIMELINE = dir;
const r = await localScaling(Number(opts.workers), info.name, { batch: 64, steps: Number(opts.steps), warmup: 3, set: opts.set });

/** Every process's events, labelled 'coordinator' (this process) or 'worker k' (k in order of pid). */
const files = readdirSync(dir).filter((f) => f.startsWith('timeline-'));
const pids = files.map((f) => Number(f.slice('timeline-'.length, -'.json'.length))).sort((a, b) => a - b);
const events: { at: number; who: string; what: string }[] = [];
const label = (who: string, list: TimelineEvent[]) => list.forEach(([at, name]) => events.push({ at, who, what: name.replace(/^\w+: /, '') }));
label('coordinator', takeTimeline());
pids.forEach((pid, k) => label(`worker ${k}`, JSON.parse(readFileSync(join(dir, `timeline-${pid}.json`), 'utf8')) as TimelineEvent[]));
rmSync(dir, { recursive: true, force: true });
events.sort((a, b) => a.at - b.at);

// A step runs from the coordinator's 'sending compute' to the next one (the last timed step has no end: left out).
const starts = events.filter((e) => e.who === 'coordinator' && e.what === 'sending compute').map((e) => e.at);
const timed = starts.slice(-Number(opts.steps) - 1);
const phases = new Map<string, number[]>();
const add = (name: string, ms: number) => phases.set(name, [...(phases.get(name) ?? []), ms]);
const workers = [...new Set(events.filter((e) => e.who !== 'coordinator').map((e) => e.who))].sort();
/** The first event `what` of `who` at or after `from` (a worker's update may come after the next step started). */
const next = (who: string, what: string, from: number) => events.find((e) => e.at >= from && e.who === who && e.what === what)?.at ?? NaN;
for (let k = 0; k + 1 < timed.length; k++) {
  const [t0, t1] = [timed[k], timed[k + 1]];
  add('step', t1 - t0);
  const ends = workers.map((w) => {
    const recv = next(w, 'compute received', t0);
    const [computed, sent] = [next(w, 'gradient computed', recv), next(w, 'gradient sent', recv)];
    const [avgIn, applyIn] = [next(w, 'averaged bucket received', sent), next(w, 'apply received', sent)];
    const applied = next(w, 'update applied', applyIn);
    add(`${w}: sending compute -> received`, recv - t0);
    add(`${w}: forward, backward, copy-out`, computed - recv);
    add(`${w}: checks, upload`, sent - computed);
    add(`${w}: update (SGD, tensors)`, applied - applyIn);
    add(`${w}: idle`, t1 - t0 - (computed - recv) - (sent - computed) - (applied - applyIn));
    return { sent, avgIn, applied };
  });
  const last = (v: number[]) => Math.max(...v);
  add('exchange: last gradient sent -> last averaged bucket in', last(ends.map((e) => e.avgIn)) - last(ends.map((e) => e.sent)));
  add('commit: last averaged bucket in -> last worker updated', last(ends.map((e) => e.applied)) - last(ends.map((e) => e.avgIn)));
  const applySent = next('coordinator', 'apply sent', t0);
  const ownUpdate = next('coordinator', 'update applied', applySent);
  add('coordinator: apply sent -> own update applied', ownUpdate - applySent);
  add('coordinator: own update applied -> sending the next compute', t1 - ownUpdate);
  if (k >= timed.length - 1 - Number(opts.show)) {
    console.log(`--- step ${k + 1} of the timed steps: ${(t1 - t0).toFixed(1)} ms`);
    for (const e of events) if (e.at >= t0 && e.at < t1) console.log(`${(e.at - t0).toFixed(1).padStart(9)} ms  ${e.who.padEnd(12)} ${e.what}`);
  }
}
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
console.log(
  `--- medians over ${timed.length - 1} steps (ms); ${r.imgPerSec.toFixed(1)} img/s; load average ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`,
);
for (const [name, v] of phases) console.log(`${median(v).toFixed(1).padStart(9)}  ${name}`);
if (r.cpuMsPerStep)
  console.log(`CPU ms/step: coordinator ${r.cpuMsPerStep.coordinator.toFixed(0)}, workers ${r.cpuMsPerStep.workers.map((c) => c.toFixed(0)).join(' + ')}`);
