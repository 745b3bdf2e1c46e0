/**
 * `node dist/bench/own_model.js [--epochs 4] [--finetune 4] [--steps N] [--seed 0] [--config configs/own-model.json] [--out FILE.json]`
 *
 * Issue 14's accuracy check for "prune your own model": a MobileNetV2-style network built with stock `tf.layers`
 * (28x28x1 input, the digits; kernels drawn from `--seed`) is saved, then
 * (a) imported through `model.file`, trained `--epochs` epochs on 2 in-process workers, pruned with Tick-Tock to
 *     at most 50% of its MACs with the `gbn` section of `--config` (the shipped own-model recipe; `--finetune`
 *     sets its finetune_epoch), melted and finetuned;
 * (b) the same saved network trained without pruning for as many epochs as (a) trained its weights (baseline +
 *     Tock + finetune epochs; Ticks train the gates only and are not counted), each epoch at the mean rate of
 *     (a)'s epoch of the same number (Tocks and the finetune run triangular rates), so both arms see the same
 *     steps, batches, momentum, weight decay and learning-rate budget; pruning is the only difference.
 * Prints both final test top-1 values (the last epoch's, over the 2,004 test digits, %), their difference (the
 * issue asks for at most 1 point), (a)'s baseline and right-after-pruning top-1. Minutes per run; not part of
 * `npm test`. `--steps` caps the steps per epoch for a quick try.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Command } from 'commander';
import * as tf from '@tensorflow/tfjs';
import { tfjsDirWriter } from '../src/shared/io/tfjs_files.js';
import { triangularLr } from '../src/shared/train/schedule.js';
import { tinyMobileNetV2 } from '../test/io/tfjs_models.js';

const COORD = fileURLToPath(new URL('../src/coordinator/cli.js', import.meta.url));
const OWN_CONFIG = fileURLToPath(new URL('../../configs/own-model.json', import.meta.url));
/** The baseline epochs' rate (both arms). */
const BASE_LR = 0.05;

interface Options {
  epochs: number;
  finetune: number;
  steps?: number;
  seed: number;
  config: string;
  out?: string;
}

interface GbnRecipe {
  lr_min: number;
  lr_max: number;
  tock_epoch: number;
  [key: string]: unknown;
}

/** The mean of the paper's triangular rate over epoch `e` (0-based) of an `epochs`-epoch cycle (fine grid, so independent of the step count). */
function meanTriangularLr(e: number, epochs: number, g: GbnRecipe): number {
  const grid = 1000;
  let sum = 0;
  for (let i = 0; i < grid; i++) sum += triangularLr(e * grid + i + 1, epochs * grid, g.lr_min, g.lr_max);
  return sum / grid;
}

/** Runs gdp-coord in-process with 2 workers on a config; resolves with its stdout. */
async function coord(config: object, dir: string, name: string): Promise<string> {
  const path = join(dir, `${name}.json`);
  writeFileSync(path, JSON.stringify(config));
  process.stderr.write(`running ${name} ...\n`);
  const { stdout } = await promisify(execFile)(process.execPath, [COORD, '--in-process', '--workers', '2', '--config', path], { cwd: dir, maxBuffer: 1 << 26 });
  return stdout;
}

/** The last test top-1 (%) an epoch line reports: `... test loss L  top-1 X%` or `..., acc X%`. */
function lastTop1(out: string): number {
  const hits = [...out.matchAll(/(?:test loss [\d.]+\s+top-1|, acc) ([\d.]+)%/g)];
  if (!hits.length) throw new Error('no test accuracy in the run output');
  return Number(hits[hits.length - 1][1]);
}

async function main(o: Options): Promise<void> {
  await tf.setBackend('cpu');
  const dir = mkdtempSync(join(tmpdir(), 'gdp-own-bench-'));
  await tinyMobileNetV2([28, 28, 1], 10, 16, o.seed).save(tfjsDirWriter(join(dir, 'mymodel')));
  const gbn = { ...(JSON.parse(readFileSync(o.config, 'utf8')) as { gbn: GbnRecipe }).gbn, finetune_epoch: o.finetune, save_points: [] };
  const train = { weight_decay: 5e-4, momentum: 0.9, ...(o.steps ? { max_steps_per_epoch: o.steps } : {}) };
  const common = {
    model: { name: 'graph', num_class: 10, file: join(dir, 'mymodel', 'model.json') },
    data: { type: 'mnist', batch_size: 64, test_batch_size: 500 },
    loss: { criterion: 'softmax' },
  };
  const pruned = await coord(
    {
      ...common,
      base: { task_name: 'pruned', seed: o.seed },
      train: { ...train, max_epoch: o.epochs, steplr: [[o.epochs, BASE_LR]] },
      gbn,
      stages: ['train', 'prune', 'finetune'],
    },
    dir,
    'pruned',
  );
  const logs = join(dir, 'logs', 'pruned');
  const tocks = [...pruned.matchAll(/^Tock epoch \d+\/\d+:/gm)].length / Math.max(1, gbn.tock_epoch);
  // (a)'s weight-training epochs after the baseline, each at its mean rate: every Tock's cycle, then the finetune's.
  const rates = [
    ...Array.from({ length: tocks }, () => Array.from({ length: gbn.tock_epoch }, (_, e) => meanTriangularLr(e, gbn.tock_epoch, gbn))).flat(),
    ...Array.from({ length: o.finetune }, (_, e) => meanTriangularLr(e, o.finetune, gbn)),
  ];
  const total = o.epochs + rates.length;
  const summary = JSON.parse(readFileSync(join(logs, 'summary.json'), 'utf8')) as { macs: number; acc1: number }[];
  const ticks = (JSON.parse(readFileSync(join(logs, 'prune_log.json'), 'utf8')) as { type: string; acc1?: number }[]).filter((e) => e.type === 'tick');
  const plain = await coord(
    {
      ...common,
      base: { task_name: 'plain', seed: o.seed },
      train: { ...train, max_epoch: total, steplr: [[o.epochs, BASE_LR], ...rates.map((lr, i) => [o.epochs + i + 1, lr])] },
      stages: ['train'],
    },
    dir,
    'plain',
  );
  const result = {
    seed: o.seed,
    epochs: total,
    macs_left_pct: (100 * summary[summary.length - 1].macs) / summary[0].macs,
    baseline_top1: summary[0].acc1,
    after_pruning_top1: 100 * (ticks[ticks.length - 1]?.acc1 ?? NaN),
    pruned_top1: lastTop1(pruned),
    plain_top1: lastTop1(plain),
  };
  const line = { ...result, diff_points: Number((result.plain_top1 - result.pruned_top1).toFixed(2)) };
  process.stdout.write(`${JSON.stringify(line)}\n`);
  if (o.out) writeFileSync(o.out, `${JSON.stringify(line, null, 2)}\n`);
}

const cli = new Command('own_model')
  .option('--epochs <n>', 'baseline epochs', Number, 4)
  .option('--finetune <n>', 'finetune epochs', Number, 4)
  .option('--steps <n>', 'cap on steps per epoch', Number)
  .option('--seed <n>', 'seed of the starting network, the batch order and the workers', Number, 0)
  .option('--config <file>', 'the gbn recipe to measure (its gbn section)', OWN_CONFIG)
  .option('--out <file>', 'also write the result as JSON');
cli.parse();
await main(cli.opts<Options>());
