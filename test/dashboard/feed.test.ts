import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dashboardEventSchema, type DashboardEvent } from '../../src/dashboard/events.js';
import { RunFeed, type EpochRecordLike, type PruneRecordLike } from '../../src/dashboard/feed.js';
import { reportView, writeReport } from '../../src/dashboard/report.js';
import { RunHistory } from '../../src/dashboard/run_history.js';

function recorder(): { events: DashboardEvent[]; history: RunHistory; publish(e: DashboardEvent): void } {
  const history = new RunHistory();
  const events: DashboardEvent[] = [];
  return {
    events,
    history,
    publish: (e) => {
      const v = dashboardEventSchema.parse(e);
      events.push(v);
      history.apply(v);
    },
  };
}

const record = (stage: EpochRecordLike['stage'], epoch: number, acc: number): EpochRecordLike => ({
  stage,
  epoch,
  lr: 0.01 * epoch,
  train_loss: 2 - acc,
  train_acc: acc / 2,
  test_loss: 3 - acc,
  'acc@1': acc,
  'acc@5': Math.min(1, acc + 0.2),
  img_s: 40 + epoch,
});

test('a step gives the mean loss and top-1, and per worker its rate and its share of the step computing', () => {
  const sink = recorder();
  const lines: string[] = [];
  const feed = new RunFeed(sink, { now: () => 5000, log: (l) => lines.push(l) });
  feed.step(
    'train',
    7,
    {
      stats: { lossSum: 64, correct1: 16, count: 32 },
      perWorker: [
        { id: 'a', count: 16, ms: 200 },
        { id: 'b', count: 16, ms: 400 },
      ],
    },
    0.1,
    500,
  );
  assert.deepEqual(sink.events[0], { type: 'step', t: 5000, step: 7, stage: 'train', loss: 2, acc1: 0.5, lr: 0.1, imgS: 64 });
  assert.deepEqual(
    sink.events.slice(1).map((e) => e.type === 'worker_stats' && [e.id, e.imgS, e.computeShare, e.lastHeard]),
    [
      ['a', 80, 0.4, 5000],
      ['b', 40, 0.8, 5000],
    ],
  );
  // A diverged step does not stop the run: dropped, and logged once.
  for (const step of [8, 9]) feed.step('train', step, { stats: { lossSum: NaN, correct1: 0, count: 1 }, perWorker: [] }, 0.1, 1);
  assert.equal(sink.events.length, 3);
  assert.equal(lines.length, 1);
  assert.match(lines[0], /dropped a 'step' event/);
});

// A run as the coordinator would report it: train, Tock, Tick, save point, Tick, Tock, Tick, finetune.
const records = [record('train', 1, 0.5), record('train', 2, 0.6), record('tock', 1, 0.62), record('tock', 1, 0.64), record('finetune', 1, 0.7)];
const tick = (n: number, r: number): PruneRecordLike => ({
  type: 'tick',
  tick: n,
  flopsRatio: r,
  paramsRatio: r * 0.9,
  filtersLeft: 100 - n,
  acc1: 0.3 + n / 100,
  loss: 2 + n,
});
const tock = (i: number): PruneRecordLike => ({ type: 'tock', epoch: 1, epochs: 1, acc1: records[i]['acc@1'] }) as PruneRecordLike;
const prune: PruneRecordLike[] = [
  tock(2),
  tick(1, 0.9),
  { type: 'checkpoint', tick: 1, savePoint: 0.9, path: 'gbn_90.safetensors', flopsRatio: 0.9 },
  tick(2, 0.8),
  tock(3),
  tick(3, 0.7),
  { type: 'melt' },
];
const STAGES = ['train', 'prune', 'finetune'];

/** A run folder holding `records` and `prune` as log.json and prune_log.json (and summary.json when given). */
function runFolder(rows?: unknown[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'gdp-feed-'));
  writeFileSync(join(dir, 'cfg.json'), JSON.stringify({ base: { task_name: 'equal' }, stages: STAGES }));
  writeFileSync(join(dir, 'log.json'), JSON.stringify(records));
  writeFileSync(join(dir, 'prune_log.json'), JSON.stringify(prune));
  if (rows) writeFileSync(join(dir, 'summary.json'), JSON.stringify(rows));
  return dir;
}

