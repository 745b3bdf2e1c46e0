import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { applyOverrides, parseConfig } from '../shared/config/load.js';
import type { Config } from '../shared/config/schema.js';
import { GdpError } from '../shared/errors.js';
import { parseSafetensors, readSafetensorsMetadata, serializeSafetensors, type HostTensor } from '../shared/io/safetensors.js';
import { decodeUpdateLog, encodeUpdateLog, type ModelUpdate } from '../shared/protocol/model_update.js';
import { writeFileAtomic } from './atomic_write.js';
import { normalisationMetadata } from '../shared/io/model_file.js';
import { RESUME_FORMAT } from '../shared/io/run_file_kinds.js';
import { modelDescription } from './checkpoint.js';
import type { Coordinator } from './cluster.js';

/**
 * A resume point: one file, logs/<task_name>/resume.safetensors, replaced atomically each time (the previous one
 * stays whole until the new one is complete). It holds every slot and momentum buffer under gdp's own names (exact
 * float32 values), and as metadata the config, the model-update log (gates, masks, melt) and the run position: the
 * stage, where the stage stands (its own JSON), the step count and the logs so far.
 */
export const RESUME_FILE = 'resume.safetensors';
const SLOT = 'slot/';
const MOMENTUM = 'momentum/';

const snapshotSchema = z.object({
  label: z.string(),
  macs: z.number(),
  params: z.number(),
  acc1: z.number(),
  acc5: z.number(),
  msPerImageB1: z.number(),
  msPerImageB64: z.number(),
});

const jsonSchema = z.json();

export const runPositionSchema = z.object({
  /** Index into config.stages of the stage running; config.stages.length once the run has finished. */
  stage: z.number().int().nonnegative(),
  /** Where that stage stands, in the stage's own terms; absent: it starts from its beginning. */
  position: jsonSchema.optional(),
  /** Coordinator.steps. */
  steps: z.number().int().nonnegative(),
  /** Workers of the run when it was written (another count gives other, equally valid, numbers). */
  workers: z.number().int().positive(),
  files: z.object({
    records: z.array(z.record(z.string(), jsonSchema)),
    logs: z.record(z.string(), z.array(jsonSchema)),
  }),
  /** Rows of the final table measured so far (the baseline, once pruning has started). */
  summary: z.array(snapshotSchema),
});
export type RunPosition = z.infer<typeof runPositionSchema>;

export interface ResumePoint {
  file: string;
  config: Config;
  run: RunPosition;
  updates: ModelUpdate[];
  slots: Map<string, Float32Array>;
  momentum: [string, Float32Array][];
}

/**
 * Writes the resume point of `cluster` at `run`. BN running statistics are averaged over the workers first (as for
 * every checkpoint), so that a resumed run's workers start from what this run's workers hold afterwards; with
 * `syncBn` false (the workers can no longer answer: one reported an error that ends the run), the coordinator's own,
 * as last synchronised, which only evaluation reads (training normalises by batch statistics).
 */
export async function writeResumePoint(cluster: Coordinator, dir: string, run: RunPosition, syncBn = true): Promise<string> {
  if (syncBn) await cluster.syncBatchNormStats();
  const tensors = new Map<string, HostTensor>();
  for (const [name, s] of cluster.model.namedSlots()) tensors.set(SLOT + name, { shape: [...s.value.shape], data: s.value.dataSync() as Float32Array });
  for (const [name, b] of cluster.replica.momentumState()) tensors.set(MOMENTUM + name, { shape: [b.length], data: b });
  const metadata: Record<string, string> = {
    format: RESUME_FORMAT,
    config: JSON.stringify(cluster.config),
    updates: encodeUpdateLog(cluster.updates),
    run: JSON.stringify(run),
  };
  // The input normalisation as model files record it (a folder run's is also in the config).
  const norm = modelDescription(cluster.config).norm;
  if (norm) Object.assign(metadata, normalisationMetadata(norm));
  const path = join(dir, RESUME_FILE);
  writeFileAtomic(path, serializeSafetensors(tensors, metadata));
  return path;
}

