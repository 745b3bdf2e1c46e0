import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { epochRecordSchema } from '../dashboard/run_records.js';
import type { Config } from '../shared/config/schema.js';
import { GdpError } from '../shared/errors.js';
import { MOMENTUM_FORMAT } from '../shared/io/run_file_kinds.js';
import { serializeSafetensors } from '../shared/io/safetensors.js';
import { encodeUpdateLog } from '../shared/protocol/model_update.js';
import { writeFileAtomic } from './atomic_write.js';
import { modelDescription, writeCheckpoint } from './checkpoint.js';
import type { Cluster } from './cluster.js';

/** One line of logs/<task_name>/log.json. */
export interface EpochRecord {
  stage: string;
  epoch: number;
  lr: number;
  train_loss: number;
  train_acc: number;
  test_loss: number;
  'acc@1': number;
  'acc@5': number;
  img_s: number;
  /** Images per second of each worker's own compute (from its answer times). */
  worker_img_s: Record<string, number>;
}

/** Everything the run has logged so far: resume points carry it, so that a resumed run's logs continue it. */
export interface RunFilesState {
  records: EpochRecord[];
  /** Event lists by file name (prune_log.json, finetune_log.json). */
  logs: Record<string, unknown[]>;
}

/** What a `base.epoch` continuation keeps of the earlier run's log.json (earlierEpochs). */
export interface EarlierEpochs {
  /** Its records of train epochs 1..base.epoch, as stored, in file order. */
  kept: EpochRecord[];
  /** How many of its records were left out. */
  dropped: number;
  /** Whether the folder has a log.json at all. */
  found: boolean;
}

/**
 * The records a `base.epoch` continuation keeps of the earlier run in `dir`: its log.json's train epochs 1..`upTo`,
 * as stored (every field) and in file order. Later records (epochs past `upTo` of a longer or interrupted run, its
 * Tock and finetune epochs) are left out, as a resumed run drops the epochs after its resume point. Nothing to keep
 * without a log.json (`found` false).
 * @throws GdpError BAD_RUN_FILE naming the file: it cannot be read (a folder, no permission), is not JSON, or is not
 *   a list of epoch records (naming the entry and field at fault).
 */
export function earlierEpochs(dir: string, upTo: number): EarlierEpochs {
  const path = join(dir, 'log.json');
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kept: [], dropped: 0, found: false };
    throw new GdpError('BAD_RUN_FILE', `${path}: cannot read the earlier run's epochs (${(err as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new GdpError('BAD_RUN_FILE', `${path}: not JSON (${(err as Error).message})`);
  }
  const r = z.array(epochRecordSchema).safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new GdpError('BAD_RUN_FILE', `${path}: ${issue.path.join('.') || '(root)'}: ${issue.message} (not a list of epoch records)`);
  }
  // The raw entries, not the parsed ones: the schema reads only what the dashboard needs.
  const records = raw as EpochRecord[];
  const kept = records.filter((e) => e.stage === 'train' && e.epoch <= upTo);
  return { kept, dropped: records.length - kept.length, found: true };
}

/** logs/<task_name>/: cfg.json, log.json (one record per epoch) and checkpoints; every file written atomically. */
export class RunFiles {
  readonly dir: string;
  private records: EpochRecord[] = [];
  private logs = new Map<string, unknown[]>();

  /**
   * `dir` defaults to logs/<task_name> of the config (base.log_dir, base.task_name). `onEpoch` (the live dashboard)
   * gets every record appendEpoch writes.
   */
  constructor(
    config: Config,
    dir = join(config.base.log_dir, config.base.task_name),
    private readonly onEpoch?: (r: EpochRecord) => void,
  ) {
    this.dir = dir;
  }

  writeConfig(config: Config): void {
    writeFileAtomic(join(this.dir, 'cfg.json'), JSON.stringify(config, null, 2) + '\n');
  }

  /** Any other JSON file of the run (e.g. summary.json), atomically. */
  writeJson(name: string, value: unknown): void {
    writeFileAtomic(join(this.dir, name), JSON.stringify(value, null, 2) + '\n');
  }

  appendEpoch(r: EpochRecord): void {
    this.records.push(r);
    this.writeRecords();
    this.onEpoch?.(r);
  }

  /** Appends an entry to the JSON list `name` (e.g. prune_log.json) and rewrites that file. */
  appendLog(name: string, entry: unknown): void {
    const list = this.logs.get(name) ?? [];
    list.push(entry);
    this.logs.set(name, list);
    this.writeLog(name, list);
  }

  state(): RunFilesState {
    return structuredClone({ records: this.records, logs: Object.fromEntries(this.logs) });
  }

  /**
   * Starts a `base.epoch` continuation's log.json with the earlier run's train epochs 1..`upTo` in this folder
   * (earlierEpochs), before the records it appends. The file is rewritten with the first of those, so a continuation
   * that stops before its first epoch ends leaves it as it was.
   * @returns what earlierEpochs read (the records kept are copied into this log). @throws as earlierEpochs.
   */
  continueEpochs(upTo: number): EarlierEpochs {
    const earlier = earlierEpochs(this.dir, upTo);
    this.records = structuredClone(earlier.kept);
    return earlier;
  }

  /** Continues from a resume point's logs: the files are rewritten as they stood then. */
  restore(s: RunFilesState): void {
    const copy = structuredClone(s);
    this.records = copy.records;
    this.logs = new Map(Object.entries(copy.logs));
    // log.json always: one left by the interrupted run may hold epochs past the resume point.
    this.writeRecords();
    for (const [name, list] of this.logs) this.writeLog(name, list);
  }

  private writeRecords(): void {
    writeFileAtomic(join(this.dir, 'log.json'), JSON.stringify(this.records, null, 2) + '\n');
  }

  private writeLog(name: string, list: unknown[]): void {
    writeFileAtomic(join(this.dir, name), JSON.stringify(list, null, 1) + '\n');
  }

  /**
   * Saves the coordinator replica's state after averaging BN statistics over the workers: `<name>.safetensors`, a
   * gdp model file (`writeCheckpoint`: PyTorch's names and layouts, the paper's GBN form when gated, arch, num_class
   * and widths) with the config, the run state and the model-update log as metadata; and `<name>.optim.safetensors`
   * with the SGD momentum by gdp parameter name. Both written atomically.
   */
  async saveCheckpoint(cluster: Cluster, name: string, state: Record<string, unknown>): Promise<string> {
    const updates = encodeUpdateLog(cluster.updates);
    const extra = { format: 'gdp-checkpoint/1', config: JSON.stringify(cluster.config), state: JSON.stringify(state), updates };
    const path = await writeCheckpoint(cluster, cluster.model, join(this.dir, `${name}.safetensors`), modelDescription(cluster.config), extra);
    const momentum = new Map(cluster.replica.momentumState().map(([n, b]) => [n, { shape: [b.length], data: b }]));
    writeFileAtomic(join(this.dir, `${name}.optim.safetensors`), serializeSafetensors(momentum, { format: MOMENTUM_FORMAT }));
    return path;
  }
}
