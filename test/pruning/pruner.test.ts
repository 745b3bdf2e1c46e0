import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs-core';
import { finetuneStage } from '../../src/coordinator/finetune.js';
import type { PruneEvent } from '../../src/coordinator/prune_events.js';
import { pruneRunOptions, type PruneStageContext } from '../../src/coordinator/prune_options.js';
import { pruneStage, runPrune } from '../../src/coordinator/pruner.js';
import { prunePositionSchema, savePointName } from '../../src/coordinator/tick_tock.js';
import { RunFiles } from '../../src/coordinator/run_files.js';
import type { ConfigInput } from '../helpers.js';
import { configSchema } from '../../src/shared/config/schema.js';
import { modelCost } from '../../src/shared/graph/flops.js';
import { layerWidths } from '../../src/shared/io/model_file.js';
import { parseSafetensors } from '../../src/shared/io/safetensors.js';
import { loadTorchState } from '../../src/shared/io/torch_state.js';
import { CifarResNet } from '../../src/shared/models/resnet_cifar.js';
import { BatchNorm2d } from '../../src/shared/nn/layers.js';
import { effectiveCost } from '../../src/shared/pruning/cost.js';
import { channelStructure } from '../../src/shared/pruning/groups.js';
import { applyModelUpdate } from '../../src/shared/train/apply_update.js';
import { Rng } from '../../src/shared/rng.js';
import { Replica } from '../../src/shared/train/replica.js';
import { triangularLr } from '../../src/shared/train/schedule.js';
import { cpu, evalLogits, maxAbsDiff, randomImages } from './helpers.js';
import { LocalCluster, syntheticDataset } from './local_cluster.js';

const SHAPE: [number, number, number] = [8, 8, 1];

/** ResNet-8 (one block per stage, shortcuts included): the smallest net with every kind of group, cheap on cpu. */
function tinyResNet(seed: number): CifarResNet {
  return new CifarResNet(8, 10, 1, new Rng(seed));
}

function context(
  logDir: string,
  gbn: Partial<NonNullable<ConfigInput['gbn']>>,
  seed = 1,
  shape = SHAPE,
): PruneStageContext & { cluster: LocalCluster; lines: string[] } {
  const config = configSchema.parse({
    base: { task_name: 't', seed: 3, log_dir: logDir },
    model: { name: 'mnist.resnet20', num_class: 10 },
    train: { max_epoch: 0, momentum: 0.9, weight_decay: 5e-4, max_steps_per_epoch: 1 },
    data: { type: 'mnist', batch_size: 4, test_batch_size: 8 },
    loss: { criterion: 'softmax' },
    gbn: { sparse_lambda: 1e-3, lr_min: 1e-3, lr_max: 1e-2, tock_epoch: 1, T: 2, p: 0.2, finetune_epoch: 1, tick_batches: 1, ...gbn },
    stages: ['prune', 'finetune'],
  });
  const cluster = new LocalCluster(new Replica(tinyResNet(seed), shape), syntheticDataset(16, shape, 1), syntheticDataset(8, shape, 2));
  const lines: string[] = [];
  const log = (l: string) => {
    lines.push(l);
    if (process.env.GDP_TEST_VERBOSE) console.log(l);
  };
  return { cluster, config, trainSize: 16, testSize: 8, files: new RunFiles(config), log, lines };
}

type Tick = Extract<PruneEvent, { type: 'tick' }>;
type Saved = Extract<PruneEvent, { type: 'checkpoint' }>;

