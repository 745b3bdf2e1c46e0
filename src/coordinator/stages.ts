import type { Config } from '../shared/config/schema.js';
import { GdpError } from '../shared/errors.js';
import type { Cluster } from './cluster.js';
import type { RunFiles } from './run_files.js';

/** What a stage gets: the cluster to drive, the config, sizes of the data, and where to write. */
export interface StageContext {
  cluster: Cluster;
  config: Config;
  trainSize: number;
  testSize: number;
  files: RunFiles;
  log: (line: string) => void;
}

export type Stage = (ctx: StageContext) => Promise<void>;

const stages = new Map<string, Stage>();

/** Registers the runner of a `stages` entry ('train' here; the pruning engine registers 'prune' and 'finetune'). */
export function registerStage(name: string, fn: Stage): void {
  stages.set(name, fn);
}

export function getStage(name: string): Stage {
  const s = stages.get(name);
  if (!s) throw new GdpError('UNKNOWN_STAGE', `stage '${name}' is not available in this build (available: ${[...stages.keys()].join(', ') || 'none'})`);
  return s;
}

/** Checked at start-up (and by --dry-run), so that a missing stage fails now rather than after hours of training. */
export function assertStagesAvailable(names: readonly string[]): void {
  const missing = names.filter((n) => !stages.has(n));
  if (missing.length) {
    throw new GdpError(
      'UNKNOWN_STAGE',
      `config.stages names ${missing.map((m) => `'${m}'`).join(', ')}, not available in this build (available: ${[...stages.keys()].join(', ')}); ` +
        `drop them with --set 'stages=["train"]'`,
    );
  }
}
