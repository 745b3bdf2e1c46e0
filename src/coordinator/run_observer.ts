import type { ResumedLogs, RunFeed } from '../dashboard/feed.js';
import type { StageName } from '../dashboard/events.js';
import { stateDictWidths, type LayerWidth } from '../dashboard/widths.js';
import { exportTorchState } from '../shared/io/torch_state.js';
import type { Module } from '../shared/nn/module.js';
import type { StepResult } from './collectives.js';
import type { PruneEvent } from './prune_events.js';
import type { EpochRecord } from './run_files.js';
import type { ModelSnapshot } from './run_summary.js';

export type { StageName };

/**
 * What the coordinator tells an onlooker (the live dashboard) as the run goes: one object handed down through the
 * cluster options, the stage context and the run files, so that no stage knows whether anyone watches. Every
 * method returns at once and never throws. A run without a dashboard (tests, `--no-dashboard`) passes none.
 */
export interface RunObserver {
  /** Membership: a worker's hello was accepted (`steps`: global steps done before it takes part). */
  workerJoined(w: { workerId: string; host: string; backend: string; gpu: number | null }, steps: number): void;
  /** Membership: an active worker was dropped; `step` is the first global step computed without it. */
  workerLost(id: string, step: number, reason: string): void;
  /** After each committed cluster.step: its result, the rate used and the step's wall time in ms. */
  step(stage: StageName, r: Pick<StepResult, 'stats' | 'perWorker'>, lr: number, wallMs: number): void;
  /** Progress inside a stage: `done` of `total` steps of the part called `label` ("train epoch 1/4", "Tick 2"). */
  progress(stage: StageName, label: string, done: number, total: number): void;
  /** Every log.json record, as RunFiles.appendEpoch writes it. */
  epoch(r: EpochRecord): void;
  /** Every pruning event (prune_log.json, finetune_log.json). */
  prune(e: PruneEvent): void;
  /** The final table, as summary.json holds it. */
  final(rows: readonly ModelSnapshot[]): void;
}

/**
 * The coordinator's RunObserver for a dashboard's RunFeed: stamps steps with the coordinator's global step count
 * (`steps()`, read after the step) and sends layer widths from `model()`: the baseline at `start`, the alive channels
 * after each Tick and the widths after the melt (the pruning events that change them).
 */
export class FeedObserver implements RunObserver {
  private baseline?: LayerWidth[];

  constructor(
    private readonly feed: RunFeed,
    private readonly steps: () => number,
    private readonly model: () => Module,
  ) {}

  /** The run's start (before its first stage): its name, stages and workers, and the baseline widths; `resumed` see RunFeed.run. */
  start(task: string, stages: readonly string[], workers: number, resumed?: ResumedLogs): void {
    this.feed.run(task, stages, workers, resumed);
    this.baseline = this.widths();
    this.feed.widths(this.baseline, this.baseline, 'baseline');
  }

  workerJoined(w: { workerId: string; host: string; backend: string; gpu: number | null }, steps: number): void {
    this.feed.workerJoined(w, steps);
  }
  workerLost(id: string, step: number, reason: string): void {
    this.feed.workerLost(id, step, reason);
  }
  step(stage: StageName, r: Pick<StepResult, 'stats' | 'perWorker'>, lr: number, wallMs: number): void {
    this.feed.step(stage, this.steps(), r, lr, wallMs);
  }
  progress(stage: StageName, label: string, done: number, total: number): void {
    this.feed.progress(stage, label, done, total);
  }
  epoch(r: EpochRecord): void {
    this.feed.epoch(r);
  }
  prune(e: PruneEvent): void {
    this.feed.prune(e);
    if (e.type === 'melt') this.feed.progress('melt', 'melt', 1, 1);
    if (this.baseline && (e.type === 'tick' || e.type === 'melt')) this.feed.widths(this.baseline, this.widths(), e.type === 'tick' ? 'masked' : 'melted');
  }
  final(rows: readonly ModelSnapshot[]): void {
    this.feed.final(rows);
  }

  /** Conv and linear output widths of the model now (a masked network's alive channels). */
  private widths(): LayerWidth[] {
    try {
      return stateDictWidths(exportTorchState(this.model()));
    } catch {
      // Never stop a run for the dashboard: a model the exporter cannot name shows no widths.
      return [];
    }
  }
}
