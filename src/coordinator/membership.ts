import type { Config } from '../shared/config/schema.js';
import { GdpError } from '../shared/errors.js';
import { splitBuckets } from '../shared/protocol/buckets.js';
import type { Message } from '../shared/protocol/messages.js';
import { Peer } from '../shared/protocol/peer.js';
import type { Transport } from '../shared/protocol/transport.js';
import { PROTOCOL_VERSION } from '../shared/protocol/version.js';
import { flattenState } from '../shared/train/model_state.js';
import type { Replica } from '../shared/train/replica.js';
import type { RunObserver } from './run_observer.js';
import { RequestNumbers, WorkerLink, type Hello, type WorkerReportedError } from './worker_link.js';

export interface MembershipOptions {
  config: Config;
  /** The coordinator's replica: a joining worker is welcomed with its state. */
  replica: Replica;
  bucketElems: number;
  log: (line: string) => void;
  /** With fewer active workers than this (default 1), operations pause until enough have joined. */
  minWorkers?: number;
  /**
   * How long a pause may last before the operation fails with NO_WORKERS (default: indefinitely). In-process
   * clusters, where no worker can come back, use 0.
   */
  pauseMs?: number;
  /** dataFingerprint of the coordinator's dataset: a worker that loaded other data is refused when it is ready. */
  dataFingerprint?: string;
  /** Data-parallel steps applied so far: log lines say from which step a worker takes part. */
  steps: () => number;
  /** Told of every worker that joins or is lost (the live dashboard). */
  observer?: Pick<RunObserver, 'workerJoined' | 'workerLost'>;
}

export function isLost(err: unknown): boolean {
  return err instanceof GdpError && err.code === 'WORKER_LOST';
}

/**
 * Which workers take part in the collective operations, and when. Workers go through three sets. `joining`: said
 * hello, wait for the next boundary between collective operations. `following`: welcomed there with the state of
 * that moment; they receive every later update (averaged gradients, model updates, BN statistics) but no shards, so
 * loading data on a slow machine never holds up training. `active`: their 'ready' checked out; they take shards from
 * the next operation on, in join order (which fixes the reduction order). Operations run one at a time
 * (`exclusive`); each starts at a boundary, where waiting workers are admitted. A worker that reports an error no
 * retry fixes (bad data, config: WorkerLink.fatal) ends the run: every operation and wait from then on throws it.
 */
export class Membership {
  private readonly links: WorkerLink[] = [];
  private readonly joining: WorkerLink[] = [];
  private readonly following: WorkerLink[] = [];
  private queue: Promise<unknown> = Promise.resolve();
  private waiters: (() => void)[] = [];
  private closed = false;
  /** The first error a worker reported that ends the run. */
  private fatal?: WorkerReportedError;
  /** One numbering for every worker's requests: a step's messages then carry the same number to all of them. */
  private readonly numbers = new RequestNumbers();
  /** Called while paused for workers; may throw to give up (e.g. every local worker process exited). */
  pauseCheck?: () => void;

  constructor(private readonly o: MembershipOptions) {}

  /** True once any worker said hello (the coordinator's state may then no longer change outside an operation). */
  get started(): boolean {
    return this.links.length + this.joining.length + this.following.length > 0;
  }

  /** The active workers in join order; links whose connection ended are dropped first. */
  active(): WorkerLink[] {
    for (let i = this.links.length - 1; i >= 0; i--) if (this.links[i].closed) this.links.splice(i, 1);
    return [...this.links];
  }

  /** Welcomed workers still loading their data: they follow every state change but take no shards. */
  followers(): WorkerLink[] {
    for (let i = this.following.length - 1; i >= 0; i--) if (this.following[i].closed) this.following.splice(i, 1);
    return [...this.following];
  }

