/**
 * `node dist/bench/own_model.js [--epochs 4] [--finetune 4] [--steps N] [--seed 0] [--out FILE.json]`
 *
 * Issue 14's accuracy check for "prune your own model": a MobileNetV2-style network built with stock `tf.layers`
 * (28x28x1 input, the digits) is saved, then (a) imported through `model.file`, trained on 2 in-process workers,
 * pruned with Tick-Tock to at most 50% of its MACs, melted and finetuned; (b) the same network from the same
 * weights trained without pruning for as many epochs as (a) trained in all (baseline + Tock + finetune epochs).
 * Prints both final test top-1 values (correct/total over the test split, %) and their difference; the issue asks
 * for at most 1 point. Minutes per run; not part of `npm test`. `--steps` caps the steps per epoch for a quick try.
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
import { tinyMobileNetV2 } from '../test/io/tfjs_models.js';

const COORD = fileURLToPath(new URL('../src/coordinator/cli.js', import.meta.url));

interface Options {
  epochs: number;
  finetune: number;
  steps?: number;
  seed: number;
  out?: string;
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
  await tinyMobileNetV2([28, 28, 1], 10, 16).save(tfjsDirWriter(join(dir, 'mymodel')));
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
      train: { ...train, max_epoch: o.epochs, steplr: [[o.epochs, 0.05]] },
      gbn: { sparse_lambda: 1e-3, lr_min: 1e-3, lr_max: 1e-2, tock_epoch: 1, T: 2, p: 0.1, finetune_epoch: o.finetune, target_flops: 0.5, tick_batches: 10 },
      stages: ['train', 'prune', 'finetune'],
    },
    dir,
    'pruned',
  );
  const tocks = [...pruned.matchAll(/^Tock epoch \d+\/\d+:/gm)].length;
  const total = o.epochs + tocks + o.finetune;
  const summary = JSON.parse(readFileSync(join(dir, 'logs', 'pruned', 'summary.json'), 'utf8')) as { macs: number; acc1: number }[];
  const plain = await coord(
    {
      ...common,
      base: { task_name: 'plain', seed: o.seed },
      train: {
        ...train,
        max_epoch: total,
        steplr: [
          [o.epochs, 0.05],
          [total, 0.01],
        ],
      },
      stages: ['train'],
    },
    dir,
    'plain',
  );
  const result = {
    epochs: total,
    macs_left_pct: (100 * summary[summary.length - 1].macs) / summary[0].macs,
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
  .option('--seed <n>', 'seed', Number, 0)
  .option('--out <file>', 'also write the result as JSON');
cli.parse();
await main(cli.opts<Options>());
