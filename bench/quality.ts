/**
 * `npm run bench:quality -- [--recipe default|paper] [--seeds 0,1,2] [--set key=value ...] [--out FILE.json]`
 * `npm run bench:quality -- ... --baselines DIR` (prune and finetune only, from the baselines of an earlier run in DIR)
 * `npm run bench:quality -- --merge A.json B.json ...` (the summary over the runs of several such files)
 *
 * Pruning quality over seeds: runs a named recipe end to end (train, prune, finetune) with `gdp-coord --workers 2
 * --local` once per seed, then prints the mean and standard deviation of the baseline's test top-1, the top-1 right
 * after pruning (raw, and with BN statistics re-estimated over 20 training batches by `gdp-model eval
 * --recalibrate-bn 20`), the final top-1, the MACs and parameters left, and the wall time of each stage. Minutes per
 * seed; not part of `npm test`. Accuracies are correct/total over the whole test split.
 *
 * A seed whose run fails is reported (with the end of its output; the whole output is in the run directory) and
 * the others go on; `--out` is rewritten after every seed, so a long series interrupted keeps what it measured,
 * and `--merge` combines files of the same recipe and overrides (seeds measured at different times).
 *
 * Recipes:
 * - `default`: the embedded default job (configs/mnist-resnet20.json) as it ships.
 * - `paper`: the paper code's recipe on the digits (issue 16): baseline 12 epochs (lr 0.1 / 0.01 / 0.001 from epochs
 *   1 / 7 / 10), p = 0.01, a 2-epoch Tock every 5 Ticks, lr_max 0.01, stop at 30% of the MACs, finetune 6 epochs
 *   without momentum, and the paper's Tick: one pass over the training set (`tick_batches` unset) training all but
 *   the convolutions (`tick_trains: all_but_conv`, the paper's freeze_conv).
 */
import { spawn } from 'node:child_process';
import { createWriteStream, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';

const RECIPES: Record<string, string[]> = {
  default: [],
  paper: [
    'train.max_epoch=12',
    'train.steplr=[[6,0.1],[9,0.01],[12,0.001]]',
    'gbn.p=0.01',
    'gbn.T=5',
    'gbn.tock_epoch=2',
    'gbn.lr_max=0.01',
    'gbn.target_flops=0.3',
    'gbn.finetune_epoch=6',
    'gbn.finetune_momentum=0',
    'gbn.tick_batches=null',
    'gbn.tick_trains=all_but_conv',
  ],
};

const COORD = fileURLToPath(new URL('../src/coordinator/cli.js', import.meta.url));
const MODEL = fileURLToPath(new URL('../src/model/cli.js', import.meta.url));

interface SeedResult {
  seed: number;
  baseline_top1: number;
  pruned_top1_raw: number;
  pruned_top1_bn: number;
  final_top1: number;
  macs_left: number;
  params_left: number;
  ticks: number;
  stage_s: Record<string, number>;
}

/**
 * Runs a command, echoing its stage lines with a prefix and writing all its output to `logFile`; resolves with
 * stdout and the times its lines arrived. On a non-zero exit, rejects with the end of the output and the log's path.
 */
function run(cmd: string[], cwd: string, prefix: string, logFile: string): Promise<{ out: string; lines: [number, string][] }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, cmd, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    const log = createWriteStream(logFile);
    let out = '';
    const lines: [number, string][] = [];
    let partial = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d;
      log.write(d);
      partial += d;
      const parts = partial.split('\n');
      partial = parts.pop()!;
      for (const l of parts) {
        lines.push([performance.now(), l]);
        if (/^gdp-coord: stage|^Tick \d|^Tock epoch \d+\/\d+:|^(Train|Finetune) epoch \d+\/\d+:|^model|^(baseline|pruned) /.test(l))
          process.stderr.write(`${prefix}${l}\n`);
      }
    });
    child.stderr.on('data', (d: Buffer) => {
      log.write(d);
      process.stderr.write(`${prefix}${d}`);
    });
    child.on('error', reject);
    child.on('close', (code) => {
      log.end();
      if (code === 0) return resolve({ out, lines });
      const tail = out.trimEnd().split('\n').slice(-30).join('\n');
      reject(new Error(`${cmd.join(' ')} exited ${code}; its last lines (all in ${logFile}):\n${tail}`));
    });
  });
}

/** Seconds spent in each stage, from the times the coordinator announced them. */
function stageTimes(lines: [number, string][], end: number): Record<string, number> {
  const starts = lines.flatMap(([t, l]) => {
    const m = /^gdp-coord: stage '(\w+)'/.exec(l);
    return m ? [[t, m[1]] as const] : [];
  });
  return Object.fromEntries(starts.map(([t, s], i) => [s, Number((((starts[i + 1]?.[0] ?? end) - t) / 1000).toFixed(1))]));
}

