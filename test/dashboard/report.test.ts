import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import type { Page } from 'playwright-core';
import { dashboardEventSchema, type DashboardEvent } from '../../src/dashboard/events.js';
import { renderPage } from '../../src/dashboard/page.js';
import { writeReport } from '../../src/dashboard/report.js';
import { RunHistory } from '../../src/dashboard/run_history.js';
import { coord, ROOT, SMALL_SMOKE } from '../dist/cli_helpers.js';
import { noChromium, withChromium } from './browser.js';

const run = promisify(execFile);
const MODEL = join(ROOT, 'bin', 'gdp-model.js');

/** Every `selector` row's `data-field` cells as numbers (their exact `data-value`), read from the rendered DOM. */
const READ_TABLE = `(sel) => [...document.querySelectorAll(sel)].map((tr) =>
  Object.fromEntries([...tr.querySelectorAll('td[data-field][data-value]')].filter((td) => td.dataset.value !== '').map((td) => [td.dataset.field, Number(td.dataset.value)])))`;

type Row = Record<string, number>;

/** `{ page field: the JSON file's value }` for each pair of `names` (page field -> file field). */
function rename(src: Record<string, unknown>, names: Record<string, string>): Row {
  return Object.fromEntries(Object.entries(names).map(([to, from]) => [to, src[from] as number]));
}

/** Opens `file` offline and checks every figure of its tables against the run's files in `dir`. */
async function checkReport(page: Page, file: string, dir: string, steps: number): Promise<void> {
  const json = (name: string) => JSON.parse(readFileSync(join(dir, name), 'utf8'));
  const records = json('log.json') as Record<string, number | string>[];
  const prune = json('prune_log.json') as Record<string, unknown>[];
  const summary = json('summary.json') as Record<string, number | string>[];
  const ticks = prune.filter((e) => e.type === 'tick') as Record<string, number>[];
  const saved = prune.filter((e) => e.type === 'checkpoint') as Record<string, number>[];
  assert.ok(ticks.length >= 1 && saved.length >= 1, 'the smoke run prunes and passes a save point');
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // Offline: any request leaving the file would fail the page.
  await page.route(/^https?:/, (route) => route.abort());
  await page.goto(pathToFileURL(file).href);
  await page.waitForFunction(`document.body.dataset.rendered >= 1`);
  const final = (await page.evaluate(`(${READ_TABLE})('#final tr[data-label]')`)) as Row[];
  assert.deepEqual(
    final,
    summary.map((s) => ({ macs: s.macs, params: s.params, acc1: s.acc1, acc5: s.acc5, msPerImageB1: s.msPerImageB1, msPerImageB64: s.msPerImageB64 })),
  );
  assert.deepEqual(
    await page.$$eval('#final tr[data-label]', (rows) => rows.map((r) => r.getAttribute('data-label'))),
    summary.map((s) => s.label),
  );
  const tickRows = (await page.evaluate(`(${READ_TABLE})('#ticks tr[data-tick]')`)) as Row[];
  assert.deepEqual(
    tickRows,
    ticks.map((t) => ({
      ...rename(t, { tick: 'tick', macsRatio: 'flopsRatio', paramsRatio: 'paramsRatio', filtersLeft: 'filtersLeft', loss: 'loss', acc1: 'acc1' }),
      ...Object.fromEntries(saved.filter((s) => s.tick === t.tick).map((s) => ['savePoint', s.savePoint])),
    })),
  );
  const epochRows = (await page.evaluate(`(${READ_TABLE})('#epochs tbody tr')`)) as Row[];
  assert.deepEqual(
    epochRows,
    records.map((e) =>
      rename(e, {
        epoch: 'epoch',
        lr: 'lr',
        trainLoss: 'train_loss',
        trainAcc: 'train_acc',
        testLoss: 'test_loss',
        acc1: 'acc@1',
        acc5: 'acc@5',
        imgS: 'img_s',
      }),
    ),
  );
  // The trajectory chart holds one point per Tick (plus the Tock's MACs ratio, 1, when no Tick shares it).
  const points = Number(await page.getAttribute('[data-chart="trajectory"]', 'data-points'));
  assert.equal(points, new Set([...ticks.map((t) => t.flopsRatio), 1]).size);
  // The per-step curves come from the dashboard's history the run saved (dashboard.json): one point per step.
  assert.equal(Number(await page.getAttribute('[data-chart="steps"]', 'data-points')), steps);
  assert.deepEqual(errors, []);
}

