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

export class Coordinator implements Cluster {
  readonly replica: Replica;
  readonly model: Module;
  readonly config: Config;
  private readonly links: WorkerLink[] = [];
  private readonly joining: WorkerLink[] = [];
  readonly updates: ModelUpdate[] = [];
  private seq = 1;
  private queue: Promise<unknown> = Promise.resolve();
  private waiters: (() => void)[] = [];
  private closed = false;
  /** Data-parallel steps applied so far. */
  steps = 0;

  private readonly reducer: GradientReducer;

  constructor(private readonly opts: ClusterOptions) {
    this.reducer = new GradientReducer(opts.reducer);
    this.replica = opts.replica;
    this.model = opts.model;
    this.config = opts.config;
  }

  get workerIds(): string[] {
    return this.active().map((l) => l.id);
  }

  private active(): WorkerLink[] {
    // Drop links whose connection ended; the rest keep their join order, which fixes the reduction order.
    for (let i = this.links.length - 1; i >= 0; i--) if (this.links[i].closed) this.links.splice(i, 1);
    return [...this.links];
  }

  private log(line: string): void {
    this.opts.log(line);
  }

  /** Runs collective operations one at a time. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** A new connection: waits for its hello, then admits it between collective operations. */
  accept(transport: Transport): void {
    const d = this.config.dist;
    const peer = new Peer(transport, { name: `worker at ${transport.remote}`, heartbeatMs: d.heartbeat_ms, timeoutMs: d.step_timeout_ms, log: this.opts.log });
    let greeted = false;
    // A connection that never introduces itself (a port scanner, a wrong client) is not kept open.
    const helloMs = Math.max(10 * d.heartbeat_ms, 30000);
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
      const link = new WorkerLink(peer, m, d.step_timeout_ms);
      peer.onClose(() => {
        if (link.active && !this.closed) this.log(`worker ${link.id} left: ${link.lostReason}; ${this.active().length} remain`);
      });
      this.joining.push(link);
      void this.exclusive(() => this.admit()).catch((err) => this.log(`error: admitting worker ${m.workerId}: ${asGdpError(err).message}`));
    });
  }

  private refusal(h: Hello): { code: string; reason: string } | undefined {
    if (this.closed) return { code: 'SHUTTING_DOWN', reason: 'the coordinator is shutting down' };
    if (h.protocol !== PROTOCOL_VERSION) {
      return { code: 'PROTOCOL_VERSION', reason: `worker speaks protocol version ${h.protocol}, this coordinator ${PROTOCOL_VERSION}; install the same gdp version on both` };
    }
    if ([...this.links, ...this.joining].some((l) => l.id === h.workerId && !l.closed)) {
      return { code: 'DUPLICATE_WORKER', reason: `a worker with id '${h.workerId}' is already connected` };
    }
    return undefined;
  }

  /** Welcomes every waiting worker with the current state and activates those whose state checks out. */
  private async admit(): Promise<void> {
    const batch = this.joining.splice(0);
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
    await Promise.allSettled(
      batch.map(async (link) => {
        const ready = await link.request(0, 'ready', [welcome, ...buckets]);
        if (ready.checksum !== checksum) {
          link.peer.fail(new GdpError('REPLICA_DIVERGED', `worker ${link.id} loaded state with checksum ${ready.checksum}, expected ${checksum}`));
          return;
        }
        link.active = true;
        this.links.push(link);
        const h = link.hello;
        this.log(`worker ${h.workerId} joined (${h.host} pid ${h.pid}, ${h.backend}${h.gpu !== null ? `, GPU ${h.gpu}` : ''}); ${this.active().length} active`);
      }),
    );
    this.wake();
  }

  private wake(): void {
    const w = this.waiters.splice(0);
    for (const fn of w) fn();
  }

  /** Resolves once `n` workers are active; `check` may throw to give up early (e.g. local workers died). */
  async waitForWorkers(n: number, timeoutMs = Infinity, check?: () => void): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.active().length < n) {
      check?.();
      const left = deadline - Date.now();
      if (left <= 0) throw new GdpError('WORKERS_MISSING', `only ${this.active().length} of ${n} workers joined within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 500));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /**
   * Runs `fn` over the active workers; if a worker is lost meanwhile (left, or closed for a bad message), runs it
   * again over those that remain. Nothing is applied until `fn` succeeds, so a retry is always safe.
   */
  private async withWorkers<T>(what: string, fn: (links: WorkerLink[]) => Promise<T>): Promise<T> {
    for (;;) {
      const links = this.active();
      if (links.length === 0) throw new GdpError('NO_WORKERS', `${what}: no worker is connected`);
      try {
        return await fn(links);
      } catch (err) {
        if (!isLost(err)) throw err;
        this.log(`${what}: ${(err as Error).message}; retrying with ${this.active().length} worker(s)`);
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
    const stats = answers.reduce((acc, a) => addStats(acc, a.stats), emptyStats());
    if (stats.count !== indices.length) throw new GdpError('PROTOCOL', `workers report ${stats.count} samples for a batch of ${indices.length}`);
    // Fixed order (join order), float32 sums: the same arithmetic as one process accumulating shard by shard.
    const sum = await this.reducer.average(answers.map((a) => a.grad), stats.count);
    const apply: Message = { type: 'apply', seq, set, sgd };
    const buckets: Message[] = splitBuckets(sum, this.opts.bucketElems).map((data, index) => ({ type: 'bucket', stream: 'avg', seq, index, data }));
    // Every active worker applies, including those that had no samples this step.
    for (const link of this.active()) link.post([apply, ...buckets]);
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
    if (total === 0) return;
    const acc = buffers.map(([, s]) => new Float64Array(s.value.size));
    answers.forEach((a, w) => {
      const byName = new Map(a.tensors.map((t) => [t.name, t.tensor]));
      buffers.forEach(([name, s], i) => {
        const t = byName.get(name);
        if (!t) throw this.reject(links[w], new GdpError('BAD_STATE', `BN statistics lack '${name}'`));
        const v = float32FromWire(t, `BN statistic '${name}'`);
        if (v.length !== s.value.size) throw this.reject(links[w], new GdpError('BAD_STATE', `BN statistic '${name}' has ${v.length} values, expected ${s.value.size}`));
        if (!v.every(Number.isFinite)) throw this.reject(links[w], new GdpError('NON_FINITE', `BN statistic '${name}' is not finite`));
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
    const acks = await Coordinator.all(targets.map((l) => l.request(seq, 'ack', [{ type: 'set_buffers', seq, tensors }])));
    acks.forEach((a, i) => {
      if (a.checksum !== checksum) throw new GdpError('REPLICA_DIVERGED', `worker ${targets[i].id} holds state ${a.checksum} after BN synchronisation, the coordinator ${checksum}`);
    });
  }

  /** Closes a worker's connection for bad data and returns the error that makes the operation retry without it. */
  private reject(link: WorkerLink, err: GdpError): GdpError {
    link.peer.fail(err);
    return new GdpError('WORKER_LOST', `worker ${link.id}: ${err.message}`);
  }

  broadcastModelUpdate(update: ModelUpdate): Promise<void> {
    return this.exclusive(async () => {
      const { resetMomentum } = applyModelUpdate(this.model, update);
      this.replica.pullFromDevice();
      if (resetMomentum) this.replica.resetMomentum();
      this.updates.push(update);
      const checksum = stateChecksum(this.model, { runningStats: false });
      const links = this.active();
      const seq = this.seq++;
      // A worker lost here is simply gone; the others must all have applied the update.
      const rs = await Promise.allSettled(links.map((l) => l.request(seq, 'ack', [{ type: 'model_update', seq, update }])));
      rs.forEach((r, i) => {
        if (r.status === 'fulfilled' && r.value.checksum !== checksum) {
          throw new GdpError('REPLICA_DIVERGED', `worker ${links[i].id} holds state ${r.value.checksum} after a '${update.kind}' update, the coordinator ${checksum}`);
        }
        if (r.status === 'rejected' && !isLost(r.reason)) throw r.reason;
      });
      if (this.active().length === 0) throw new GdpError('NO_WORKERS', 'model update: no worker is connected');
    });
  }

  verifyChecksums(): Promise<void> {
    return this.exclusive(() => this.checksumsOnce());
  }

  private async checksumsOnce(): Promise<void> {
    const links = this.active();
    const seq = this.seq++;
    const rs = await Promise.allSettled(links.map((l) => l.request(seq, 'checksum', [{ type: 'checksum_request', seq }])));
    const mine = this.replica.checksum();
    rs.forEach((r, i) => {
      if (r.status === 'fulfilled' && r.value.checksum !== mine) {
        throw new GdpError('REPLICA_DIVERGED', `worker ${links[i].id} has parameter checksum ${r.value.checksum} after step ${this.steps}, the coordinator ${mine}`);
      }
    });
  }

  /** Ends every worker's session and refuses new ones. */
  shutdown(reason: string): void {
    void this.reducer.close();
    // Not waiting for a running operation: on Ctrl-C the workers must stop now; their pending answers are dropped.
    this.closed = true;
    for (const l of [...this.links, ...this.joining]) {
      try {
        l.peer.send({ type: 'shutdown', reason });
      } catch {
        // Already gone.
      }
      l.peer.close('shutdown');
    }
  }
}