/**
 * The baseline seed `seed` trained in an earlier bench:quality run folder `dir` (what it printed as `runs in ...`):
 * the last `train-epoch<N>.safetensors` of its task. Exits with a message naming the folder when there is none.
 */
function earlierBaseline(dir: string, recipe: string, seed: number): string {
  const logDir = join(resolve(dir), 'logs', `quality_${recipe}_${seed}`);
  let names: string[] = [];
  try {
    names = readdirSync(logDir);
  } catch {
    // reported below
  }
  const epochs = names.flatMap((n) => /^train-epoch(\d+)\.safetensors$/.exec(n)?.[1] ?? []).map(Number);
  if (!epochs.length) program.error(`--baselines: no train-epoch<N>.safetensors of seed ${seed} in ${logDir}`);
  return join(logDir, `train-epoch${Math.max(...epochs)}.safetensors`);
}

/**
 * One seed of `recipe` end to end, or with `baseline` (a weights file) its prune and finetune from that baseline,
 * which repeats the whole run's prune and finetune (checked bit for bit on seed 0 of `default`, README "Pruning").
 */
async function oneSeed(recipe: string, seed: number, extra: string[], config: string[], dir: string, baseline?: string): Promise<SeedResult> {
  const task = `quality_${recipe}_${seed}`;
  const from = baseline ? [`model.weights=${baseline}`, 'stages=["prune","finetune"]'] : [];
  const sets = [...RECIPES[recipe], ...extra, ...from, `base.seed=${seed}`, `base.task_name=${task}`].flatMap((s) => ['--set', s]);
  const prefix = `[seed ${seed}] `;
  const { lines } = await run([COORD, '--workers', '2', '--local', '--listen', '127.0.0.1:0', ...config, ...sets], dir, prefix, join(dir, `${task}.log`));
  const end = performance.now();
  const logDir = join(dir, 'logs', task);
  const summary = JSON.parse(readFileSync(join(logDir, 'summary.json'), 'utf8')) as { label: string; macs: number; params: number; acc1: number }[];
  const pruneLog = JSON.parse(readFileSync(join(logDir, 'prune_log.json'), 'utf8')) as { type: string; acc1?: number }[];
  const ticks = pruneLog.filter((e) => e.type === 'tick');
  const evalOut = await run(
    [MODEL, 'eval', '--weights', join(logDir, 'pruned.safetensors'), '--recalibrate-bn', '20', '--batch-size', '128', '--json'],
    dir,
    prefix,
    join(dir, `${task}.eval.log`),
  );
  const bn = JSON.parse(evalOut.out.trim().split('\n').pop()!) as { top1: number };
  const [base, last] = [summary[0], summary[summary.length - 1]];
  return {
    seed,
    baseline_top1: base.acc1,
    pruned_top1_raw: 100 * (ticks[ticks.length - 1]?.acc1 ?? NaN),
    pruned_top1_bn: 100 * bn.top1,
    final_top1: last.acc1,
    macs_left: (100 * last.macs) / base.macs,
    params_left: (100 * last.params) / base.params,
    ticks: ticks.length,
    stage_s: stageTimes(lines, end),
  };
}

function meanStd(xs: number[]): { mean: number; std: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const std = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1)) : 0;
  return { mean: Number(mean.toFixed(3)), std: Number(std.toFixed(3)) };
}

interface QualityFile {
  recipe: string;
  set: string[];
  /** The earlier run folder whose baselines the seeds started from (`--baselines`). */
  baselines?: string;
  seeds: number[];
  runs: SeedResult[];
  failed?: { seed: number; error: string }[];
}

const program = new Command()
  .name('npm run bench:quality --')
  .option('--recipe <name>', `one of ${Object.keys(RECIPES).join(', ')}`, 'default')
  .option('--seeds <list>', 'comma-separated seeds', '0,1,2')
  .option(
    '--set <key=value>',
    'extra config override for every run (repeatable), e.g. gbn.criterion=l1',
    (v: string, acc: string[]) => [...acc, v],
    [] as string[],
  )
  .option('--config <file>', "the run's base config (default: the embedded default job's)")
  .option('--baselines <dir>', 'the folder of an earlier bench:quality run of this recipe: every seed starts from its baseline there (prune and finetune only)')
  .option('--out <file>', 'also write the figures as JSON (rewritten after every seed)')
  .option('--merge <files...>', 'run nothing: print the summary over the runs of these --out files (same recipe and overrides)')
  .parse();
