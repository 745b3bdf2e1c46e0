import { dirname, join } from 'node:path';
import { z } from 'zod';
import { epochRecordSchema, pruneEventSchema } from '../dashboard/run_records.js';
import { GdpError } from '../shared/errors.js';
import { RESUME_FORMAT, runModelFiles } from '../shared/io/run_file_kinds.js';
import { say, type Common } from './cli_common.js';

/**
 * What `gdp-model info` says of a resume point (written by coordinator/resume_point.ts): not a model file but a run's
 * state, described from its header alone: the run and the model it trains, where it stands, how to resume it, and the
 * run's model files, which the other commands take.
 */

// The fields read, loosely (a resume point of another gdp version describes itself as far as these go); the
// coordinator checks the whole point when it resumes one (readResumePoint).
const configFields = z.object({
  base: z.object({ task_name: z.string() }),
  model: z.object({ name: z.string(), num_class: z.number().int().positive() }),
  stages: z.array(z.string()),
});
const runFields = z.object({
  stage: z.number().int().nonnegative(),
  steps: z.number().int().nonnegative(),
  workers: z.number().int().positive(),
  files: z.object({ records: z.array(z.unknown()), logs: z.record(z.string(), z.array(z.unknown())) }),
});

export interface ResumePointInfo {
  file: string;
  format: typeof RESUME_FORMAT;
  /** base.task_name of the run. */
  task: string;
  arch: string;
  numClasses: number;
  stages: string[];
  /** Index into `stages` of the stage the run was in; stages.length once the run had finished. */
  stage: number;
  finished: boolean;
  /** Global steps done. */
  steps: number;
  workers: number;
  /** The last epoch log.json holds by then (train, Tock or finetune). */
  lastEpoch?: { stage: string; epoch: number; acc1: number };
  /** Ticks done (prune_log.json). */
  ticks: number;
  /** The run's model files beside it (runModelFiles), as paths. */
  modelFiles: string[];
}

/**
 * What the resume point `file` with header metadata `meta` (format RESUME_FORMAT) says of its run.
 * @throws GdpError BAD_RESUME naming the file when its `config` or `run` metadata is absent, not JSON or lacks a field read.
 */
export function resumePointInfo(file: string, meta: Record<string, string>): ResumePointInfo {
  const field = <T>(key: string, schema: z.ZodType<T>): T => {
    let value: unknown;
    try {
      value = JSON.parse(meta[key] ?? 'null');
    } catch (e) {
      throw new GdpError('BAD_RESUME', `${file}: metadata '${key}' is not valid JSON (${(e as Error).message})`);
    }
    const r = schema.safeParse(value);
    if (!r.success)
      throw new GdpError('BAD_RESUME', `${file}: metadata '${key}': ${r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
    return r.data;
  };
  const config = field('config', configFields);
  const run = field('run', runFields);
  const last = run.files.records.map((r) => epochRecordSchema.safeParse(r)).findLast((r) => r.success)?.data;
  const ticks = (run.files.logs['prune_log.json'] ?? []).filter((e) => pruneEventSchema.safeParse(e).data?.type === 'tick').length;
  const dir = dirname(file);
  return {
    file,
    format: RESUME_FORMAT,
    task: config.base.task_name,
    arch: config.model.name,
    numClasses: config.model.num_class,
    stages: config.stages,
    stage: run.stage,
    finished: run.stage >= config.stages.length,
    steps: run.steps,
    workers: run.workers,
    ...(last ? { lastEpoch: { stage: last.stage, epoch: last.epoch, acc1: last['acc@1'] } } : {}),
    ticks,
    modelFiles: runModelFiles(dir).map((f) => join(dir, f)),
  };
}

/** Prints `r`: one JSON object with --json, else lines saying what the file is and what to pass instead. */
export function describeResumePoint(o: Common, r: ResumePointInfo): void {
  if (o.json) {
    process.stdout.write(`${JSON.stringify(r)}\n`);
    return;
  }
  const dir = dirname(r.file);
  say(o, `${r.file}: a resume point (format '${r.format}') of run '${r.task}', not a model file`);
  say(o, `model: ${r.arch}, ${r.numClasses} classes`);
  const where = r.finished ? `finished (all ${r.stages.length} stages)` : `in stage ${r.stage + 1}/${r.stages.length} '${r.stages[r.stage]}'`;
  say(o, `stages ${r.stages.join(', ')}: ${where}, global step ${r.steps}, ${r.workers} worker${r.workers === 1 ? '' : 's'}`);
  if (r.lastEpoch) say(o, `last epoch logged: ${r.lastEpoch.stage} epoch ${r.lastEpoch.epoch}, test top-1 ${(100 * r.lastEpoch.acc1).toFixed(2)}%`);
  if (r.ticks) say(o, `Ticks done: ${r.ticks}`);
  if (r.finished) say(o, 'nothing to resume: the run has finished');
  else say(o, `resume the run: gdp-coord --workers ${r.workers} --local --resume ${dir} (or --in-process / --listen HOST:PORT; README, Resuming)`);
  say(
    o,
    r.modelFiles.length
      ? `the run's model files (predict, eval, melt, export, bench and info take these): ${r.modelFiles.join(', ')}`
      : 'the run has written no model file yet (predict, eval, melt, export, bench and info take those: train-epoch<N>.safetensors, gbn_<percent>, pruned and finetuned.safetensors)',
  );
}