test(
  'report.html of a smoke run shows the figures of its log.json, prune_log.json and summary.json (read back in chromium)',
  { skip: noChromium, timeout: 400_000 },
  async () => {
    const logs = await mkdtemp(join(tmpdir(), 'gdp-report-'));
    try {
      const r = await coord(
        [
          '--workers',
          '2',
          '--in-process',
          '--listen',
          '127.0.0.1:0',
          '--backend',
          'wasm',
          '--config',
          join(ROOT, 'configs', 'smoke.json'),
          '--set',
          `base.log_dir=${logs}`,
          // The report's figures are checked against the run's own files: any size of run will do.
          ...SMALL_SMOKE,
        ],
        360_000,
      );
      assert.equal(r.code, 0, r.err + r.out.slice(-2000));
      const dir = join(logs, 'smoke');
      // The report the run wrote at its end (with its live history), then the one gdp-model rebuilds from the files.
      const steps = Number(r.out.match(/resume point: run finished, step (\d+)/)?.[1]);
      const own = r.out.match(/^report: (\S+)$/m);
      assert.ok(own && own[1] === join(dir, 'report.html'), 'the run prints the path of its report.html');
      const ownHtml = readFileSync(own[1], 'utf8');
      const rebuilt = join(logs, 'rebuilt.html');
      const out = await run(process.execPath, [MODEL, 'report', '--run', dir, '--out', rebuilt]);
      assert.match(out.stdout, /report: .*rebuilt\.html/);
      assert.equal(readFileSync(own[1], 'utf8'), ownHtml, "gdp-model report --out leaves the run's own report alone");

      // A second path to the widths: gdp-model info --json loads the model; the page reads the file's tensors.
      const info = JSON.parse(
        (await run(process.execPath, [MODEL, 'info', '--weights', join(dir, 'finetuned.safetensors'), '--json', '--html', join(logs, 'w.html')])).stdout,
      );

      await withChromium(async (context) => {
        await checkReport(await context.newPage(), own[1], dir, steps);
        await checkReport(await context.newPage(), rebuilt, dir, steps);
        const page = await context.newPage();
        const errors: string[] = [];
        page.on('pageerror', (e) => errors.push(e.message));
        await page.route(/^https?:/, (route) => route.abort());
        await page.goto(pathToFileURL(join(logs, 'w.html')).href);
        await page.waitForFunction(`document.body.dataset.rendered >= 1`);
        const widths = (await page.evaluate(`(${READ_TABLE})('#widths-table tr[data-path]')`)) as Row[];
        const paths = await page.$$eval('#widths-table tr[data-path]', (rows) => rows.map((r) => r.getAttribute('data-path')));
        const layers = info.layers as { path: string; out: number }[];
        assert.deepEqual(
          paths,
          layers.map((l) => l.path),
        );
        assert.deepEqual(
          widths.map((w) => w.current),
          layers.map((l) => l.out),
        );
        assert.ok(widths.every((w) => w.baseline >= w.current) && widths.some((w) => w.baseline > w.current), 'the melted widths sit below the full ones');
        assert.deepEqual(errors, []);
      });
    } finally {
      await rm(logs, { recursive: true, force: true });
    }
  },
);

test(
  'a report gives workers the UTC time they were last heard, leaves out the Stage panel, and says where a resumed run resumed (read back in chromium)',
  { skip: noChromium, timeout: 120_000 },
  async () => {
    const dir = await mkdtemp(join(tmpdir(), 'gdp-report-static-'));
    try {
      const epoch = { stage: 'train', epoch: 1, lr: 0.1, train_loss: 1, train_acc: 0.5, test_loss: 1.2, 'acc@1': 0.6, 'acc@5': 0.9, img_s: 50 };
      writeFileSync(join(dir, 'cfg.json'), JSON.stringify({ base: { task_name: 'static' }, stages: ['train'] }));
      writeFileSync(join(dir, 'log.json'), JSON.stringify([epoch]));
      // The history a resumed run saves at its end: resumed at step 40, one worker last heard at 09:30:15 UTC.
      const heard = Date.UTC(2026, 10, 30, 9, 30, 15);
      const sink = new RunHistory();
      const events: DashboardEvent[] = [
        { type: 'run', t: heard - 60_000, task: 'static', stages: ['train'], workers: 1, resumedStep: 40 },
        { type: 'worker_joined', t: heard - 50_000, id: 'w0', host: 'h', backend: 'wasm', gpu: null, step: 40 },
        { type: 'stage', t: heard - 10_000, stage: 'train', label: 'train epoch 1/1', done: 41, total: 50 },
        { type: 'step', t: heard - 10_000, step: 41, stage: 'train', loss: 1, acc1: 0.5, lr: 0.1, imgS: 50 },
        { type: 'worker_stats', t: heard, id: 'w0', imgS: 50, computeShare: 0.5, lastHeard: heard },
      ];
      for (const e of events) sink.apply(dashboardEventSchema.parse(e));
      const file = writeReport(dir, { live: sink.view() });
      // The dashboard itself keeps its Stage panel (shown while the run goes on).
      assert.match(renderPage({ mode: 'live', title: 't' }), /<div id="stage-box">/);

      await withChromium(async (context) => {
        const page = await context.newPage();
        const errors: string[] = [];
        page.on('pageerror', (e) => errors.push(e.message));
        await page.route(/^https?:/, (route) => route.abort());
        await page.goto(pathToFileURL(file).href);
        await page.waitForFunction(`document.body.dataset.rendered >= 1`);
        const cell = '#workers tr[data-id="w0"] td[data-field="lastHeard"]';
        assert.equal(await page.textContent(cell), '2026-11-30 09:30:15');
        assert.equal(Number(await page.getAttribute(cell, 'data-value')), heard);
        assert.ok((await page.$$eval('#workers th', (th) => th.map((h) => h.textContent))).includes('last heard (UTC)'));
        assert.equal(await page.isVisible('#stage-box'), false);
        assert.equal(await page.isVisible('#workers'), true);
        assert.match((await page.textContent('#resumed')) ?? '', /^resumed at step 40: /);
        assert.equal(await page.isVisible('#resumed'), true);
        assert.deepEqual(errors, []);
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
);
