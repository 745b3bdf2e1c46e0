import { join } from 'node:path';
import type { Config } from '../shared/config/schema.js';
import { momentumFileEpoch, runModelFile } from '../shared/io/run_file_kinds.js';
import { initialWeightsPath } from './initial_weights.js';
import { earlierEpochs, type EarlierEpochs } from './run_files.js';
import { RESUME_FILE } from './resume_point.js';
import { interruptedAt, runFilesIn, runFolder } from './run_folder.js';
import { savePointName } from './tick_tock.js';

/** Epoch numbers as ranges, ascending and without repeats: [5, 1, 2, 3] -> '1-3, 5'. */
export function epochRanges(epochs: Iterable<number>): string {
  const sorted = [...new Set(epochs)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length;) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    parts.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(', ');
}

/** The epoch N of an epoch checkpoint train-epoch<N>.safetensors or of its .optim momentum; undefined for any other file. */
function checkpointEpoch(name: string): number | undefined {
  const f = runModelFile(name);
  return f?.kind === 'epoch' ? f.epoch : momentumFileEpoch(name);
}

/** The epochs whose checkpoint (train-epoch<N>) this run's train stage saves: every model_saving_interval-th and the last. */
function savedEpochs(config: Config): Set<number> {
  const saved = new Set<number>();
  if (!config.stages.includes('train')) return saved;
  const max = config.train.max_epoch;
  for (let n = config.base.epoch + 1; n <= max; n++) if (n % config.base.model_saving_interval === 0 || n === max) saved.add(n);
  return saved;
}

/**
 * The earlier run's files among `files` that its later stages and its end wrote, in the order a run writes them, each
 * with whether this run writes its own in its place (overwriting it): the prune stage prune_log.json, the save points
 * of its gbn.save_points (as it reaches them) and pruned.safetensors; the finetune stage finetune_log.json and
 * finetuned.safetensors; every run summary.json, at its end.
 */
function laterResults(config: Config, files: readonly string[]): { name: string; rewritten: boolean }[] {
  const prune = config.stages.includes('prune');
  const finetune = config.stages.includes('finetune');
  const savePoints = new Set((config.gbn?.save_points ?? []).map(savePointName));
  const found: { name: string; rewritten: boolean; order: number[] }[] = [];
  for (const name of files) {
    const f = runModelFile(name);
    const at = (order: number[], rewritten: boolean) => found.push({ name, rewritten, order });
    if (name === 'prune_log.json') at([0], prune);
    // Save points from the largest MACs ratio down: gbn_90 before gbn_70.
    else if (f?.kind === 'save_point') at([1, -f.percent], prune && savePoints.has(name));
    else if (f?.kind === 'pruned') at([2], prune);
    else if (name === 'finetune_log.json') at([3], finetune);
    else if (f?.kind === 'finetuned') at([4], finetune);
    else if (name === 'summary.json') at([5], true);
  }
  found.sort((a, b) => a.order[0] - b.order[0] || (a.order[1] ?? 0) - (b.order[1] ?? 0));
  return found.map(({ name, rewritten }) => ({ name, rewritten }));
}

/**
 * What a `base.epoch` continuation does with the earlier run in its folder `dir`, as lines for the start's log (the
 * run says them as it starts, --dry-run before any worker joins: the same lines): the folder, the epoch and the
 * weights it continues from, and which of the earlier log.json's train epochs 1..base.epoch it keeps (`earlier`), and a
 * warning naming those it has no record of (a missing or empty log.json: all): the continued log.json and report
 * lack them, but the run needs only the weights, so it goes on. Then the earlier run's checkpoints past base.epoch
 * among `files` (the folder's run files, runFilesIn): a warning naming those this run overwrites as it reaches their
 * epochs (nothing is deleted: a run stopped before then leaves them), a note naming those it leaves (epochs it does
 * not save), which will then sit beside the continuation's own. Likewise the files of the earlier run's later stages
 * and end (laterResults: its pruning logs, save points, pruned and finetuned networks, summary.json): a warning
 * naming those this run overwrites as it writes its own, a note naming those it leaves (results of the earlier run,
 * not of this one). Last, with `interrupted` (interruptedAt: where the
 * earlier run's resume point stands, when that run was interrupted), a warning that this run replaces that resume
 * point as its first stage starts: gdp-coord goes on only with --discard-resume (checkRunFolder).
 */
