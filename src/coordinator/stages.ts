import type { z } from 'zod';
import type { Config } from '../shared/config/schema.js';
import { GdpError } from '../shared/errors.js';
import type { Cluster } from './cluster.js';
import type { RunFiles } from './run_files.js';
import type { RunObserver } from './run_observer.js';

/** A global step ends ('step': a resume point is written if one is due) or the stage reaches a boundary. */
export type ResumeWhen = 'step' | 'boundary';

/** What a stage gets: the cluster to drive, the config, sizes of the data, and where to write. */
export interface StageContext {
  cluster: Cluster;
  config: Config;
  trainSize: number;
  testSize: number;
  files: RunFiles;
  log: (line: string) => void;
  /** Where to continue from: a position this stage gave `resumePoint` (validated by its schema); absent: start. */
  resume?: unknown;
  /**
   * Called by the stage after every global step and at its boundaries (epochs, Ticks, Tocks), with its position:
   * everything its loop needs to continue from here. `position` is called at once (the run keeps the last one, to
   * write it should the next step stop the run with DIVERGED); a resume point is written when one is due. Absent
   * when the stage runs outside a run (tests).
   */
  resumePoint?: (when: ResumeWhen, position: () => unknown) => Promise<void>;
  /** Told of every step, the progress and every pruning event (the live dashboard); absent: nobody watches. */
  observer?: RunObserver;
}

export type Stage = (ctx: StageContext) => Promise<void>;

interface StageEntry {
  run: Stage;
  /** The stage's position in resume points. */
  position: z.ZodType;
}

const stages = new Map<string, StageEntry>();

/** Registers the runner of a `stages` entry ('train' here; the pruning engine registers 'prune' and 'finetune'). */
export function registerStage(name: string, run: Stage, position: z.ZodType): void {
  stages.set(name, { run, position });
}

/** The registered stage `name`; a config names only stages of the schema, each registered by all_stages.ts. */
function entry(name: string): StageEntry {
  const s = stages.get(name);
  if (!s) throw new GdpError('INTERNAL', `stage '${name}' has no registered runner (registered: ${[...stages.keys()].join(', ') || 'none'})`);
  return s;
}

export function getStage(name: string): Stage {
  return entry(name).run;
}

/** Checks a position read from a resume point against the stage's schema; returns the message of what is wrong. */
export function positionProblem(name: string, position: unknown): string | undefined {
  const r = entry(name).position.safeParse(position);
  return r.success ? undefined : r.error.issues.map((i) => `${i.path.join('.') || '(position)'}: ${i.message}`).join('; ');
}

/**
 * Checked at start-up (and by --dry-run), so that a stage without a runner fails now rather than after hours of
 * training. The config schema admits only gdp's stages (another name is BAD_CONFIG) and all_stages.ts registers each,
 * so a missing one is a bug of the build.
 * @throws GdpError INTERNAL naming the stages without a runner.
 */
export function assertStagesAvailable(names: readonly string[]): void {
  const missing = names.filter((n) => !stages.has(n));
  if (missing.length) {
    throw new GdpError(
      'INTERNAL',
      `config.stages names ${missing.map((m) => `'${m}'`).join(', ')}, which have no registered runner (registered: ${[...stages.keys()].join(', ')})`,
    );
  }
}