/** Reads and checks the resume point in `dir` (logs/<task_name> of the run); every error names the file. */
export function readResumePoint(dir: string): ResumePoint {
  const file = join(dir, RESUME_FILE);
  const bad = (msg: string) => new GdpError('BAD_RESUME', `${file}: ${msg}`);
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new GdpError(
      'BAD_RESUME',
      code === 'ENOENT'
        ? `no resume point: ${file} does not exist (is ${dir} the logs/<task_name> folder of a run?)`
        : `cannot read ${file}: ${(err as Error).message}`,
    );
  }
  let parsed;
  try {
    parsed = parseSafetensors(bytes, file);
  } catch (err) {
    // Its message names the file and what is wrong (e.g. truncated).
    throw new GdpError('BAD_RESUME', (err as Error).message);
  }
  const { tensors, metadata } = parsed;
  if (metadata.format !== RESUME_FORMAT)
    throw bad(`format '${metadata.format ?? '(none)'}', expected '${RESUME_FORMAT}' (written by another gdp version, or not a resume point)`);
  const json = (key: string): unknown => {
    if (metadata[key] === undefined) throw bad(`metadata lacks '${key}'`);
    try {
      return JSON.parse(metadata[key]);
    } catch (err) {
      throw bad(`metadata '${key}' is not valid JSON (${(err as Error).message})`);
    }
  };
  let config: Config;
  try {
    config = parseConfig(json('config'), `config of ${file}`);
  } catch (err) {
    throw new GdpError('BAD_RESUME', (err as Error).message);
  }
  const r = runPositionSchema.safeParse(json('run'));
  if (!r.success) throw bad(`invalid run position: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  if (r.data.stage > config.stages.length) throw bad(`run position names stage ${r.data.stage}, the config has ${config.stages.length}`);
  if (metadata.updates === undefined) throw bad(`metadata lacks 'updates'`);
  let updates: ModelUpdate[];
  try {
    updates = decodeUpdateLog(metadata.updates, file);
  } catch (err) {
    throw new GdpError('BAD_RESUME', (err as Error).message);
  }
  const slots = new Map<string, Float32Array>();
  const momentum: [string, Float32Array][] = [];
  for (const [name, t] of tensors) {
    if (name.startsWith(SLOT)) slots.set(name.slice(SLOT.length), t.data);
    else if (name.startsWith(MOMENTUM)) momentum.push([name.slice(MOMENTUM.length), t.data]);
    else throw bad(`unexpected tensor '${name}'`);
  }
  return { file, config, run: r.data, updates, slots, momentum };
}

/** Where a resume point's run stands, read from its header alone: the stages of its config and its position. */
export interface ResumePointSummary {
  file: string;
  stages: string[];
  run: RunPosition;
}

/**
 * The run position and stages of the resume point in `dir`, reading only the file's header (a large model's resume
 * point is not read whole to say whether its run finished); undefined when there is none. Not a check that the
 * point can resume: readResumePoint does that.
 * @throws GdpError BAD_RESUME naming the file when it cannot be read or its header is not a resume point's.
 */
export function readResumeSummary(dir: string): ResumePointSummary | undefined {
  const file = join(dir, RESUME_FILE);
  const bad = (msg: string) => new GdpError('BAD_RESUME', `${file}: ${msg}`);
  let metadata: Record<string, string>;
  try {
    metadata = readSafetensorsMetadata(file);
  } catch (err) {
    // Its message names the file and the rule broken.
    if (err instanceof GdpError) throw new GdpError('BAD_RESUME', err.message);
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw bad(`cannot read it: ${(err as Error).message}`);
  }
  if (metadata.format !== RESUME_FORMAT) throw bad(`format '${metadata.format ?? '(none)'}', expected '${RESUME_FORMAT}'`);
  let stages: unknown;
  let run;
  try {
    stages = (JSON.parse(metadata.config ?? '{}') as { stages?: unknown }).stages;
    run = runPositionSchema.safeParse(JSON.parse(metadata.run ?? 'null'));
  } catch (err) {
    throw bad(`metadata is not valid JSON (${(err as Error).message})`);
  }
  if (!Array.isArray(stages) || !stages.every((s) => typeof s === 'string')) throw bad('its config names no stages');
  if (!run.success) throw bad('invalid run position');
  return { file, stages, run: run.data };
}

/** Puts the coordinator where the resume point was written (before any worker joins); errors name the file. */
export function restoreCoordinator(c: Coordinator, p: ResumePoint): void {
  try {
    c.restore({ updates: p.updates, slots: p.slots, momentum: p.momentum, steps: p.run.steps });
  } catch (err) {
    if (err instanceof GdpError) throw new GdpError('BAD_RESUME', `${p.file}: does not fit the model its config builds: ${err.message}`);
    throw err;
  }
}

/** Config keys a resumed run may still change with --set: they alter neither the numbers nor the resume points. */
export const RESUME_SAFE_KEYS: readonly string[] = ['data.dir', 'data.num_workers', 'dist.heartbeat_ms', 'dist.step_timeout_ms', 'dist.checksum_every'];

/** The resume point's config with the allowed overrides; any other key is refused (BAD_FLAG) rather than ignored. */
export function resumedConfig(p: ResumePoint, sets: readonly string[]): Config {
  for (const s of sets) {
    const key = s.slice(0, Math.max(0, s.indexOf('=')));
    if (!RESUME_SAFE_KEYS.includes(key)) {
      throw new GdpError(
        'BAD_FLAG',
        `--set ${s}: a resumed run keeps the config saved in ${p.file}, so that it ends as the uninterrupted run would; ` +
          `only ${RESUME_SAFE_KEYS.join(', ')} may change (start a new run to change anything else)`,
      );
    }
  }
  return parseConfig(applyOverrides(p.config as unknown as Record<string, unknown>, sets), `config of ${p.file}`, sets);
}
