import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dashboardEventSchema, type DashboardEvent } from '../../src/dashboard/events.js';
import { RunFeed } from '../../src/dashboard/feed.js';
import { runEpochs, epochStart, type EpochCluster, type EpochLoop } from '../../src/coordinator/epoch_loop.js';
import { FeedObserver } from '../../src/coordinator/run_observer.js';
import { CifarResNet } from '../../src/shared/models/resnet_cifar.js';
import { Rng } from '../../src/shared/rng.js';
import { addStats, emptyStats, type StepStats } from '../../src/shared/train/replica.js';
import { useBackend } from '../helpers.js';

/** ResNet-8 on 1 channel with `classes` outputs. */
const tinyResNet = (classes: number) => new CifarResNet(8, classes, 1, new Rng(1));

/** A cluster double: step k (1-based) has loss sum k over 4 samples, 2 of them right, split over two workers. */
function fakeCluster(): EpochCluster & { steps: number } {
  const c = {
    steps: 0,
    step: async () => {
      c.steps++;
      const stats: StepStats = { lossSum: c.steps, correct1: 2, correct5: 4, count: 4 };
      return {
        stats,
        perWorker: [
          { id: 'a', count: 2, ms: 10 },
          { id: 'b', count: 2, ms: 20 },
        ],
        avgGrad: new Float32Array(0),
        layout: undefined as never,
      };
    },
    evaluate: async () => ({ lossSum: 1, correct1: 1, correct5: 1, count: 1 }),
    syncBatchNormStats: async () => {},
  };
  return c as unknown as EpochCluster & { steps: number };
}

test('the epoch loop tells its observer every step (the global step count, the batch mean loss) and the progress; the epochs sum the same steps', async () => {
  await useBackend('cpu');
  const events: DashboardEvent[] = [];
  const cluster = fakeCluster();
  const model = tinyResNet(10);
  const observer = new FeedObserver(
    new RunFeed({ publish: (e) => events.push(dashboardEventSchema.parse(e)) }),
    () => cluster.steps,
    () => model,
  );
  const ends: StepStats[] = [];
  const loop: EpochLoop = {
    epochs: 2,
    stepsPerEpoch: 3,
    testSize: 1,
    sgd: { momentum: 0, weightDecay: 0, nesterov: false },
    lr: (e, i) => 0.1 / (1 + e * 3 + i),
    begin: () => {},
    batch: () => new Int32Array(4),
    end: (e) => void ends.push(e.stats),
    label: (e) => `Tock epoch ${e + 1}/2`,
    stage: 'tock',
    observer,
  };
  await runEpochs(cluster, loop, epochStart(), async () => {});
  const steps = events.filter((e) => e.type === 'step');
  assert.deepEqual(
    steps.map((e) => [e.step, e.stage, e.loss, e.acc1, e.lr]),
    [1, 2, 3, 4, 5, 6].map((k) => [k, 'tock', k / 4, 0.5, 0.1 / k]),
  );
  // Two paths to each epoch's training loss: the loop's sums, and the observer's per-step means.
  const perEpoch = [0, 1].map((e) =>
    steps.slice(3 * e, 3 * e + 3).reduce((a, s) => addStats(a, { lossSum: s.loss * 4, correct1: s.acc1 * 4, correct5: 0, count: 4 }), emptyStats()),
  );
  assert.deepEqual(
    perEpoch.map((s) => [s.lossSum, s.count]),
    ends.map((s) => [s.lossSum, s.count]),
  );
  assert.deepEqual(
    events.filter((e) => e.type === 'stage').map((e) => [e.label, e.done, e.total]),
    [1, 2].flatMap((ep) => [1, 2, 3].map((d) => [`Tock epoch ${ep}/2`, d, 3])),
  );
  assert.deepEqual(
    events.filter((e) => e.type === 'worker_stats').map((e) => e.id),
    Array.from({ length: 6 }, () => ['a', 'b']).flat(),
  );
  model.dispose();
});

test("the observer sends the baseline widths at the start and, after the melt, the model's widths beside them", async () => {
  await useBackend('cpu');
  const events: DashboardEvent[] = [];
  let model = tinyResNet(10);
  const observer = new FeedObserver(
    new RunFeed({ publish: (e) => events.push(dashboardEventSchema.parse(e)) }),
    () => 0,
    () => model,
  );
  observer.start('t', ['train', 'prune'], 2);
  // A network with a narrower last layer stands for the melted one.
  const narrow = tinyResNet(5);
  const wide = model;
  model = narrow;
  observer.prune({ type: 'melt', macs: 1, params: 1, flopsRatio: 0.5, paramsRatio: 0.5 });
  const widths = events.filter((e) => e.type === 'widths');
  assert.deepEqual(
    widths.map((e) => e.form),
    ['baseline', 'melted'],
  );
  assert.ok(widths[0].layers.every((l) => l.baseline === l.current));
  assert.deepEqual(
    widths[1].layers.map((l) => l.baseline),
    widths[0].layers.map((l) => l.baseline),
  );
  assert.deepEqual(
    widths[1].layers.filter((l) => l.current !== l.baseline).map((l) => [l.path, l.baseline, l.current]),
    [['linear', 10, 5]],
  );
  assert.deepEqual(
    events.filter((e) => e.type === 'stage').map((e) => [e.stage, e.done, e.total]),
    [['melt', 1, 1]],
  );
  wide.dispose();
  narrow.dispose();
});
