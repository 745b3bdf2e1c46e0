import type { DashboardEvent, FinalRow, StageName } from './events.js';
import { DownsampledSeries, type SeriesDelta, type SeriesView } from './series.js';

export interface WorkerView {
  id: string;
  host: string;
  backend: string;
  gpu: number | null;
  state: 'active' | 'lost';
  joinedAt: number;
  joinedStep: number;
  lostAt?: number;
  lostStep?: number;
  reason?: string;
  imgS?: number;
  computeShare?: number;
  lastHeard?: number;
}

export interface StageView {
  stage: StageName;
  label: string;
  done: number;
  total: number;
  /** When this label was first seen, and the latest event's time (ms since the epoch). */
  startedAt: number;
  t: number;
  /** Seconds left at the stage's mean rate so far; undefined before its first step. */
  etaS?: number;
}

export interface EpochView {
  stage: 'train' | 'tock' | 'finetune';
  epoch: number;
  lr: number;
  trainLoss: number;
  trainAcc: number;
  testLoss: number;
  acc1: number;
  acc5: number;
  imgS: number;
}

export interface TickView {
  tick: number;
  macsRatio: number;
  paramsRatio: number;
  acc1: number;
  loss: number;
  filtersLeft: number;
}

/** A Tock on the trajectory: the MACs ratio it trained at (that of the Tick before it; 1 before any) and its test top-1. */
export interface TockView {
  afterTick: number;
  epoch: number;
  macsRatio: number;
  acc1: number;
}

export interface SavePointView {
  tick: number;
  savePoint: number;
  macsRatio: number;
  path: string;
}

export interface WidthsView {
  form: 'baseline' | 'masked' | 'melted';
  layers: { path: string; baseline: number; current: number }[];
}

/** Per-step curves the history keeps, downsampled. */
export const STEP_SERIES = ['loss', 'acc1', 'lr', 'imgS'] as const;
export type StepSeriesName = (typeof STEP_SERIES)[number];

/** Everything a page draws, as plain JSON: what a browser receives first, and what report.html embeds. */
export interface RunView {
  task?: string;
  stages: string[];
  startedAt?: number;
  /** The step a resumed run continued from: the per-step curves, workers and log start there. */
  resumedAt?: number;
  workers: WorkerView[];
  /** Joined and lost events, newest last, at most `maxLog`. */
  log: { t: number; text: string }[];
  stage?: StageView;
  steps: Record<StepSeriesName, SeriesView>;
  epochs: EpochView[];
  ticks: TickView[];
  tocks: TockView[];
  savePoints: SavePointView[];
  widths?: WidthsView;
  final?: FinalRow[];
}

type Part = Exclude<keyof RunView, 'steps'>;

/** What changed since the last `takeDelta`: the step series from their first changed bucket, other parts whole. */
export interface RunDelta {
  steps: Partial<Record<StepSeriesName, SeriesDelta>>;
  parts: Partial<Omit<RunView, 'steps'>>;
}

export interface RunHistoryOptions {
  /** Buckets per step series at most (default 2000). */
  maxPoints?: number;
  /** Joined/lost lines kept (default 500). */
  maxLog?: number;
}

/**
 * The state of a run as the dashboard shows it, built from `DashboardEvent`s in order. Memory is bounded by the
 * options plus one entry per epoch, Tick and worker, whatever the run's length. Events must be valid
 * (`dashboardEventSchema`); the history does not check them again.
 */
export class RunHistory {
  private readonly v: RunView;
  private readonly series: Record<StepSeriesName, DownsampledSeries>;
  private readonly dirty = new Set<Part>();
  private readonly maxLog: number;

  constructor(opts: RunHistoryOptions = {}) {
    const make = () => new DownsampledSeries(opts.maxPoints ?? 2000);
    this.series = { loss: make(), acc1: make(), lr: make(), imgS: make() };
    this.maxLog = opts.maxLog ?? 500;
    this.v = { stages: [], workers: [], log: [], epochs: [], ticks: [], tocks: [], savePoints: [], steps: this.stepViews() };
  }

  private stepViews(): Record<StepSeriesName, SeriesView> {
    return { loss: this.series.loss.view(), acc1: this.series.acc1.view(), lr: this.series.lr.view(), imgS: this.series.imgS.view() };
  }

  private touch(...parts: Part[]): void {
    for (const p of parts) this.dirty.add(p);
  }

  private note(t: number, text: string): void {
    this.v.log.push({ t, text });
    if (this.v.log.length > this.maxLog) this.v.log.splice(0, this.v.log.length - this.maxLog);
    this.touch('log');
  }