export function describeContinuation(config: Config, dir: string, earlier: EarlierEpochs, files: readonly string[], interrupted?: string): string[] {
  const e = config.base.epoch;
  const weights = initialWeightsPath(config);
  const keptEpochs = earlier.kept.map((r) => r.epoch);
  const kept = keptEpochs.length ? epochRanges(keptEpochs) : 'none';
  const why = earlier.found ? (earlier.dropped ? ` (${earlier.dropped} later record(s) dropped)` : '') : ' (no log.json)';
  const lines = [`continues ${dir} from epoch ${e} (${weights}); log.json epochs kept: ${kept}${why}`];
  const have = new Set(keptEpochs);
  const missing = Array.from({ length: e }, (_, i) => i + 1).filter((n) => !have.has(n));
  if (missing.length) {
    lines.push(
      `warning: ${join(dir, 'log.json')} has no record of train epoch(s) ${epochRanges(missing)}: ` +
        `the continued log.json and report will lack them (the run starts from ${weights} regardless)`,
    );
  }
  const later = files.map((f) => checkpointEpoch(f) ?? 0).filter((n) => n > e);
  const saved = savedEpochs(config);
  const overwritten = later.filter((n) => saved.has(n));
  const left = later.filter((n) => !saved.has(n));
  if (overwritten.length) {
    lines.push(
      `warning: the earlier run's checkpoints train-epoch<N>.safetensors (and .optim) for N = ${epochRanges(overwritten)}, past epoch ${e}, ` +
        `will be overwritten as this run reaches those epochs`,
    );
  }
  if (left.length) {
    lines.push(
      `note: the earlier run's checkpoints train-epoch<N>.safetensors (and .optim) for N = ${epochRanges(left)}, past epoch ${e}, ` +
        `stay as they are: this run does not save those epochs`,
    );
  }
  const results = laterResults(config, files);
  const rewritten = results.filter((r) => r.rewritten).map((r) => r.name);
  const untouched = results.filter((r) => !r.rewritten).map((r) => r.name);
  if (rewritten.length) lines.push(`warning: the earlier run's ${rewritten.join(', ')} will be overwritten as this run writes its own`);
  if (untouched.length)
    lines.push(`note: the earlier run's ${untouched.join(', ')} stay as they are: this run does not write them (they are that run's results, not this one's)`);
  if (interrupted !== undefined) {
    lines.push(
      `warning: the earlier run was interrupted (its resume point: ${interrupted}): this run replaces ${join(dir, RESUME_FILE)} ` +
        `as its first stage starts, and that run can no longer be resumed`,
    );
  }
  return lines;
}

/** describeContinuation of the folder `dir` as it stands now: its run files (runFilesIn) and an interrupted run's resume point. */
export function continuationLines(config: Config, dir: string, earlier: EarlierEpochs): string[] {
  return describeContinuation(config, dir, earlier, runFilesIn(dir), interruptedAt(dir));
}

/**
 * describeContinuation of `config`'s continuation as its folder stands now (runFolder): what --dry-run says, without
 * changing anything; the run says the same when it starts. Nothing for a config that is not a continuation.
 * @throws as earlierEpochs (BAD_RUN_FILE), which checkRunFolder has checked at start already.
 */
export function continuationPlan(config: Config): string[] {
  if (config.base.epoch === 0) return [];
  const dir = runFolder(config);
  return continuationLines(config, dir, earlierEpochs(dir, config.base.epoch));
}

/**
 * Why a `base.epoch` continuation has nothing to do, or undefined when it has something: base.epoch has reached
 * train.max_epoch and `train` is its only stage, so a start would train nothing and only rewrite the folder's
 * cfg.json, summary.json, report and resume point over the earlier run's. runStages then logs this and returns
 * before writing anything, whoever started it; gdp-coord checks it first, to say it and exit 0 before any worker joins
 * (and in --dry-run). With a later stage (prune, finetune) there is work: the train stage is skipped and those run
 * from the weights.
 */
export function nothingToTrain(config: Config): string | undefined {
  const { epoch } = config.base;
  const max = config.train.max_epoch;
  if (epoch === 0 || epoch < max || config.stages.some((s) => s !== 'train')) return undefined;
  return (
    `nothing to do: base.epoch ${epoch} has reached train.max_epoch ${max} and the stages are only 'train'; ${runFolder(config)} is left as it is ` +
    `(to train on, raise train.max_epoch; to prune from ${initialWeightsPath(config)}, add the stages: --set 'stages=["train","prune","finetune"]')`
  );
}