  /** Runs collective operations one at a time; each starts at a boundary, where waiting workers are admitted. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const start = () => {
      this.throwIfFatal();
      this.admitPending();
      return fn();
    };
    const run = this.queue.then(start, start);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Runs `fn` over the active workers; if a worker is lost meanwhile (left, stalled, or closed for a bad message),
   * runs it again over those that remain. `fn` must apply nothing before it succeeds, so a retry is always safe.
   */
  async withWorkers<T>(what: string, fn: (links: WorkerLink[]) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      // A redo starts at a boundary too (nothing was applied): workers that became ready meanwhile take part.
      if (attempt > 0) this.admitPending();
      await this.untilEnoughWorkers(what);
      try {
        return await fn(this.active());
      } catch (err) {
        if (!isLost(err)) throw err;
        // A worker's own error that no redo fixes, while another was lost.
        this.throwIfFatal();
        // Workers leaving because the run is ending: nothing to redo.
        if (this.closed) throw new GdpError('SHUTTING_DOWN', `${what}: the coordinator is shutting down`);
        this.o.log(`${what}: ${(err as Error).message}; redoing it with ${this.active().length} worker(s)`);
      }
    }
  }

  /** A new connection: waits for its hello, then admits it between collective operations. */
  accept(transport: Transport): void {
    const d = this.o.config.dist;
    let link: WorkerLink | undefined;
    const peer = new Peer(transport, {
      name: `worker at ${transport.remote}`,
      heartbeatMs: d.heartbeat_ms,
      timeoutMs: () => link?.silenceLimitMs() ?? d.heartbeat_timeout_ms,
      log: this.o.log,
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
        this.o.log(`refused worker ${m.workerId} from ${transport.remote}: ${refusal.reason}`);
        peer.send({ type: 'refuse', ...refusal });
        peer.close('refused');
        return;
      }
      const l = new WorkerLink(peer, m, d.step_timeout_ms, d.heartbeat_timeout_ms, this.numbers);
      link = l;
      peer.onClose(() => {
        if (this.closed) return;
        const fatal = l.fatal;
        if (fatal && !this.fatal) {
          this.fatal = fatal;
          this.o.log(`worker ${l.id} reported ${fatal.code}, which no retry and no other worker fixes: the run stops`);
        }
        // Step numbers: the worker contributes nothing to step `steps + 1` (a step it was computing is redone).
        if (l.active) {
          this.o.log(`worker ${l.id} lost at step ${this.o.steps() + 1} (${l.lostReason}); ${this.active().length} worker(s) remain`);
          this.o.observer?.workerLost(l.id, this.o.steps() + 1, l.lostReason ?? 'connection closed');
        } else this.o.log(`worker ${l.id} left before taking shards (${l.lostReason})`);
        this.wake();
      });
      this.joining.push(l);
      this.wake();
      // When no operation is running, this one admits it now.
      this.admitSoon();
    });
  }

  private refusal(h: Hello): { code: string; reason: string } | undefined {
    if (this.closed) return { code: 'SHUTTING_DOWN', reason: 'the coordinator is shutting down' };
    if (h.protocol !== PROTOCOL_VERSION) {
      return {
        code: 'PROTOCOL_VERSION',
        reason: `worker speaks protocol version ${h.protocol}, this coordinator ${PROTOCOL_VERSION}; install the same gdp version on both`,
      };
    }
    if ([...this.links, ...this.following, ...this.joining].some((l) => l.id === h.workerId && !l.closed)) {
      return { code: 'DUPLICATE_WORKER', reason: `a worker with id '${h.workerId}' is already connected` };
    }
    return undefined;
  }

  /**
   * At a boundary (holding the operation lock): activates followers whose state checked out, and welcomes waiting
   * workers with the current state (update log, every slot, momentum).
   */
  private admitPending(): void {
    for (const link of this.followers()) {
      if (!link.ready) continue;
      this.following.splice(this.following.indexOf(link), 1);
      link.active = true;
      this.links.push(link);
      const h = link.hello;
      this.o.log(
        `worker ${h.workerId} joined (${h.host} pid ${h.pid}, ${h.backend}${h.gpu !== null ? `, GPU ${h.gpu}` : ''}); ${this.active().length} active from step ${this.o.steps() + 1}`,
      );
      this.o.observer?.workerJoined(h, this.o.steps());
    }
    const batch = this.joining.splice(0).filter((l) => !l.closed);
    if (!batch.length) return;
    const welcome = this.welcome();
    const checksum = this.o.replica.checksum('state');
    for (const link of batch) {
      this.following.push(link);
      link
        .request('ready', () => welcome)
        .then(
          (ready) => {
            if (ready.checksum !== checksum) {
              link.peer.fail(new GdpError('REPLICA_DIVERGED', `worker ${link.id} loaded state with checksum ${ready.checksum}, expected ${checksum}`));
              return;
            }
            const mine = this.o.dataFingerprint;
            if (mine !== undefined && ready.data !== mine) {
              link.peer.fail(
                new GdpError(
                  'BAD_DATA',
                  `worker ${link.id} loaded a different dataset (${ready.data}) than the coordinator (${mine}): check --data-dir on ${link.hello.host}`,
                ),
              );
              return;
            }
            link.ready = true;
            link.ringUrl = ready.ring;
            this.wake();
            this.admitSoon();
          },
          () => undefined,
        );
    }
  }

  /** The welcome and its 'state' buckets: the replica's snapshot, slots then momentum in one flat vector. */
  private welcome(): Message[] {
    const state = this.o.replica.snapshot();
    const { entries, flat } = flattenState([...state.slots, ...state.momentum]);
    const head: Message = {
      type: 'welcome',
      protocol: PROTOCOL_VERSION,
      config: this.o.config as unknown as Record<string, unknown>,
      updates: [...state.updates],
      slots: entries.slice(0, state.slots.length),
      momentum: entries.slice(state.slots.length),
      bucketElems: this.o.bucketElems,
    };
    return [head, ...splitBuckets(flat, this.o.bucketElems).map((data, index): Message => ({ type: 'bucket', stream: 'state', seq: 0, index, data }))];
  }

  /** Admits waiting workers at the next boundary: at once when no operation runs (after a fatal error, none). */
  private admitSoon(): void {
    this.exclusive(async () => undefined).catch(() => undefined);
  }

  /** Throws the error a worker reported that ends the run, if one did. */
  private throwIfFatal(): void {
    if (this.fatal) throw this.fatal;
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

  /**
   * Resolves once `n` workers are active; `check` may throw to give up early (e.g. local workers died). Throws
   * WORKERS_MISSING after `timeoutMs`, and a worker's error that ends the run (its code) as soon as it arrives.
   */
  async waitForWorkers(n: number, timeoutMs = Infinity, check?: () => void): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.active().length < n) {
      this.throwIfFatal();
      check?.();
      const left = deadline - Date.now();
      if (left <= 0) throw new GdpError('WORKERS_MISSING', `only ${this.active().length} of ${n} workers joined within ${timeoutMs} ms`);
      await this.changed(Math.min(left, 500));
    }
  }

  /**
   * Holding the lock at a boundary: returns at once with enough active workers, else pauses (logged) until enough
   * have joined. Joining workers are admitted here, since no other operation can run meanwhile. Throws NO_WORKERS
   * when the pause outlasts `pauseMs`, SHUTTING_DOWN after shutdown(), a worker's error that ends the run (its code).
   */
  async untilEnoughWorkers(what: string): Promise<void> {
    this.throwIfFatal();
    const min = Math.max(1, this.o.minWorkers ?? 1);
    if (this.active().length >= min) return;
    const pauseMs = this.o.pauseMs ?? Infinity;
    if (pauseMs <= 0) throw new GdpError('NO_WORKERS', `${what}: ${this.active().length} worker(s) connected, at least ${min} needed`);
    const started = Date.now();
    this.o.log(`paused before ${what}: ${this.active().length} worker(s) active, at least ${min} needed (--min-workers); waiting for workers to join`);
    while (this.active().length < min) {
      if (this.closed) throw new GdpError('SHUTTING_DOWN', `${what}: the coordinator is shutting down`);
      this.throwIfFatal();
      this.pauseCheck?.();
      if (Date.now() - started > pauseMs) throw new GdpError('NO_WORKERS', `${what}: fewer than ${min} worker(s) for ${pauseMs} ms`);
      await this.changed(500);
      this.admitPending();
    }
    this.o.log(`resumed ${what} with ${this.active().length} worker(s) after ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }

  /** Ends every worker's session and refuses new ones. */
  shutdown(reason: string): void {
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
