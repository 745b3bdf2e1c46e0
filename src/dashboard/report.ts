import { existsSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { z } from 'zod';
import { GdpError } from '../shared/errors.js';
import { dashboardEventSchema, finalRowSchema, type DashboardEvent } from './events.js';
import { renderPage } from './page.js';
import { epochRecordSchema, logEvents, pruneEventSchema } from './run_records.js';
import { RunHistory, type RunView } from './run_history.js';
import type { SeriesView } from './series.js';
import { fileWidths, widthsEvent } from './widths.js';

/** The dashboard's own record of a run (per-step curves, workers), written beside the logs when the run ends. */
export const DASHBOARD_FILE = 'dashboard.json';
export const REPORT_FILE = 'report.html';

const cfgSchema = z.object({ base: z.object({ task_name: z.string() }), stages: z.array(z.string()).optional() });
const stepsSchema = z.object({
  steps: z.record(
    z.string(),
    z.object({
      width: z.number(),
      x: z.array(z.number()),
      n: z.array(z.number()),
      mean: z.array(z.number()),
      min: z.array(z.number()),
      max: z.array(z.number()),
    }),
  ),
});

function readJson<T>(dir: string, name: string, schema: z.ZodType<T>, required: boolean): T | undefined {
  const path = join(dir, name);
  if (!existsSync(path)) {
    if (required) throw new GdpError('FILE_NOT_FOUND', `${path} is missing: is ${dir} a run's log folder (logs/<task_name>)?`);
    return undefined;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new GdpError('BAD_RUN_FILE', `${path}: not JSON (${(err as Error).message})`);
  }
  const r = schema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new GdpError('BAD_RUN_FILE', `${path}: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  return r.data;
}

/** The newest full-width checkpoint of the baseline (train-epochN, highest N), else a gated save point. */
function baselineFile(dir: string): string | undefined {
  const files = readdirSync(dir);
  const epochs = files.map((f) => /^train-epoch(\d+)\.safetensors$/.exec(f)).filter((m) => m !== null);
  if (epochs.length) return join(dir, epochs.sort((a, b) => Number(b[1]) - Number(a[1]))[0][0]);
  const gated = files.filter((f) => /^gbn_\d+\.safetensors$/.test(f)).sort();
  return gated.length ? join(dir, gated[0]) : undefined;
}

/**
 * The dashboard events a run's files imply, in the order the run produced them: `cfg.json` (task, stages),
 * `log.json` (epochs), `prune_log.json` (Ticks, Tocks, save points; a Tock's Ticks are those logged before it),
 * `summary.json` (final table) and the layer widths of the baseline and final checkpoints.
 * @throws GdpError FILE_NOT_FOUND without cfg.json or log.json, BAD_RUN_FILE for a file of the wrong shape.
 */
export function runFileEvents(dir: string): DashboardEvent[] {
  const cfg = readJson(dir, 'cfg.json', cfgSchema, true)!;
  const records = readJson(dir, 'log.json', z.array(epochRecordSchema), true)!;
  const prune = readJson(dir, 'prune_log.json', z.array(pruneEventSchema), false) ?? [];
  const summary = readJson(dir, 'summary.json', z.array(finalRowSchema), false);
  const t = 0;
  const events: DashboardEvent[] = [{ type: 'run', t, task: cfg.base.task_name, stages: cfg.stages ?? [], workers: 0 }, ...logEvents(records, prune, t)];
  const base = baselineFile(dir);
  const final = ['finetuned.safetensors', 'pruned.safetensors'].map((f) => join(dir, f)).find((f) => existsSync(f));
  if (base) {
    const b = fileWidths(base);
    if (final) events.push(widthsEvent(b.layers, fileWidths(final).layers, 'melted', t));
    else events.push(widthsEvent(b.layers, b.layers, b.gated ? 'masked' : 'baseline', t));
  }
  if (summary) events.push({ type: 'final', t, rows: summary });
  return events.map((e) => dashboardEventSchema.parse(e));
}

/**
 * The report's view of a run folder: the events of its files, plus the per-step curves and workers of
 * `dashboard.json` when the run left one (a run without the dashboard has per-epoch curves only).
 */
export function reportView(dir: string): RunView {
  const h = new RunHistory();
  for (const e of runFileEvents(dir)) h.apply(e);
  const view = h.view();
  const live = readJson(dir, DASHBOARD_FILE, stepsSchema.passthrough(), false) as (Partial<RunView> & { steps: Record<string, SeriesView> }) | undefined;
  if (live) {
    for (const k of Object.keys(view.steps) as (keyof RunView['steps'])[]) if (live.steps[k]) view.steps[k] = live.steps[k];
    if (Array.isArray(live.workers)) view.workers = live.workers;
    if (Array.isArray(live.log)) view.log = live.log;
    if (typeof live.resumedAt === 'number') view.resumedAt = live.resumedAt;
  }
  return view;
}

/**
 * Writes `<dir>/report.html` (or `out`): one self-contained page (styles, uPlot, script and data inline) with the
 * dashboard's plots and the final table, rebuilt from the run's files. At the end of a run with the dashboard on,
 * pass its history (`live`, `Dashboard.history.view()`): it is saved first as `<dir>/dashboard.json`, so that the
 * report, and any later `gdp-model report`, also draws the per-step curves and the workers. Files are written to a
 * temporary name, then renamed. @returns the report's path. @throws as runFileEvents.
 */
export function writeReport(dir: string, opts: { out?: string; live?: RunView } = {}): string {
  if (opts.live) writeAtomic(join(dir, DASHBOARD_FILE), JSON.stringify(opts.live) + '\n');
  const view = reportView(dir);
  const out = opts.out ?? join(dir, REPORT_FILE);
  writeAtomic(out, renderPage({ mode: 'report', view, title: `gdp report: ${view.task ?? basename(dir)}` }));
  return out;
}

function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}
