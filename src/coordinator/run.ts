import { join, resolve } from 'node:path';
import type { Config } from '../shared/config/schema.js';
import { GdpError } from '../shared/errors.js';
import { stateChecksum } from '../shared/train/model_state.js';
import type { Coordinator } from './cluster.js';
import { continuationLines, nothingToTrain } from './continuation.js';
import { writeResumePoint, type RunPosition } from './resume_point.js';
import type { EpochRecord, RunFiles } from './run_files.js';
import type { RunObserver } from './run_observer.js';
import { WorkerReportedError } from './worker_link.js';
import { formatSummary, snapshot, type ModelSnapshot } from './run_summary.js';
import { getStage, positionProblem, type ResumeWhen } from './stages.js';

export interface RunOptions {
  coordinator: Coordinator;
  config: Config;
  trainSize: number;
  testSize: number;
  files: RunFiles;
  log: (line: string) => void;
  /** Workers the run was started with (recorded in resume points). */
  workers: number;
  /** Continue from this position of a resume point (the coordinator already restored to it). */
  resume?: RunPosition;
  /** Told of the stages' steps, progress and events and of the final table (the live dashboard). */
  observer?: RunObserver;
}

/**
 * Runs `config.stages` in order, then measures the final table. Resume points are written at the start of every
 * stage, at the boundaries each stage reports, every `base.resume_every_steps` global steps, and at the end; an
 * uninterrupted run writes them at the same points as a resumed one, so both average BN statistics alike. A
 * `base.epoch` continuation with nothing to do (nothingToTrain) logs why and returns no rows before writing
 * anything: its folder stays as the earlier run left it (gdp-coord has said so earlier, before any worker joined).
 */
export async function runStages(o: RunOptions): Promise<ModelSnapshot[]> {
  const { coordinator: cluster, config, files, log } = o;
  const every = config.base.resume_every_steps;
  const summary: ModelSnapshot[] = [...(o.resume?.summary ?? [])];
  let stage = o.resume?.stage ?? 0;
  let position = o.resume?.position;
  const idle = o.resume ? undefined : nothingToTrain(config);
  if (idle) {
    // Before anything is written: the folder stays the earlier run's.
    log(`gdp-coord: ${idle}`);
    return [];
  }
  if (o.resume) files.restore({ records: o.resume.files.records as unknown as EpochRecord[], logs: o.resume.files.logs });
  else if (config.base.epoch > 0) {
    // A continuation numbers its epochs on in the earlier run's folder: log.json keeps that run's epochs before them.
    const earlier = files.continueEpochs(config.base.epoch);
    for (const line of continuationLines(config, files.dir, earlier)) log(`gdp-coord: ${line}`);
  }

  const write = async (pos: unknown, syncBn = true) => {
    const run: RunPosition = {
      stage,
      position: pos as RunPosition['position'],
      steps: cluster.steps,
      workers: o.workers,
      files: files.state() as unknown as RunPosition['files'],
      summary,
    };
    const path = await writeResumePoint(cluster, files.dir, run, syncBn);
    const where = stage < config.stages.length ? `stage '${config.stages[stage]}'${pos === undefined ? ' (start)' : ''}` : 'run finished';
    log(`resume point: ${where}, step ${cluster.steps}: ${path}`);
  };
  // The last position reported and the state it goes with: a run stopped by DIVERGED, BATCH_TOO_LARGE or a worker's
  // error that ends the run (BAD_DATA...) writes it,
  // so that the point on disk is its last good step. Taken at every report (positions are small): by the time a
  // step fails, the stage has moved on (its sampler drew the failed batch).
  let last: { position: unknown; steps: number; updates: number } | undefined;
  const mark = (position: unknown) => (last = { position, steps: cluster.steps, updates: cluster.updates.length });
  const resumePoint = async (when: ResumeWhen, pos: () => unknown) => {
    const position = pos();
    mark(position);
    if (when === 'step' && (every === 0 || cluster.steps % every !== 0)) return;
    await write(position);
  };

  for (; stage < config.stages.length; stage++) {
    const name = config.stages[stage];
    mark(position);
    try {
      if (position === undefined) {
        await write(undefined);
        // The baseline row of the final table: the model as pruning finds it.
        if (name === 'prune') summary.push(await snapshot('baseline', cluster, config, o.testSize));
      }
      log(`gdp-coord: stage '${name}' on ${cluster.workerIds.length} worker(s)${position === undefined ? '' : ', resumed'}`);
      await getStage(name)({ cluster, config, trainSize: o.trainSize, testSize: o.testSize, files, log, resume: position, resumePoint, observer: o.observer });
    } catch (err) {
      await writeLastGood(err, last, cluster, write, log);
      throw err;
    }
    position = undefined;
  }
  summary.push(await snapshot(summary.length ? 'pruned' : 'final', cluster, config, o.testSize));
  log(`\n${formatSummary(summary)}\n`);
  // The last snapshot synchronised BN statistics (every worker's full state checked); parameters once more.
  await cluster.verifyChecksums();
  log(`gdp-coord: replicas identical on ${cluster.workerIds.join(', ')}: state checksum ${stateChecksum(cluster.model)}`);
  files.writeJson('summary.json', summary);
  o.observer?.final(summary);
  await write(undefined);
  return summary;
}