const o = program.opts<{ recipe: string; seeds: string; set: string[]; config?: string; baselines?: string; out?: string; merge?: string[] }>();

/** The summary (mean ± std over seeds) of `runs`; also what `--out` holds besides the runs. */
function summarize(runs: SeedResult[]) {
  const keys = ['baseline_top1', 'pruned_top1_raw', 'pruned_top1_bn', 'final_top1', 'macs_left', 'params_left', 'ticks'] as const;
  const stats = Object.fromEntries(keys.map((k) => [k, meanStd(runs.map((r) => r[k]))]));
  const drop = meanStd(runs.map((r) => r.baseline_top1 - r.final_top1));
  const stages = [...new Set(runs.flatMap((r) => Object.keys(r.stage_s)))];
  // Over the runs that had the stage (a run from --baselines has no 'train').
  const stageStats = Object.fromEntries(stages.map((s) => [s, meanStd(runs.flatMap((r) => r.stage_s[s] ?? []))]));
  const fmt = (m: { mean: number; std: number }, unit = '') => `${m.mean.toFixed(2)}${unit} ± ${m.std.toFixed(2)}`;
  const lines = [
    ...keys.map((k) => `${k.padEnd(18)} ${fmt(stats[k], k === 'ticks' ? '' : '%')}`),
    `${'drop'.padEnd(18)} ${fmt(drop, ' pts')}`,
    ...stages.map((s) => `${`${s} wall`.padEnd(18)} ${fmt(stageStats[s], ' s')}`),
  ];
  return { mean_std: { ...stats, drop, stage_s: stageStats }, lines };
}

if (o.merge) {
  const files = o.merge.map((f) => ({ f, q: JSON.parse(readFileSync(f, 'utf8')) as QualityFile }));
  const [first] = files;
  for (const { f, q } of files) {
    if (q.recipe !== first.q.recipe || JSON.stringify(q.set) !== JSON.stringify(first.q.set))
      program.error(`--merge: ${f} is recipe '${q.recipe}' with [${q.set.join(' ')}], ${first.f} is '${first.q.recipe}' with [${first.q.set.join(' ')}]`);
  }
  const runs = files.flatMap(({ q }) => q.runs);
  const seen = runs.map((r) => r.seed);
  if (new Set(seen).size !== seen.length) program.error(`--merge: a seed appears twice (${seen.join(', ')})`);
  console.log(`recipe '${first.q.recipe}'${first.q.set.length ? ` with ${first.q.set.join(' ')}` : ''}, seeds ${seen.join(', ')}`);
  for (const l of summarize(runs).lines) console.log(l);
  process.exit(0);
}

if (!RECIPES[o.recipe]) program.error(`--recipe must be one of ${Object.keys(RECIPES).join(', ')}, got '${o.recipe}'`);
const seeds = o.seeds.split(',').map(Number);
if (!seeds.length || seeds.some((s) => !Number.isInteger(s))) program.error(`--seeds must be integers, got '${o.seeds}'`);
// Every seed's baseline is found before anything runs.
const baselines = o.baselines ? Object.fromEntries(seeds.map((s) => [s, earlierBaseline(o.baselines!, o.recipe, s)])) : undefined;

const dir = mkdtempSync(join(tmpdir(), 'gdp-quality-'));
process.stderr.write(`bench:quality: recipe '${o.recipe}', seeds ${seeds.join(', ')}; runs in ${dir}\n`);
const results: SeedResult[] = [];
const failed: { seed: number; error: string }[] = [];
const save = () => {
  if (!o.out) return;
  const file: QualityFile & { mean_std: object } = {
    recipe: o.recipe,
    set: o.set,
    ...(o.baselines ? { baselines: resolve(o.baselines) } : {}),
    seeds,
    runs: results,
    failed,
    mean_std: summarize(results).mean_std,
  };
  writeFileSync(o.out, `${JSON.stringify(file, null, 2)}\n`);
};
for (const seed of seeds) {
  try {
    results.push(await oneSeed(o.recipe, seed, o.set, o.config ? ['--config', resolve(o.config)] : [], dir, baselines?.[seed]));
  } catch (err) {
    failed.push({ seed, error: (err as Error).message });
    process.stderr.write(`[seed ${seed}] failed: ${(err as Error).message}\n`);
  }
  save();
}

console.log(
  `recipe '${o.recipe}'${o.set.length ? ` with ${o.set.join(' ')}` : ''}, ${results.length} seed(s)${failed.length ? `, ${failed.length} failed` : ''}`,
);
for (const l of summarize(results).lines) console.log(l);
if (failed.length) process.exitCode = 1;
