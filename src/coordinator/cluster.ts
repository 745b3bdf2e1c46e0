import type { Config } from '../shared/config/schema.js';
import { GdpError } from '../shared/errors.js';
import type { Module } from '../shared/nn/module.js';
import type { ModelUpdate } from '../shared/protocol/model_update.js';
import type { Transport } from '../shared/protocol/transport.js';
import type { ParamSet, Replica, StepStats } from '../shared/train/replica.js';
import { Collectives, type StepResult, type StepSgd } from './collectives.js';
import { GradientReducer } from './gradient_reducer.js';
import { Membership, type MembershipOptions } from './membership.js';

export type { StepResult, StepSgd } from './collectives.js';

/**
 * What the training stages (and the pruning engine) drive. One call is one collective operation over every
 * active worker; calls are serialised, and workers join only between them.
 */
export interface Cluster {
  /** The coordinator's own replica: always identical (parameters) to every worker's. */
  readonly replica: Replica;
  readonly model: Module;
  readonly config: Config;
  readonly workerIds: string[];
  /** Every model update applied so far, in order: replaying them on a fresh model rebuilds the architecture. */
  readonly updates: readonly ModelUpdate[];
  /** Splits `indices` (training samples) across workers, averages their gradients of `set`, applies it everywhere. */
  step(indices: Int32Array, set: ParamSet, sgd: StepSgd): Promise<StepResult>;
  /** Eval-mode loss / top-1 / top-5 sums over these test samples, sharded across workers. */
  evaluate(indices: Int32Array): Promise<StepStats>;
  /** Averages BN running statistics over workers (weighted by samples seen) and gives them to every replica. */
  syncBatchNormStats(): Promise<void>;
  /** Applies a replayable model update on every replica (coordinator first, so a bad update is never sent). */
  broadcastModelUpdate(update: ModelUpdate): Promise<void>;
  /** Throws REPLICA_DIVERGED naming the worker whose parameters differ from the coordinator's. */
  verifyChecksums(): Promise<void>;
}

export type ClusterOptions = Omit<MembershipOptions, 'steps'> & {
  model: Module;
};

/**
 * The coordinator: its replica, the workers' membership (joining, following, active; pauses) and the collective
 * operations over them, which average through the gradient reducer.
 */
export class Coordinator implements Cluster {
  readonly replica: Replica;
  readonly model: Module;
  readonly config: Config;
  private readonly reducer: GradientReducer;
  private readonly members: Membership;
  private readonly ops: Collectives;

  constructor(opts: ClusterOptions) {
    this.replica = opts.replica;
    this.model = opts.model;
    this.config = opts.config;
    this.reducer = new GradientReducer();
    this.members = new Membership({ ...opts, steps: () => this.ops.steps });
    this.ops = new Collectives({
      config: opts.config,
      replica: opts.replica,
      bucketElems: opts.bucketElems,
      members: this.members,
      reducer: this.reducer,
      log: opts.log,
    });
  }

  get workerIds(): string[] {
    return this.members.active().map((l) => l.id);
  }
  get updates(): readonly ModelUpdate[] {
    return this.replica.updates;
  }
  /** Data-parallel steps applied so far. */
  get steps(): number {
    return this.ops.steps;
  }
  /** Called while paused for workers; may throw to give up (e.g. every local worker process exited). */
  get pauseCheck(): (() => void) | undefined {
    return this.members.pauseCheck;
  }
  set pauseCheck(fn: (() => void) | undefined) {
    this.members.pauseCheck = fn;
  }

  /**
   * Continues a run from saved state, before any worker joins (they receive it in their welcome): replays the
   * update log on the freshly built model, overwrites every slot (parameters and buffers) and the momentum
   * (Replica.loadState: BAD_STATE names what does not fit), and sets the step count (augmentation seeds and
   * checksum timing follow it).
   */
  restore(s: { updates: readonly ModelUpdate[]; slots: ReadonlyMap<string, Float32Array>; momentum: [string, Float32Array][]; steps: number }): void {
    if (this.members.started || this.replica.updates.length || this.steps)
      throw new GdpError('INTERNAL', 'restore() is for a coordinator that has not started');
    this.replica.loadState({
      updates: s.updates,
      slots: [...s.slots].map(([name, values]) => ({ name, values })),
      momentum: s.momentum.map(([name, values]) => ({ name, values })),
    });
    this.ops.steps = s.steps;
  }

  /** Applies a model update to the coordinator's replica before any worker joins (workers replay it on welcome). */
  prepare(update: ModelUpdate): void {
    if (this.members.started) throw new GdpError('INTERNAL', `prepare('${update.kind}') after workers connected: use broadcastModelUpdate`);
    this.replica.applyUpdate(update);
  }

  /** A new connection: waits for its hello, then admits it between collective operations. */
  accept(transport: Transport): void {
    this.members.accept(transport);
  }

  /**
   * Resolves once `n` workers are active; `check` may throw to give up early (e.g. local workers died). Throws
   * WORKERS_MISSING after `timeoutMs`, and a worker's error that ends the run (BAD_DATA...) as soon as it arrives.
   */
  waitForWorkers(n: number, timeoutMs = Infinity, check?: () => void): Promise<void> {
    return this.members.waitForWorkers(n, timeoutMs, check);
  }

  step(indices: Int32Array, set: ParamSet, sgd: StepSgd): Promise<StepResult> {
    return this.ops.step(indices, set, sgd);
  }
  evaluate(indices: Int32Array): Promise<StepStats> {
    return this.ops.evaluate(indices);
  }
  syncBatchNormStats(): Promise<void> {
    return this.ops.syncBatchNormStats();
  }
  broadcastModelUpdate(update: ModelUpdate): Promise<void> {
    return this.ops.broadcastModelUpdate(update);
  }
  verifyChecksums(): Promise<void> {
    return this.ops.verifyChecksums();
  }

  /** Ends every worker's session and refuses new ones. */
  shutdown(reason: string): void {
    this.members.shutdown(reason);
  }
}
