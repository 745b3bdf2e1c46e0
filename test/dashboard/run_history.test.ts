import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dashboardEventSchema, type DashboardEvent } from '../../src/dashboard/events.js';
import { applyDelta, RunHistory } from '../../src/dashboard/run_history.js';
import { DownsampledSeries } from '../../src/dashboard/series.js';
import { Rng } from '../../src/shared/rng.js';

/** The buckets recomputed from all values: x in [start, start + width) for each bucket start the series reports. */
function bruteForce(xs: number[], ys: number[], width: number) {
  const groups = new Map<number, number[]>();
  xs.forEach((x, i) => {
    const start = Math.floor(x / width) * width;
    groups.set(start, [...(groups.get(start) ?? []), ys[i]]);
  });
  const starts = [...groups.keys()].sort((a, b) => a - b);
  return {
    x: starts,
    n: starts.map((s) => groups.get(s)!.length),
    min: starts.map((s) => Math.min(...groups.get(s)!)),
    max: starts.map((s) => Math.max(...groups.get(s)!)),
    mean: starts.map((s) => groups.get(s)!.reduce((a, b) => a + b, 0) / groups.get(s)!.length),
  };
}

test('a 100k-step series keeps at most maxPoints buckets whose min, max, count and mean equal those of the raw values', () => {
  const s = new DownsampledSeries(2000);
  const rng = new Rng(3);
  const xs: number[] = [];
  const ys: number[] = [];
  for (let step = 1; step <= 100_000; step++) {
    const y = Math.exp(-step / 20000) + rng.next();
    xs.push(step);
    ys.push(y);
    s.add(step, y);
  }
  const v = s.view();
  assert.ok(v.x.length <= 2000 && v.x.length > 1000, `${v.x.length} buckets`);
  assert.equal(v.width, 64);
  const b = bruteForce(xs, ys, v.width);
  assert.deepEqual(v.x, b.x);
  assert.deepEqual(v.n, b.n);
  assert.deepEqual(v.min, b.min);
  assert.deepEqual(v.max, b.max);
  for (let i = 0; i < v.mean.length; i++) assert.ok(Math.abs(v.mean[i] - b.mean[i]) < 1e-9, `bucket ${i}: ${v.mean[i]} vs ${b.mean[i]}`);
});

test('a step at or before the last bucket (a redone step) joins it; the curve never goes back', () => {
  const s = new DownsampledSeries(4);
  for (const [x, y] of [
    [1, 5],
    [2, 4],
    [2, 7],
    [1, 1],
    [3, 2],
  ])
    s.add(x, y);
  const v = s.view();
  assert.deepEqual(v.x, [1, 2, 3]);
  assert.deepEqual(v.n, [1, 3, 1]);
  assert.deepEqual(v.min, [5, 1, 2]);
  assert.deepEqual(v.max, [5, 7, 2]);
  assert.throws(() => new DownsampledSeries(1), RangeError);
});

function events(n: number): DashboardEvent[] {
  const out: DashboardEvent[] = [{ type: 'run', t: 0, task: 't', stages: ['train', 'prune'], workers: 2 }];
  out.push({ type: 'worker_joined', t: 1, id: 'w0', host: 'h', backend: 'wasm', gpu: null, step: 0 });
  out.push({ type: 'worker_joined', t: 1, id: 'w1', host: 'h', backend: 'wasm', gpu: 0, step: 0 });
  for (let i = 1; i <= n; i++) {
    out.push({ type: 'step', t: 10 * i, step: i, stage: 'train', loss: 1 / i, acc1: (i % 10) / 10, lr: 0.1, imgS: 50 });
    out.push({ type: 'stage', t: 10 * i, stage: 'train', label: 'train epoch 1/1', done: i, total: n });
    if (i === Math.floor(n / 2)) out.push({ type: 'worker_lost', t: 10 * i, id: 'w1', step: i + 1, reason: 'closed' });
  }
  out.push({ type: 'epoch', t: 1, stage: 'tock', epoch: 1, lr: 0.01, trainLoss: 1, trainAcc: 0.5, testLoss: 1, acc1: 0.6, acc5: 0.9, imgS: 9 });
  out.push({ type: 'tick', t: 2, tick: 1, macsRatio: 0.8, paramsRatio: 0.7, acc1: 0.5, loss: 2, filtersLeft: 90 });
  out.push({ type: 'epoch', t: 3, stage: 'tock', epoch: 1, lr: 0.01, trainLoss: 1, trainAcc: 0.5, testLoss: 1, acc1: 0.7, acc5: 0.9, imgS: 9 });
  return out.map((e) => dashboardEventSchema.parse(e));
}

test('a page that applies every delta holds the same view as the history, whenever it joined', () => {
  const h = new RunHistory({ maxPoints: 64 });
  const evs = events(1000);
  let early = h.view();
  applyDelta(early, h.takeDelta() ?? { steps: {}, parts: {} });
  let late: ReturnType<RunHistory['view']> | undefined;
  evs.forEach((e, i) => {
    h.apply(e);
    if (i % 7 === 0) {
      const d = h.takeDelta();
      if (d) {
        applyDelta(early, d);
        if (late) applyDelta(late, d);
      }
    }
    // A page opening mid-run: the whole view first (it may hold changes a later delta repeats).
    if (i === 900) late = h.view();
  });
  const d = h.takeDelta();
  if (d) {
    applyDelta(early, d);
    applyDelta(late!, d);
  }
  assert.equal(h.takeDelta(), undefined);
  const final = h.view();
  assert.deepEqual(early, final);
  assert.deepEqual(late, final);
  assert.ok(final.steps.loss.x.length <= 64);
  assert.deepEqual(
    final.workers.map((w) => [w.id, w.state]),
    [
      ['w0', 'active'],
      ['w1', 'lost'],
    ],
  );
  assert.equal(final.workers[1].lostStep, 501);
  // Tocks sit at the MACs ratio of the Tick before them (1 before any).
  assert.deepEqual(
    final.tocks.map((t) => [t.afterTick, t.macsRatio]),
    [
      [0, 1],
      [1, 0.8],
    ],
  );
  // The ETA comes from event times: 999 steps took 9990 ms, 0 left.
  assert.equal(final.stage?.etaS, 0);
});

test('the event schema refuses a bad field by name', () => {
  const r = dashboardEventSchema.safeParse({ type: 'step', t: 1, step: 1, stage: 'train', loss: NaN, acc1: 0.5, lr: 0.1, imgS: 1 });
  assert.equal(r.success, false);
  assert.deepEqual(r.error?.issues[0].path, ['loss']);
  assert.equal(dashboardEventSchema.safeParse({ type: 'nope', t: 1 }).success, false);
});
