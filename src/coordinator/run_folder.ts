import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { DASHBOARD_FILE, REPORT_FILE } from '../dashboard/report.js';
import type { Config } from '../shared/config/schema.js';
import { GdpError } from '../shared/errors.js';
import { momentumFileEpoch, runModelFile } from '../shared/io/run_file_kinds.js';
import { RESUME_FILE, readResumeSummary } from './resume_point.js';
import { earlierEpochs } from './run_files.js';

/** logs/<task_name>/ of a config (base.log_dir, base.task_name): the folder its run writes. */
export function runFolder(config: Config): string {
  return join(config.base.log_dir, config.base.task_name);
}

/** The run's logs (RunFiles, run.ts), report and dashboard record, and resume point. */
const NAMES: ReadonlySet<string> = new Set([
  'cfg.json',
  'log.json',
  'summary.json',
  'prune_log.json',
  'finetune_log.json',
  DASHBOARD_FILE,
  REPORT_FILE,
  RESUME_FILE,
]);
/** The temp file of writeFileAtomic (and the report's writer) that a killed run may leave: `<name>.tmp-<pid>`. */
const TEMP = /\.tmp-\d+$/;

/**
 * Whether `name` is a file a run writes: one of NAMES, a model file (run_file_kinds: `train-epoch<N>`, the save
 * points `gbn_<pct>`, `pruned`, `finetuned`), an epoch checkpoint's `.optim` momentum, or the temp file of any of
 * these. Anything else in the folder is not the run's and is left alone.
 */
function isRunFile(name: string): boolean {
  const base = name.replace(TEMP, '');
  return NAMES.has(base) || runModelFile(base) !== undefined || momentumFileEpoch(base) !== undefined;
}

/** The files of a run in `dir`, sorted; none for a missing, empty or unrelated folder. */
export function runFilesIn(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.filter(isRunFile).sort();
}

/**
 * What the run that left `dir` did, by its resume point (read from its header alone); for an interrupted one, `at`:
 * where its resume point stands (`stage 'prune', step 7`), which --resume continues.
 */
function earlierRun(dir: string): { what: string; at?: string } {
  try {
    const r = readResumeSummary(dir);
    if (!r) return { what: 'the files of a run that stopped before its first resume point' };
    if (r.run.stage >= r.stages.length) return { what: `a finished run (stages ${r.stages.join(', ')})` };
    const at = `stage '${r.stages[r.run.stage]}', step ${r.run.steps}`;
    return { what: `an interrupted run (its resume point: ${at})`, at };
  } catch (err) {
    return { what: `the files of a run whose resume point cannot be read (${(err as Error).message})` };
  }
}

/**
 * Where the interrupted run in `dir` stands by its resume point (`stage 'prune', step 7`); undefined when there is
 * nothing --resume could continue: no resume point, a finished run's (a run keeps its last one, at its end), or one
 * that cannot be read.
 */
export function interruptedAt(dir: string): string | undefined {
  return earlierRun(dir).at;
}

function listed(files: readonly string[]): string {
  const shown = files.slice(0, 8).join(', ');
  return files.length > 8 ? `${shown} and ${files.length - 8} more` : shown;
}

export interface RunFolderOptions {
  /** `--overwrite`: the earlier run's files are to be deleted (clearRunFolder) before the new run writes. */
  overwrite?: boolean;
  /**
   * `--discard-resume`: a `base.epoch` continuation may go on in a folder whose earlier run was interrupted, replacing
   * its resume point as the continuation's first stage starts.
   */
  discardResume?: boolean;
  /** Where to say, with --overwrite, what will be deleted. */
  note?: (line: string) => void;
}

/**
 * Throws unless a fresh run may write into its folder (runFolder): a run writes cfg.json, log.json, summary.json,
 * its checkpoints and resume point there, so starting in a folder that holds an earlier run's files would replace
 * some of them and leave the others, a folder mixing two runs, and lose an interrupted run's resume point. The
 * message names the folder, what is there (a finished run, an interrupted one with its resume point) and the ways
 * on: --resume, another base.task_name, --overwrite. Not for a resumed run (the caller skips it). A continuation
 * (`base.epoch` > 0) numbers its epochs on in the folder, as the paper's main.py does, and passes when the earlier
 * run's log.json, whose epochs it keeps (earlierEpochs), reads: a bad one stops it here, before any work is done;
 * and when the earlier run finished (or left no resume point it could go on from): it would replace an interrupted
 * run's resume point as its first stage starts, so it needs `discardResume` (--discard-resume) for one.
 * @throws GdpError BAD_CONFIG naming the folder and its run's files, or, for a continuation, an interrupted run's
 *   resume point with the ways on (--resume, --discard-resume); BAD_FLAG for --overwrite with `base.epoch` > 0, and
 *   for --discard-resume without; BAD_RUN_FILE for a continuation's log.json that cannot be read or is malformed.
 */
export function checkRunFolder(config: Config, o: RunFolderOptions = {}): void {
  const dir = runFolder(config);
  const files = runFilesIn(dir);
  const e = config.base.epoch;
  if (e > 0) {
    if (o.overwrite && files.length) {
      throw new GdpError('BAD_FLAG', `--overwrite: base.epoch ${e} continues the run in ${dir}, whose files --overwrite would delete`);
    }
    const at = interruptedAt(dir);
    if (at !== undefined && !o.discardResume) {
      throw new GdpError(
        'BAD_CONFIG',
        `${dir} holds an interrupted run (its resume point: ${at}): a base.epoch ${e} continuation there would replace its resume ` +
          `point ${join(dir, RESUME_FILE)} as its first stage starts, and that run could no longer be resumed: ` +
          `finish it with gdp-coord --resume ${dir} (then start this continuation again); or give its resume point up with --discard-resume`,
      );
    }
    earlierEpochs(dir, e);
    return;
  }
  if (o.discardResume) {
    throw new GdpError(
      'BAD_FLAG',
      `--discard-resume is for a base.epoch continuation (base.epoch is 0): a fresh run into ${dir} replaces an earlier run whole with --overwrite`,
    );
  }
  if (!files.length) return;
  if (o.overwrite) {
    o.note?.(`--overwrite: the ${files.length} file(s) of the earlier run in ${dir} will be deleted once the workers have joined (a dry run deletes nothing)`);
    return;
  }
  const { what, at } = earlierRun(dir);
  const ways = [
    ...(at !== undefined ? [`continue it with --resume ${dir}`] : []),
    'keep it and write beside it with another base.task_name (--set base.task_name=NAME)',
    'replace it with --overwrite (deletes its files first)',
  ];
  throw new GdpError(
    'BAD_CONFIG',
    `${dir} holds ${what}: ${listed(files)}. A new run there would replace some of its results and leave the rest, ` + `mixing two runs: ${ways.join('; or ')}`,
  );
}

/**
 * Deletes the files of an earlier run (runFilesIn) from `dir`, so that a run started with --overwrite leaves only
 * its own files; other files stay. Returns the names deleted.
 */
export function clearRunFolder(dir: string): string[] {
  const files = runFilesIn(dir);
  for (const f of files) rmSync(join(dir, f), { force: true });
  return files;
}
