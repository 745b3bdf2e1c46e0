import type { DashboardEvent, FinalRow, StageName } from './events.js';
import { epochEvent, logEvents, pruneRecordEvent, type EpochRecordLike, type PruneRecordLike } from './run_records.js';
import { widthsEvent, type LayerWidth } from './widths.js';

export type { EpochRecordLike, PruneRecordLike };

/*
 * The coordinator's side of the dashboard: one call per thing that happens, with the values the coordinator already
 * has (its types are restated structurally here, so src/dashboard imports nothing from src/coordinator).
 */

/** What cluster.step returns that the dashboard reads: the group's sums and each worker's share. */
export interface StepResultLike {
  stats: { lossSum: number; correct1: number; count: number };
  perWorker: readonly { id: string; count: number; ms: number }[];
}

/** What a resumed run has logged before `step`, as its resume point holds it (entries of any shape: checked here). */
export interface ResumedLogs {
  step: number;
  records: readonly unknown[];
  prune: readonly unknown[];
}

/** Where events go: a Dashboard (it validates), or anything that records them. */
export interface EventSink {
  publish(e: DashboardEvent): void;
}

export interface RunFeedOptions {
  /** The clock stamped on events (ms since the epoch); default Date.now. */
  now?: () => number;
  /** Where a dropped event is reported (default stderr). */
  log?: (line: string) => void;
}

/**
 * Turns the coordinator's values into dashboard events, stamped with `now()`. It never throws: the dashboard must
 * not stop a run. An event the sink refuses (GdpError BAD_MESSAGE, e.g. a NaN loss of a diverging run) is dropped,
 * and the first refusal of each event type is logged.
 */
export class RunFeed {
  private readonly now: () => number;
  private readonly log: (line: string) => void;
  private readonly refused = new Set<string>();

  constructor(
    private readonly sink: EventSink,
    opts: RunFeedOptions = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.log = opts.log ?? ((line) => process.stderr.write(`${line}\n`));
  }

  private send(e: DashboardEvent): void {
    try {
      this.sink.publish(e);
    } catch (err) {
      if (this.refused.has(e.type)) return;
      this.refused.add(e.type);
      this.log(`dashboard: dropped a '${e.type}' event (later ones of this type silently): ${(err as Error).message}`);
    }
  }

  /**
   * At the start of the run (main.ts, before runStages). A resumed run passes where it continues (`step`) and the
   * logs its resume point holds (log.json records, prune_log.json entries): the page shows those epochs, Ticks and
   * Tocks at once, and says that its per-step history starts at `step`.
   */
  run(task: string, stages: readonly string[], workers: number, resumed?: ResumedLogs): void {
    const t = this.now();
    this.send({ type: 'run', t, task, stages: [...stages], workers, resumedStep: resumed?.step });
    if (resumed) for (const e of logEvents(resumed.records, resumed.prune, t)) this.send(e);
  }

  /** cluster.ts, where it logs "worker X joined": the hello's fields and the step count then. */
  workerJoined(w: { workerId: string; host: string; backend: string; gpu: number | null }, steps: number): void {
    this.send({ type: 'worker_joined', t: this.now(), id: w.workerId, host: w.host, backend: w.backend, gpu: w.gpu, step: steps });
  }

  /** cluster.ts, where it logs "worker X lost at step K (reason)". */
  workerLost(id: string, step: number, reason: string): void {
    this.send({ type: 'worker_lost', t: this.now(), id, step, reason });
  }

  /**
   * After each committed step (train_stage.ts and pruner.ts, beside StepProgress.update): the step's mean loss and
   * top-1, and per worker its compute rate and the share of the step's wall time `wallMs` it spent computing.
   * `lastHeard` maps worker ids to when a frame last came from them (default: now, they just answered).
   */
  step(stage: StageName, globalStep: number, r: StepResultLike, lr: number, wallMs: number, lastHeard?: ReadonlyMap<string, number>): void {
    const t = this.now();
    const n = Math.max(r.stats.count, 1);
    const wall = Math.max(wallMs, 1e-3);
    this.send({ type: 'step', t, step: globalStep, stage, loss: r.stats.lossSum / n, acc1: r.stats.correct1 / n, lr, imgS: r.stats.count / (wall / 1000) });
    for (const w of r.perWorker) {
      const imgS = w.ms > 0 ? w.count / (w.ms / 1000) : 0;
      this.send({ type: 'worker_stats', t, id: w.id, imgS, computeShare: Math.min(1, w.ms / wall), lastHeard: lastHeard?.get(w.id) ?? t });
    }
  }

  /** progress.ts StepProgress.update (and the Tick loop): `done` of `total` steps of the stage named `label`. */
  progress(stage: StageName, label: string, done: number, total: number): void {
    this.send({ type: 'stage', t: this.now(), stage, label, done, total });
  }

  /**
   * run_files.ts appendEpoch: every log.json record (train, Tock and finetune epochs). Its `stage` is a string
   * there; the Dashboard refuses one other than 'train', 'tock' or 'finetune'.
   */
  epoch(r: Omit<EpochRecordLike, 'stage'> & { stage: string }): void {
    this.send(epochEvent(r as EpochRecordLike, this.now()));
  }

  /** pruner.ts eventSink: Ticks and save points (Tock and finetune epochs arrive through `epoch`). */
  prune(e: PruneRecordLike): void {
    const ev = pruneRecordEvent(e, this.now());
    if (ev) this.send(ev);
  }

  /**
   * Layer widths (widths.ts: `stateDictWidths(exportTorchState(model))`): at the start (baseline), after each Tick
   * (masked) and after the melt (melted).
   */
  widths(baseline: readonly LayerWidth[], current: readonly LayerWidth[], form: 'baseline' | 'masked' | 'melted'): void {
    this.send(widthsEvent(baseline, current, form, this.now()));
  }

  /** run.ts, with summary.json's rows (run_summary.ts ModelSnapshot). */
  final(rows: readonly FinalRow[]): void {
    this.send({ type: 'final', t: this.now(), rows: [...rows] });
  }
}