test("the coordinator's epochs and prune events give the page the same figures as the run's files give the report", () => {
  const sink = recorder();
  const feed = new RunFeed(sink, { now: () => 0 });
  feed.run('equal', STAGES, 2);
  feed.epoch(records[0]);
  feed.epoch(records[1]);
  for (const e of prune) {
    if (e.type === 'tock') feed.epoch(records[prune.filter((p) => p.type === 'tock').indexOf(e) + 2]);
    else feed.prune(e);
  }
  feed.epoch(records[4]);
  const rows = [
    { label: 'baseline', macs: 100, params: 10, acc1: 60, acc5: 80, msPerImageB1: 2, msPerImageB64: 1 },
    { label: 'pruned', macs: 70, params: 6, acc1: 70, acc5: 90, msPerImageB1: 1.5, msPerImageB64: 0.7 },
  ];
  feed.final(rows);

  const dir = runFolder(rows);
  try {
    const fromFiles = reportView(dir);
    const live = sink.history.view();
    for (const k of ['task', 'stages', 'epochs', 'ticks', 'tocks', 'savePoints', 'final'] as const) assert.deepEqual(fromFiles[k], live[k], k);
    assert.deepEqual(
      live.tocks.map((t) => [t.afterTick, t.macsRatio]),
      [
        [0, 1],
        [2, 0.8],
      ],
    );
    assert.equal(live.ticks.length, 3);

    // At the run's end the live history goes with the files: the report then draws the per-step curves and workers too.
    feed.workerJoined({ workerId: 'w0', host: 'h', backend: 'wasm', gpu: null }, 0);
    for (let s = 1; s <= 50; s++)
      feed.step('finetune', s, { stats: { lossSum: 100 / s, correct1: 1, count: 2 }, perWorker: [{ id: 'w0', count: 2, ms: 5 }] }, 0.01, 10);
    const html = readFileSync(writeReport(dir, { live: sink.history.view() }), 'utf8');
    assert.match(html, /<script id="gdp-data" type="application\/json">/);
    const after = reportView(dir);
    assert.deepEqual(after.steps, sink.history.view().steps);
    assert.deepEqual(after.workers, sink.history.view().workers);
    assert.equal(after.steps.loss.x.length, 50);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a resumed run's page starts with the epochs, Ticks and Tocks its resume point logged, as the report has them, and says where it resumed", () => {
  const sink = recorder();
  const feed = new RunFeed(sink, { now: () => 0 });
  // Entries of another shape (a resume point of another version) are left out, not fatal.
  feed.run('equal', STAGES, 2, { step: 40, records: [...records, { stage: 'train' }], prune: [...prune, { type: 'bogus' }] });
  const dir = runFolder();
  try {
    const live = sink.history.view();
    const fromFiles = reportView(dir);
    for (const k of ['task', 'stages', 'epochs', 'ticks', 'tocks', 'savePoints'] as const) assert.deepEqual(live[k], fromFiles[k], k);
    assert.equal(live.epochs.length, 5);
    assert.equal(live.resumedAt, 40);
    assert.equal(fromFiles.resumedAt, undefined);
    // The report of the resumed run says so too (the history it saves carries the step).
    writeReport(dir, { live });
    assert.equal(reportView(dir).resumedAt, 40);
    // A run started afresh says nothing of the kind.
    const fresh = recorder();
    new RunFeed(fresh, { now: () => 0 }).run('equal', STAGES, 2);
    assert.equal(fresh.history.view().resumedAt, undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a folder without a run, or a log of the wrong shape, is refused naming the file and field', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gdp-feed-'));
  const code = (c: string, re: RegExp) => (e: unknown) => (e as { code?: string }).code === c && re.test((e as Error).message);
  try {
    assert.throws(() => reportView(dir), code('FILE_NOT_FOUND', /cfg\.json is missing/));
    writeFileSync(join(dir, 'cfg.json'), JSON.stringify({ base: { task_name: 'x' } }));
    writeFileSync(join(dir, 'log.json'), JSON.stringify([{ ...record('train', 1, 0.5), 'acc@1': 'high' }]));
    assert.throws(() => reportView(dir), code('BAD_RUN_FILE', /log\.json: 0\.acc@1/));
    writeFileSync(join(dir, 'log.json'), '[{');
    assert.throws(() => reportView(dir), code('BAD_RUN_FILE', /log\.json: not JSON/));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
