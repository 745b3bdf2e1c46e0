import * as tf from '@tensorflow/tfjs-core';
import type { Config } from '../shared/config/schema.js';
import { sampleSeed } from '../shared/data/dataset.js';
import { GdpError } from '../shared/errors.js';
import type { Module } from '../shared/nn/module.js';
import { splitBuckets } from '../shared/protocol/buckets.js';
import type { Message } from '../shared/protocol/messages.js';
import { concatFloat32 } from '../shared/arrays.js';
import { isRunningStat, layoutOf, slotEntries, slotValues, stateChecksum } from '../shared/protocol/model_state.js';
import { applyModelUpdate, type ModelUpdate } from '../shared/protocol/model_update.js';
import { Peer, asGdpError } from '../shared/protocol/peer.js';
import { float32FromWire, toWire } from '../shared/protocol/tensor.js';
import type { Transport } from '../shared/protocol/transport.js';
import { PROTOCOL_VERSION } from '../shared/protocol/version.js';
import { addStats, emptyStats, type FlatLayout, type ParamSet, type Replica, type StepStats } from '../shared/train/replica.js';
import type { SgdOptions } from '../shared/train/sgd.js';
import { GradientReducer, type ReducerOptions } from './gradient_reducer.js';
import { WorkerLink, type Hello } from './worker_link.js';

export type StepSgd = SgdOptions & { gateL1?: number };

export interface WorkerStepStats {
  id: string;
  count: number;
  ms: number;
}

export interface StepResult {
  /** The averaged gradient every replica applied, laid out by `layout`; valid until the next step (reused). */
  avgGrad: Float32Array;
  layout: FlatLayout;
  /** Loss and accuracy sums over the global batch. */
  stats: StepStats;
  perWorker: WorkerStepStats[];
}

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

export interface ClusterOptions {
  config: Config;
  model: Module;
  replica: Replica;
  bucketElems: number;
  log: (line: string) => void;
  /** Thread pool settings of the gradient average. */
  reducer?: ReducerOptions;
  /** With fewer active workers than this (default 1), operations pause until enough have joined. */
  minWorkers?: number;
  /**
   * How long a pause may last before the operation fails with NO_WORKERS (default: indefinitely). In-process
   * clusters, where no worker can come back, use 0.
   */
  pauseMs?: number;
  /** dataFingerprint of the coordinator's dataset: a worker that loaded other data is refused when it is ready. */
  dataFingerprint?: string;
}

/** Sample ranges [start, end) of a contiguous split of n samples over k workers; sizes differ by at most 1. */
export function shardRanges(n: number, k: number): [number, number][] {
  const out: [number, number][] = [];
  for (let r = 0; r < k; r++) out.push([Math.floor((r * n) / k), Math.floor(((r + 1) * n) / k)]);
  return out;
}

function isLost(err: unknown): boolean {
  return err instanceof GdpError && err.code === 'WORKER_LOST';
}

/** Checks a worker's loss and accuracy sums against the samples it was given. */
function checkStats(s: StepStats, samples: number, what: string): void {
  if (s.count !== samples) throw new GdpError('BAD_ANSWER', `${what}: reports ${s.count} samples, it was given ${samples}`);
  if (s.correct1 > s.correct5 || s.correct5 > s.count) throw new GdpError('BAD_ANSWER', `${what}: top-1 ${s.correct1} / top-5 ${s.correct5} correct of ${s.count} is impossible`);
  if (s.lossSum < 0) throw new GdpError('BAD_ANSWER', `${what}: negative loss sum ${s.lossSum}`);
}

/**
 * Workers go through three sets. `joining`: said hello, wait for the next boundary between collective operations.
 * `following`: welcomed there with the state of that moment; they receive every later update (averaged gradients,
 * model updates, BN statistics) but no shards, so loading data on a slow machine never holds up training.
 * `links` (active): their 'ready' checked out; they take shards from the next operation on, in join order.
 */