/**
 * Errors that stop a run whose state is still whole (nothing of the failed operation was applied): DIVERGED,
 * BATCH_TOO_LARGE, and a worker's own error that ends the run (an undecodable image): operations apply nothing
 * before every answer checked out.
 */
const STOPS_WHOLE: ReadonlySet<string> = new Set(['DIVERGED', 'BATCH_TOO_LARGE']);
const stopsWhole = (err: unknown): err is GdpError =>
  (err instanceof WorkerReportedError && err.endsRun) || (err instanceof GdpError && STOPS_WHOLE.has(err.code));

/**
 * When `err` is such a stop and nothing changed since the stage last reported its position (no step, no model
 * update), writes that position as the resume point: the last good step. Otherwise the point on disk stays as it is
 * (written at an earlier report, also good). A failure to write is logged; the caller throws `err` either way.
 */
async function writeLastGood(
  err: unknown,
  last: { position: unknown; steps: number; updates: number } | undefined,
  cluster: Coordinator,
  write: (pos: unknown, syncBn: boolean) => Promise<void>,
  log: (line: string) => void,
): Promise<void> {
  if (!stopsWhole(err) || !last) return;
  if (last.steps !== cluster.steps || last.updates !== cluster.updates.length) {
    log(`gdp-coord: ${err.code}: the model changed since the last reported position; the resume point on disk is the last one written`);
    return;
  }
  try {
    // After a worker's error the workers no longer answer: the coordinator's own BN statistics go in.
    await write(last.position, !(err instanceof WorkerReportedError));
  } catch (e) {
    log(`gdp-coord: could not write the resume point after ${err.code}: ${(e as Error).message}`);
  }
}

/** Throws unless the resume point's position can continue `config`: a stage still to run, a valid stage position. */
export function checkResumable(config: Config, run: RunPosition, file: string): void {
  if (run.stage >= config.stages.length)
    throw new GdpError('RUN_FINISHED', `${file}: the run already finished (all ${config.stages.length} stages); nothing to resume`);
  if (run.position === undefined) return;
  const name = config.stages[run.stage];
  const problem = positionProblem(name, run.position);
  if (problem) throw new GdpError('BAD_RESUME', `${file}: its position in stage '${name}' is invalid: ${problem}`);
}

/** Where a resumed run writes: `dir`, spelled as its config spells it when that is the same folder (paths in its logs stay the same). */
export function runDir(config: Config, dir: string): string {
  const own = join(config.base.log_dir, config.base.task_name);
  return resolve(own) === resolve(dir) ? own : dir;
}