describe('Tick-Tock pruner', () => {
  let dir: string;
  before(async () => {
    await cpu();
    dir = mkdtempSync(join(tmpdir(), 'gdp-prune-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('the triangular lr follows the paper: lr_min -> lr_max at half -> lr_min at the last step', () => {
    assert.equal(triangularLr(0, 10, 1, 3), 1);
    assert.equal(triangularLr(5, 10, 1, 3), 3);
    assert.equal(triangularLr(10, 10, 1, 3), 1);
    assert.equal(triangularLr(2.5, 10, 1, 3), 2);
  });

  it('prune stage: checkpoints exactly at the save points, stops at target_flops, melts; finetune follows', async () => {
    const ctx = context(dir, { save_points: [0.9, 0.6, 0.35], target_flops: 0.35, max_ticks: 12 });
    const run = join(dir, 't');
    const tensors = tf.memory().numTensors;
    const r = await pruneStage(ctx);
    const events = JSON.parse(readFileSync(join(run, 'prune_log.json'), 'utf8')) as PruneEvent[];
    const ticks = events.filter((e): e is Tick => e.type === 'tick');
    const saved = events.filter((e): e is Saved => e.type === 'checkpoint');
    assert.equal(r.stoppedBy, 'target_flops');
    assert.ok(ticks.at(-1)!.flopsRatio <= 0.35 && ticks.slice(0, -1).every((t) => t.flopsRatio > 0.35));
    assert.deepEqual(
      saved.map((e) => e.savePoint),
      [0.9, 0.6, 0.35],
    );
    for (const e of saved) {
      const first = ticks.find((t) => t.flopsRatio <= e.savePoint)!;
      assert.equal(e.tick, first.tick, `save point ${e.savePoint}`);
      assert.equal(e.path, join(run, savePointName(e.savePoint)));
      const file = parseSafetensors(new Uint8Array(readFileSync(e.path)), e.path);
      assert.equal(file.metadata.tick, String(first.tick));
      assert.equal(file.metadata.arch, 'mnist.resnet20');
      assert.equal(file.metadata.num_class, '10');
      // The checkpoint holds that Tick's masks: reloaded, it costs what the log said.
      const m = tinyResNet(0);
      loadTorchState(m, file.tensors, SHAPE, e.path);
      const reloaded = effectiveCost(m, channelStructure(m, SHAPE)).macs / modelCost(m, SHAPE).macs;
      assert.ok(Math.abs(reloaded - first.flopsRatio) < 1e-12);
      m.dispose();
    }
    // Ticks 2, 4, ... are followed by a Tock; one more runs before the first Tick.
    assert.equal(events.filter((e) => e.type === 'tock').length, 1 + Math.floor((ticks.length - 1) / 2));
    assert.equal(r.final.macs / r.baseline.macs, ticks.at(-1)!.flopsRatio, 'the melt removes exactly the masked channels');
    const model = ctx.cluster.replica.model;
    assert.ok(![...model.namedSlots()].some(([n]) => n.endsWith('.g')), 'no gates after the melt');
    const kinds = ctx.cluster.updates.map((u) => (u.kind === 'custom' ? u.handler : u.kind));
    assert.equal(kinds[0], 'gdp.prune.gate');
    assert.equal(kinds.filter((k) => k === 'gdp.prune.mask').length, ticks.length);
    assert.equal(kinds.at(-2), 'gdp.prune.melt');
    assert.ok(ctx.cluster.syncs >= ticks.length, 'BN statistics are averaged before each evaluation');

    // The saved melted network loads into a default build and computes what the cluster's model computes.
    const x = randomImages(2, SHAPE, new Rng(8));
    const pruned = parseSafetensors(new Uint8Array(readFileSync(join(run, 'pruned.safetensors'))));
    const reloaded = tinyResNet(9);
    loadTorchState(reloaded, pruned.tensors, SHAPE);
    assert.ok(maxAbsDiff(evalLogits(reloaded, x), evalLogits(model, x)) <= 1e-5);
    reloaded.dispose();
    x.dispose();

    await finetuneStage(ctx);
    const ft = JSON.parse(readFileSync(join(run, 'finetune_log.json'), 'utf8')) as PruneEvent[];
    assert.deepEqual(
      ft.map((e) => e.type),
      ['finetune'],
    );
    assert.deepEqual(readdirSync(run).sort(), [
      'finetune_log.json',
      'finetuned.safetensors',
      'gbn_35.safetensors',
      'gbn_60.safetensors',
      'gbn_90.safetensors',
      'log.json',
      'prune_log.json',
      'pruned.safetensors',
    ]);
    assert.ok(ctx.lines.some((l) => l.startsWith('Tick 1: MACs')));
    // Tock and finetune epochs join the run's epoch log, in the training stage's record format.
    const epochs = JSON.parse(readFileSync(join(run, 'log.json'), 'utf8')) as { stage: string; lr: number }[];
    assert.deepEqual(
      epochs.map((e) => e.stage),
      [...events.filter((e) => e.type === 'tock').map(() => 'tock'), 'finetune'],
    );
    assert.ok(
      epochs.every((e) => e.lr === 1e-3),
      'one step per epoch ends at lr_min',
    );
    assert.ok(tf.memory().numTensors <= tensors, `tensors: ${tensors} -> ${tf.memory().numTensors}`);
  });

  it('a replica replaying the broadcast records ends with the same network (l1 criterion, max_ticks)', async () => {
    const ctx = context(join(dir, 'l1'), { criterion: 'l1', tock_epoch: 0, max_ticks: 2 }, 5);
    const r = await runPrune(ctx.cluster, pruneRunOptions(ctx));
    assert.equal(r.ticks, 2);
    assert.equal(r.stoppedBy, 'max_ticks');
    const b = tinyResNet(5);
    for (const u of ctx.cluster.updates) applyModelUpdate(b, u);
    assert.equal(modelCost(b, SHAPE).macs, r.final.macs);
    const a = ctx.cluster.replica.model;
    const shapes = (m: CifarResNet) => [...m.namedSlots()].map(([n, s]) => `${n}:${s.value.shape}`);
    assert.deepEqual(shapes(b), shapes(a as CifarResNet));
  });

  it('without tick_batches a Tick is one pass over the training set (the paper), each sample once', async () => {
    // 16 samples in batches of 4: 4 gate steps per Tick, covering a permutation; max_steps_per_epoch lifted.
    const ctx = context(dir, { tick_batches: undefined, max_ticks: 2, target_flops: 0.01 });
    const config = { ...ctx.config, base: { ...ctx.config.base, task_name: 'whole_tick' }, train: { ...ctx.config.train, max_steps_per_epoch: undefined } };
    const gateSteps: Int32Array[] = [];
    const step = ctx.cluster.step.bind(ctx.cluster);
    ctx.cluster.step = (indices, set, sgd) => {
      if (set === 'gates') gateSteps.push(indices.slice());
      return step(indices, set, sgd);
    };
    await runPrune(ctx.cluster, pruneRunOptions({ ...ctx, config, files: new RunFiles(config) }));
    assert.equal(gateSteps.length, 8);
    for (const tick of [gateSteps.slice(0, 4), gateSteps.slice(4)]) {
      const seen = tick.flatMap((b) => Array.from(b)).sort((a, b) => a - b);
      assert.deepEqual(
        seen,
        Array.from({ length: 16 }, (_, i) => i),
      );
    }
  });

  it('gbn.round_to reaches the decision: every group keeps a multiple of it (or all its channels)', async () => {
    const ctx = context(dir, { round_to: 4, max_ticks: 3, target_flops: 0.01, p: 0.3 });
    const config = { ...ctx.config, base: { ...ctx.config.base, task_name: 'round_to' } };
    const r = await runPrune(ctx.cluster, pruneRunOptions({ ...ctx, config, files: new RunFiles(config) }));
    assert.ok(r.ticks >= 1);
    const widths = Object.values(layerWidths(ctx.cluster.replica.model)).map(([, out]) => out);
    assert.ok(
      widths.some((w) => ![16, 32, 64, 10].includes(w)),
      `something was pruned: ${widths}`,
    );
    for (const w of widths) assert.ok(w % 4 === 0 || w === 10, `width ${w} is no multiple of 4`);
  });

  it("the paper's Tick switches reach the run: tick_trains and tick_decay_frozen the Tick steps, prune_count the count, min_filters the widths", async () => {
    const run = async (task: string, gbn: Partial<NonNullable<ConfigInput['gbn']>>) => {
      const ctx = context(dir, { max_ticks: 5, target_flops: 0.01, p: 0.3, T: 10, ...gbn });
      const config = { ...ctx.config, base: { ...ctx.config.base, task_name: task } };
      const tickSteps: string[] = [];
      const step = ctx.cluster.step.bind(ctx.cluster);
      ctx.cluster.step = (indices, set, sgd) => {
        if (set !== 'all') tickSteps.push(`${set}${sgd.decayFrozen ? '+decay' : ''}`);
        return step(indices, set, sgd);
      };
      const events: PruneEvent[] = [];
      // The count a resumed run lags from travels in the position (checked against its schema, as a resume does).
      const previousLeft: (number | undefined)[] = [];
      const resumePoint = async (when: string, at: () => unknown) => {
        if (when === 'boundary') previousLeft.push(prunePositionSchema.parse(at()).previousLeft);
      };
      await runPrune(ctx.cluster, { ...pruneRunOptions({ ...ctx, config, files: new RunFiles(config) }), log: (e) => events.push(e), resumePoint });
      const ticks = events.filter((e): e is Tick => e.type === 'tick').map((e) => e.info);
      const widths = [...ctx.cluster.replica.model.namedModules()].flatMap(([, m]) => (m instanceof BatchNorm2d ? [m.channels] : []));
      return { tickSteps, ticks, widths, previousLeft };
    };
    const gdp = await run('switches-gdp', {});
    assert.ok(gdp.tickSteps.length >= 3 && gdp.tickSteps.every((s) => s === 'gates'), gdp.tickSteps.join());
    for (const t of gdp.ticks) assert.equal(t.counted, t.left);
    // Without min_filters some group goes under 6 channels, so the paper run's bound below is tested.
    assert.ok(Math.min(...gdp.widths) < 6, `widths ${gdp.widths}`);

    const paper = await run('switches-paper', { tick_trains: 'all_but_conv', tick_decay_frozen: true, prune_count: 'lagged', min_filters: 6 });
    assert.ok(paper.tickSteps.length >= 3 && paper.tickSteps.every((s) => s === 'all_but_conv+decay'), paper.tickSteps.join());
    // The paper's left lags a Tick: Tick 1 counts the filters alive at its start, Tick k those alive before Tick k-1's prune.
    assert.ok(paper.ticks.length >= 3);
    paper.ticks.forEach((t, k) => assert.equal(t.counted, k === 0 ? t.left : paper.ticks[k - 1].left, `Tick ${k + 1}`));
    assert.ok(paper.ticks[1].counted > paper.ticks[1].left, 'the lag changes the count');
    // Boundaries: after the first Tock (no Tick yet), then after every Tick that did not end the run.
    assert.deepEqual(paper.previousLeft, [undefined, ...paper.ticks.slice(0, paper.previousLeft.length - 1).map((t) => t.left)]);
    for (const w of paper.widths) assert.ok(w >= 6, `a BN kept ${w} channels`);

    // minimal_rounding floor (the paper's int(width * ratio)): a group of 16 may go to 3 at ratio 0.2, where ceil keeps 4.
    const floor = await run('switches-floor', { minimal_ratio: 0.2, minimal_rounding: 'floor', p: 0.5, max_ticks: 6 });
    const ceil = await run('switches-ceil', { minimal_ratio: 0.2, p: 0.5, max_ticks: 6 });
    assert.ok(Math.min(...ceil.widths) >= 4 && Math.min(...floor.widths) === 3, `ceil: ${ceil.widths}; floor: ${floor.widths}`);
  });

  it("data.shuffle: false gives Tock, Tick and finetune batches in sample order, as the paper's DataLoader; true shuffles them", async () => {
    /**
     * The global batches of a prune and finetune run: Tock (4 steps), 2 Ticks (1 each), Tock, Tick, finetune (4).
     * On 4x4 inputs: the order of the batches does not depend on the image size, and the cpu backend's filter
     * gradient (most of this test's time) costs a quarter of 8x8's.
     */
    const batches = async (shuffle: boolean) => {
      const ctx = context(join(dir, `shuffle-${shuffle}`), { tock_epoch: 1, max_ticks: 3, target_flops: 0.1 }, 1, [4, 4, 1]);
      ctx.config.data.shuffle = shuffle;
      ctx.config.train.max_steps_per_epoch = 4;
      const seen: number[][] = [];
      const step = ctx.cluster.step.bind(ctx.cluster);
      ctx.cluster.step = (indices, set, sgd) => {
        seen.push([...indices]);
        return step(indices, set, sgd);
      };
      await pruneStage(ctx);
      await finetuneStage(ctx);
      return seen;
    };
    const inOrder = (b: number[]) => b.every((v, i) => v === b[0] + i) && b[0] % 4 === 0;
    const unshuffled = await batches(false);
    // 16 samples in batches of 4: an epoch is 4 steps.
    assert.equal(unshuffled.length, 15);
    assert.deepEqual(
      unshuffled.slice(0, 5).map((b) => b[0]),
      [0, 4, 8, 12, 0],
    );
    assert.ok(unshuffled.every(inOrder), JSON.stringify(unshuffled));
    const shuffled = await batches(true);
    assert.equal(shuffled.length, 15);
    assert.ok(!shuffled.every(inOrder), 'the default shuffles');
  });

  it('refuses to run without a gbn section', () => {
    const ctx = context(dir, {});
    const config = { ...ctx.config, gbn: undefined };
    assert.throws(
      () => pruneRunOptions({ ...ctx, config }),
      (e: Error & { code?: string }) => e.code === 'BAD_CONFIG',
    );
  });
});