export class Coordinator implements Cluster {
  readonly replica: Replica;
  readonly model: Module;
  readonly config: Config;
  private readonly links: WorkerLink[] = [];
  private readonly joining: WorkerLink[] = [];
  private readonly following: WorkerLink[] = [];
  readonly updates: ModelUpdate[] = [];
  private seq = 1;
  private queue: Promise<unknown> = Promise.resolve();
  private waiters: (() => void)[] = [];
  private closed = false;
  /** Data-parallel steps applied so far. */
  steps = 0;
  /** Called while paused for workers; may throw to give up (e.g. every local worker process exited). */
  pauseCheck?: () => void;

  private readonly reducer: GradientReducer;

  constructor(private readonly opts: ClusterOptions) {
    this.reducer = new GradientReducer(opts.reducer);
    this.replica = opts.replica;
    this.model = opts.model;
    this.config = opts.config;
  }

  /**
   * Continues a run from saved state, before any worker joins (they receive it in their welcome): replays the
   * update log on the freshly built model, then overwrites every slot (parameters and buffers) and the momentum,
   * and sets the step count (augmentation seeds and checksum timing follow it).
   */
  restore(s: { updates: readonly ModelUpdate[]; slots: ReadonlyMap<string, Float32Array>; momentum: [string, Float32Array][]; steps: number }): void {
    if (this.links.length || this.joining.length || this.updates.length || this.steps) throw new GdpError('INTERNAL', 'restore() is for a coordinator that has not started');
    for (const u of s.updates) this.prepare(u);
    const slots = [...this.model.namedSlots()];
    const extra = [...s.slots.keys()].filter((n) => !slots.some(([m]) => m === n));
    if (extra.length) throw new GdpError('BAD_STATE', `saved state has tensor '${extra[0]}', which the model does not have`);
    for (const [name, slot] of slots) {
      const v = s.slots.get(name);
      if (!v) throw new GdpError('BAD_STATE', `saved state lacks tensor '${name}'`);
      if (v.length !== slot.value.size) throw new GdpError('BAD_STATE', `saved tensor '${name}' has ${v.length} values, the model [${slot.value.shape}]`);
      slot.set(tf.tensor(v, slot.value.shape));
    }
    this.replica.pullFromDevice();
    const params = new Map(this.model.namedParameters());
    for (const [name, b] of s.momentum) {
      const p = params.get(name);
      if (!p || p.value.size !== b.length) throw new GdpError('BAD_STATE', `saved momentum '${name}' (${b.length} values) matches no parameter of the model`);
    }
    this.replica.setMomentumState(s.momentum);
    this.steps = s.steps;
  }

  get workerIds(): string[] {
    return this.active().map((l) => l.id);
  }

  private active(): WorkerLink[] {
    // Drop links whose connection ended; the rest keep their join order, which fixes the reduction order.
    for (let i = this.links.length - 1; i >= 0; i--) if (this.links[i].closed) this.links.splice(i, 1);
    return [...this.links];
  }

  private followers(): WorkerLink[] {
    for (let i = this.following.length - 1; i >= 0; i--) if (this.following[i].closed) this.following.splice(i, 1);
    return [...this.following];
  }

  private log(line: string): void {
    this.opts.log(line);
  }