  apply(e: DashboardEvent): void {
    const v = this.v;
    switch (e.type) {
      case 'run':
        v.task = e.task;
        v.stages = e.stages;
        v.startedAt = e.t;
        this.touch('task', 'stages', 'startedAt');
        // No key at all for a fresh run, in the view and its deltas: JSON, which the page receives, drops undefined members.
        if (e.resumedStep !== undefined) {
          v.resumedAt = e.resumedStep;
          this.touch('resumedAt');
        } else delete v.resumedAt;
        break;
      case 'worker_joined': {
        const w: WorkerView = { id: e.id, host: e.host, backend: e.backend, gpu: e.gpu, state: 'active', joinedAt: e.t, joinedStep: e.step };
        const i = v.workers.findIndex((x) => x.id === e.id);
        if (i >= 0) v.workers[i] = w;
        else v.workers.push(w);
        this.note(e.t, `worker ${e.id} joined (${e.host}, ${e.backend}${e.gpu !== null ? `, GPU ${e.gpu}` : ''}) from step ${e.step + 1}`);
        this.touch('workers');
        break;
      }
      case 'worker_lost': {
        const w = v.workers.find((x) => x.id === e.id);
        if (w) Object.assign(w, { state: 'lost', lostAt: e.t, lostStep: e.step, reason: e.reason });
        this.note(e.t, `worker ${e.id} lost at step ${e.step} (${e.reason})`);
        this.touch('workers');
        break;
      }
      case 'worker_stats': {
        const w = v.workers.find((x) => x.id === e.id);
        if (w) Object.assign(w, { imgS: e.imgS, computeShare: e.computeShare, lastHeard: e.lastHeard });
        this.touch('workers');
        break;
      }
      case 'stage': {
        const same = v.stage?.label === e.label && v.stage.done <= e.done;
        const startedAt = same ? v.stage!.startedAt : e.t;
        const etaS = e.done > 0 && e.t > startedAt ? ((e.t - startedAt) / 1000 / e.done) * (e.total - e.done) : undefined;
        v.stage = { stage: e.stage, label: e.label, done: e.done, total: e.total, startedAt, t: e.t, etaS };
        this.touch('stage');
        break;
      }
      case 'step':
        this.series.loss.add(e.step, e.loss);
        this.series.acc1.add(e.step, e.acc1);
        this.series.lr.add(e.step, e.lr);
        this.series.imgS.add(e.step, e.imgS);
        break;
      case 'epoch': {
        const { type: _type, t: _t, ...rest } = e;
        v.epochs.push(rest);
        this.touch('epochs');
        if (e.stage === 'tock') {
          const last = v.ticks[v.ticks.length - 1];
          v.tocks.push({ afterTick: last?.tick ?? 0, epoch: e.epoch, macsRatio: last?.macsRatio ?? 1, acc1: e.acc1 });
          this.touch('tocks');
        }
        break;
      }
      case 'tick': {
        const { type: _type, t: _t, ...rest } = e;
        v.ticks.push(rest);
        this.touch('ticks');
        break;
      }
      case 'save_point': {
        const { type: _type, t: _t, ...rest } = e;
        v.savePoints.push(rest);
        this.touch('savePoints');
        break;
      }
      case 'widths':
        v.widths = { form: e.form, layers: e.layers };
        this.touch('widths');
        break;
      case 'final':
        v.final = e.rows;
        this.touch('final');
        break;
    }
  }

  /** The whole state, a fresh JSON-able copy. */
  view(): RunView {
    return structuredClone({ ...this.v, steps: this.stepViews() });
  }

  /** Changes since the last call (a fresh copy), or undefined when nothing changed. */
  takeDelta(): RunDelta | undefined {
    const steps: RunDelta['steps'] = {};
    for (const name of STEP_SERIES) {
      const d = this.series[name].takeDelta();
      if (d) steps[name] = d;
    }
    if (!this.dirty.size && !Object.keys(steps).length) return undefined;
    const parts: Record<string, unknown> = {};
    for (const p of this.dirty) parts[p] = this.v[p];
    this.dirty.clear();
    return structuredClone({ steps, parts: parts as RunDelta['parts'] });
  }
}

/**
 * Applies a delta to a view. The dashboard page runs this very function (page_script.ts inlines its source), so it
 * must use nothing but its parameters and built-ins.
 */
export function applyDelta(view: RunView, d: RunDelta): void {
  Object.assign(view, d.parts);
  for (const [name, s] of Object.entries(d.steps) as [StepSeriesName, SeriesDelta][]) {
    const cur = view.steps[name];
    for (const k of ['x', 'n', 'mean', 'min', 'max'] as const) cur[k] = cur[k].slice(0, s.from).concat(s[k]);
    cur.width = s.width;
  }
}