  /** Runs collective operations one at a time; each starts at a boundary, where waiting workers are admitted. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(
      () => {
        this.admitPending();
        return fn();
      },
      () => {
        this.admitPending();
        return fn();
      },
    );
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** A new connection: waits for its hello, then admits it between collective operations. */
  accept(transport: Transport): void {
    const d = this.config.dist;
    let link: WorkerLink | undefined;
    const peer = new Peer(transport, {
      name: `worker at ${transport.remote}`,
      heartbeatMs: d.heartbeat_ms,
      timeoutMs: () => link?.silenceLimitMs() ?? d.heartbeat_timeout_ms,
      log: this.opts.log,
    });
    let greeted = false;
    // A connection that never introduces itself (a port scanner, a wrong client, a stalled peer) is not kept open.
    const helloMs = d.heartbeat_timeout_ms;
    const helloTimer = setTimeout(() => peer.fail(new GdpError('HELLO_TIMEOUT', `no 'hello' within ${helloMs} ms of connecting`)), helloMs);
    helloTimer.unref();
    peer.onClose(() => clearTimeout(helloTimer));
    peer.onMessage((m) => {
      if (greeted) return;
      greeted = true;
      clearTimeout(helloTimer);
      if (m.type !== 'hello') throw new GdpError('PROTOCOL', `the first message must be 'hello', got '${m.type}'`);
      const refusal = this.refusal(m);
      if (refusal) {
        this.log(`refused worker ${m.workerId} from ${transport.remote}: ${refusal.reason}`);
        peer.send({ type: 'refuse', ...refusal });
        peer.close('refused');
        return;
      }
      const l = new WorkerLink(peer, m, d.step_timeout_ms, d.heartbeat_timeout_ms);
      link = l;
      peer.onClose(() => {
        if (this.closed) return;
        // Step numbers: the worker contributes nothing to step `steps + 1` (a step it was computing is redone).
        if (l.active) this.log(`worker ${l.id} lost at step ${this.steps + 1} (${l.lostReason}); ${this.active().length} worker(s) remain`);
        else this.log(`worker ${l.id} left before taking shards (${l.lostReason})`);
        this.wake();
      });
      this.joining.push(l);
      this.wake();
      // When no operation is running, this one admits it now.
      void this.exclusive(async () => undefined);
    });
  }

  private refusal(h: Hello): { code: string; reason: string } | undefined {
    if (this.closed) return { code: 'SHUTTING_DOWN', reason: 'the coordinator is shutting down' };
    if (h.protocol !== PROTOCOL_VERSION) {
      return { code: 'PROTOCOL_VERSION', reason: `worker speaks protocol version ${h.protocol}, this coordinator ${PROTOCOL_VERSION}; install the same gdp version on both` };
    }
    if ([...this.links, ...this.following, ...this.joining].some((l) => l.id === h.workerId && !l.closed)) {
      return { code: 'DUPLICATE_WORKER', reason: `a worker with id '${h.workerId}' is already connected` };
    }
    return undefined;
  }

  /**
   * At a boundary (holding the operation lock): activates followers whose state checked out, and welcomes waiting
   * workers with the current state (weights, optimizer state, masks, the architecture's update log).
   */
  private admitPending(): void {
    for (const link of this.followers()) {
      if (!link.ready) continue;
      this.following.splice(this.following.indexOf(link), 1);
      link.active = true;
      this.links.push(link);
      const h = link.hello;
      this.log(`worker ${h.workerId} joined (${h.host} pid ${h.pid}, ${h.backend}${h.gpu !== null ? `, GPU ${h.gpu}` : ''}); ${this.active().length} active from step ${this.steps + 1}`);
    }
    const batch = this.joining.splice(0).filter((l) => !l.closed);
    if (!batch.length) return;
    const slots = slotEntries(this.model);
    const momentum = this.replica.momentumState();
    const momentumEntries = momentum.map(([name, b]) => ({ name, shape: [b.length] }));
    const flat = concatFloat32([...slotValues(this.model), ...momentum.map(([, b]) => b)]);
    const checksum = stateChecksum(this.model);
    const welcome: Message = {
      type: 'welcome',
      protocol: PROTOCOL_VERSION,
      config: this.config as unknown as Record<string, unknown>,
      updates: this.updates,
      slots,
      momentum: momentumEntries,
      bucketElems: this.opts.bucketElems,
    };
    const buckets: Message[] = splitBuckets(flat, this.opts.bucketElems).map((data, index) => ({ type: 'bucket', stream: 'state', seq: 0, index, data }));
    for (const link of batch) {
      this.following.push(link);
      link.request(0, 'ready', [welcome, ...buckets]).then(
        (ready) => {
          if (ready.checksum !== checksum) {
            link.peer.fail(new GdpError('REPLICA_DIVERGED', `worker ${link.id} loaded state with checksum ${ready.checksum}, expected ${checksum}`));
            return;
          }
          const mine = this.opts.dataFingerprint;
          if (mine !== undefined && ready.data !== mine) {
            link.peer.fail(new GdpError('BAD_DATA', `worker ${link.id} loaded a different dataset (${ready.data}) than the coordinator (${mine}): check --data-dir on ${link.hello.host}`));
            return;
          }
          link.ready = true;
          this.wake();
          void this.exclusive(async () => undefined);
        },
        () => undefined,
      );
    }
  }

  private wake(): void {
    const w = this.waiters.splice(0);
    for (const fn of w) fn();
  }

  /** Resolves after the next change in workers (one joined, became ready or left), or after `ms`. */
  private changed(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      this.waiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  /** Resolves once `n` workers are active; `check` may throw to give up early (e.g. local workers died). */
  async waitForWorkers(n: number, timeoutMs = Infinity, check?: () => void): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.active().length < n) {
      check?.();
      const left = deadline - Date.now();
      if (left <= 0) throw new GdpError('WORKERS_MISSING', `only ${this.active().length} of ${n} workers joined within ${timeoutMs} ms`);
      await this.changed(Math.min(left, 500));
    }
  }

  /**
   * Holding the lock at a boundary: returns at once with enough active workers, else pauses (logged) until enough
   * have joined. Joining workers are admitted here, since no other operation can run meanwhile.
   */
  private async untilEnoughWorkers(what: string): Promise<void> {
    const min = Math.max(1, this.opts.minWorkers ?? 1);
    if (this.active().length >= min) return;
    const pauseMs = this.opts.pauseMs ?? Infinity;
    if (pauseMs <= 0) throw new GdpError('NO_WORKERS', `${what}: ${this.active().length} worker(s) connected, at least ${min} needed`);
    const started = Date.now();
    this.log(`paused before ${what}: ${this.active().length} worker(s) active, at least ${min} needed (--min-workers); waiting for workers to join`);
    while (this.active().length < min) {
      if (this.closed) throw new GdpError('SHUTTING_DOWN', `${what}: the coordinator is shutting down`);
      this.pauseCheck?.();
      if (Date.now() - started > pauseMs) throw new GdpError('NO_WORKERS', `${what}: fewer than ${min} worker(s) for ${pauseMs} ms`);
      await this.changed(500);
      this.admitPending();
    }
    this.log(`resumed ${what} with ${this.active().length} worker(s) after ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }

  /**
   * Runs `fn` over the active workers; if a worker is lost meanwhile (left, stalled, or closed for a bad message),
   * runs it again over those that remain. Nothing is applied until `fn` succeeds, so a retry is always safe.
   */
  private async withWorkers<T>(what: string, fn: (links: WorkerLink[]) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      // A redo starts at a boundary too (nothing was applied): workers that became ready meanwhile take part.
      if (attempt > 0) this.admitPending();
      await this.untilEnoughWorkers(what);
      const links = this.active();
      try {
        return await fn(links);
      } catch (err) {
        if (!isLost(err)) throw err;
        this.log(`${what}: ${(err as Error).message}; redoing it with ${this.active().length} worker(s)`);
      }
    }
  }

  /** Awaits every promise, then throws the first failure (so no request is left half-read before a retry). */
  static async all<T>(ps: Promise<T>[]): Promise<T[]> {
    const rs = await Promise.allSettled(ps);
    const bad = rs.find((r) => r.status === 'rejected');
    if (bad) throw (bad as PromiseRejectedResult).reason;
    return rs.map((r) => (r as PromiseFulfilledResult<T>).value);
  }

  /**
   * Sends a state change to the followers without waiting (they may still be loading their data); an answer that
   * disagrees with `checksum` closes that follower.
   */
  private tellFollowers(seq: number, msg: Message, checksum: string, what: string): void {
    for (const link of this.followers()) {
      link.request(seq, 'ack', [msg]).then(
        (a) => {
          if (a.checksum !== checksum) link.peer.fail(new GdpError('REPLICA_DIVERGED', `worker ${link.id} holds state ${a.checksum} after ${what}, the coordinator ${checksum}`));
        },
        () => undefined,
      );
    }
  }

  step(indices: Int32Array, set: ParamSet, sgd: StepSgd): Promise<StepResult> {
    return this.exclusive(() => this.withWorkers(`step ${this.steps + 1}`, (links) => this.stepOnce(links, indices, set, sgd)));
  }

  private async stepOnce(links: WorkerLink[], indices: Int32Array, set: ParamSet, sgd: StepSgd): Promise<StepResult> {
    const layout = this.replica.layout(set);
    const seq = this.seq++;
    // Augmentation draws from sampleSeed(seed, sample index): independent of which worker runs a sample, and
    // different at every step so that a sample seen again in a later epoch is augmented afresh.
    const seed = sampleSeed(this.config.base.seed, this.steps);
    const shards = shardRanges(indices.length, links.length)
      .map(([s, e], r) => ({ link: links[r], idx: indices.subarray(s, e) }))
      .filter((s) => s.idx.length > 0);
    const allocate = (n: number) => this.reducer.allocate(n, shards.length);
    const answers = await Coordinator.all(
      shards.map(({ link, idx }) =>
        link.request(seq, 'computed', [{ type: 'compute', seq, set, indices: toWire(idx), seed }], {
          size: layout.size,
          bucketElems: this.opts.bucketElems,
          allocate,
          dtype: this.config.dist.grad_dtype,
        }),
      ),
    );
    shards.forEach(({ link, idx }, i) => {
      try {
        checkStats(answers[i].stats, idx.length, `worker ${link.id}'s answer to step ${this.steps + 1}`);
      } catch (err) {
        throw this.reject(link, err as GdpError);
      }
    });
    const stats = answers.reduce((acc, a) => addStats(acc, a.stats), emptyStats());
    // Fixed order (join order), float32 sums: the same arithmetic as one process accumulating shard by shard.
    const sum = await this.reducer.average(answers.map((a) => a.grad), stats.count);
    // The commit point. A worker that left after answering makes the step redone too, so that "lost at step K"
    // means exactly: step K and later were computed without it.
    const gone = shards.find((s) => s.link.closed);
    if (gone) throw new GdpError('WORKER_LOST', `worker ${gone.link.id} left before step ${this.steps + 1} was applied`);
    const apply: Message = { type: 'apply', seq, set, sgd };
    const buckets: Message[] = splitBuckets(sum, this.opts.bucketElems).map((data, index) => ({ type: 'bucket', stream: 'avg', seq, index, data }));
    // Every active worker applies, including those that had no samples this step, and so does every follower.
    for (const link of [...this.active(), ...this.followers()]) link.post([apply, ...buckets]);
    for (const { link, idx } of shards) link.samplesSinceSync += idx.length;
    this.replica.applyGradient(layout, sum, sgd);
    this.steps++;
    const every = this.config.dist.checksum_every;
    if (this.steps % every === 0) await this.checksumsOnce();
    return { avgGrad: sum, layout, stats, perWorker: shards.map((s, i) => ({ id: s.link.id, count: s.idx.length, ms: answers[i].ms })) };
  }

  evaluate(indices: Int32Array): Promise<StepStats> {
    const batchSize = this.config.data.test_batch_size;
    return this.exclusive(() =>
      this.withWorkers('evaluation', async (links) => {
        const seq = this.seq++;
        const shards = shardRanges(indices.length, links.length)
          .map(([s, e], r) => ({ link: links[r], idx: indices.subarray(s, e) }))
          .filter((s) => s.idx.length > 0);
        const answers = await Coordinator.all(shards.map(({ link, idx }) => link.request(seq, 'evaluated', [{ type: 'evaluate', seq, indices: toWire(idx), batchSize }])));
        shards.forEach(({ link, idx }, i) => {
          try {
            checkStats(answers[i].stats, idx.length, `worker ${link.id}'s evaluation`);
          } catch (err) {
            throw this.reject(link, err as GdpError);
          }
        });
        return answers.reduce((acc, a) => addStats(acc, a.stats), emptyStats());
      }),
    );
  }

  syncBatchNormStats(): Promise<void> {
    return this.exclusive(() => this.withWorkers('BN statistics', (links) => this.syncBnOnce(links)));
  }

  private async syncBnOnce(links: WorkerLink[]): Promise<void> {
    const seq = this.seq++;
    const answers = await Coordinator.all(links.map((l) => l.request(seq, 'bn_stats', [{ type: 'bn_request', seq }])));
    const buffers = [...this.model.namedBuffers()].filter(([n]) => isRunningStat(n));
    const total = answers.reduce((a, b) => a + b.samples, 0);
    // Every answer is checked in full before any of it is used.
    const values = answers.map((a, w) => {
      const link = links[w];
      if (a.samples !== link.samplesSinceSync) {
        throw this.reject(link, new GdpError('BAD_STATE', `BN statistics weighted by ${a.samples} samples; the worker was given ${link.samplesSinceSync} since the last synchronisation`));
      }
      const names = a.tensors.map((t) => t.name);
      if (names.length !== buffers.length || new Set(names).size !== names.length) {
        throw this.reject(link, new GdpError('BAD_STATE', `BN statistics hold ${names.length} tensors (${new Set(names).size} distinct), the model ${buffers.length}`));
      }
      const byName = new Map(a.tensors.map((t) => [t.name, t.tensor]));
      return buffers.map(([name, s]) => {
        const t = byName.get(name);
        if (!t) throw this.reject(link, new GdpError('BAD_STATE', `BN statistics lack '${name}'`));
        if (t.shape.join('x') !== s.value.shape.join('x')) {
          throw this.reject(link, new GdpError('BAD_STATE', `BN statistic '${name}' has shape [${t.shape}], the model [${s.value.shape}]`));
        }
        let v: Float32Array;
        try {
          v = float32FromWire(t, `BN statistic '${name}'`);
        } catch (err) {
          throw this.reject(link, err as GdpError);
        }
        if (!v.every(Number.isFinite)) throw this.reject(link, new GdpError('NON_FINITE', `BN statistic '${name}' is not finite`));
        return v;
      });
    });
    if (total === 0) return;
    const acc = buffers.map(([, s]) => new Float64Array(s.value.size));
    answers.forEach((a, w) => {
      buffers.forEach((_, i) => {
        const v = values[w][i];
        for (let j = 0; j < v.length; j++) acc[i][j] += a.samples * v[j];
      });
    });
    const tensors = buffers.map(([name, s], i) => {
      const v = Float32Array.from(acc[i], (x) => x / total);
      s.set(tf.tensor(v, s.value.shape));
      return { name, tensor: toWire(v, s.value.shape) };
    });
    const checksum = stateChecksum(this.model);
    const targets = this.active();
    const msg: Message = { type: 'set_buffers', seq, tensors };
    this.tellFollowers(seq, msg, checksum, 'BN synchronisation');
    for (const l of [...targets, ...this.followers()]) l.samplesSinceSync = 0;
    const acks = await Promise.allSettled(targets.map((l) => l.request(seq, 'ack', [msg])));
    this.dropDiverged(
      targets,
      acks.map((r) => (r.status === 'fulfilled' ? r.value.checksum : undefined)),
      checksum,
      'after BN synchronisation',
    );
  }

  /** Closes a worker's connection for bad data and returns the error that makes the operation retry without it. */
  private reject(link: WorkerLink, err: GdpError): GdpError {
    link.peer.fail(err);
    return new GdpError('WORKER_LOST', `worker ${link.id}: ${err.message}`);
  }

  /** Applies a model update to the coordinator's model before any worker joins (workers replay it on welcome). */
  prepare(update: ModelUpdate): void {
    if (this.links.length || this.joining.length) throw new GdpError('INTERNAL', `prepare('${update.kind}') after workers connected: use broadcastModelUpdate`);
    const { resetMomentum } = applyModelUpdate(this.model, update);
    this.replica.pullFromDevice();
    if (resetMomentum) this.replica.resetMomentum();
    this.updates.push(update);
  }

  /**
   * Closes the connection of every worker whose answered checksum differs from the coordinator's: its replica can
   * no longer be trusted, the others go on. When all of them differ, the coordinator's own replica is the suspect:
   * the run stops with REPLICA_DIVERGED.
   */
  private dropDiverged(links: WorkerLink[], checksums: (string | undefined)[], mine: string, when: string): void {
    const answered = links.filter((_, i) => checksums[i] !== undefined);
    const diverged = links.filter((_, i) => checksums[i] !== undefined && checksums[i] !== mine);
    if (!diverged.length) return;
    const detail = diverged.map((l) => `worker ${l.id} has ${checksums[links.indexOf(l)]}`).join(', ');
    if (diverged.length === answered.length) throw new GdpError('REPLICA_DIVERGED', `${when}: ${detail}, the coordinator ${mine}`);
    for (const l of diverged) l.peer.fail(new GdpError('REPLICA_DIVERGED', `${when}: worker ${l.id} has checksum ${checksums[links.indexOf(l)]}, the coordinator ${mine}`));
  }

  broadcastModelUpdate(update: ModelUpdate): Promise<void> {
    return this.exclusive(async () => {
      await this.untilEnoughWorkers(`model update '${update.kind}'`);
      const { resetMomentum } = applyModelUpdate(this.model, update);
      this.replica.pullFromDevice();
      if (resetMomentum) this.replica.resetMomentum();
      this.updates.push(update);
      const checksum = stateChecksum(this.model, { runningStats: false });
      const links = this.active();
      const seq = this.seq++;
      const msg: Message = { type: 'model_update', seq, update };
      this.tellFollowers(seq, msg, checksum, `a '${update.kind}' update`);
      // A worker lost here is simply gone; the others must all have applied the update.
      const rs = await Promise.allSettled(links.map((l) => l.request(seq, 'ack', [msg])));
      for (const r of rs) if (r.status === 'rejected' && !isLost(r.reason)) throw r.reason;
      this.dropDiverged(
        links,
        rs.map((r) => (r.status === 'fulfilled' ? r.value.checksum : undefined)),
        checksum,
        `after a '${update.kind}' update`,
      );
    });
  }

  verifyChecksums(): Promise<void> {
    return this.exclusive(() => this.checksumsOnce());
  }

  private async checksumsOnce(): Promise<void> {
    const links = this.active();
    const seq = this.seq++;
    const rs = await Promise.allSettled(links.map((l) => l.request(seq, 'checksum', [{ type: 'checksum_request', seq }])));
    this.dropDiverged(
      links,
      rs.map((r) => (r.status === 'fulfilled' ? r.value.checksum : undefined)),
      this.replica.checksum(),
      `parameter checksums after step ${this.steps}`,
    );
  }

  /** Ends every worker's session and refuses new ones. */
  shutdown(reason: string): void {
    void this.reducer.close();
    // Not waiting for a running operation: on Ctrl-C the workers must stop now; their pending answers are dropped.
    this.closed = true;
    for (const l of [...this.links, ...this.following, ...this.joining]) {
      try {
        l.peer.send({ type: 'shutdown', reason });
      } catch {
        // Already gone.
      }
      l.peer.close('shutdown');
    }
    this.wake();
  }
}
