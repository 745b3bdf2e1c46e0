import { GdpError, codeFromRemote, endsRunWhenReported, type ErrorCode } from '../shared/errors.js';
import type { EncodedMessage } from '../shared/protocol/codec.js';
import type { Message, MessageOf, NonFiniteWhat } from '../shared/protocol/messages.js';
import type { Peer } from '../shared/protocol/peer.js';
import type { WireTensor } from '../shared/protocol/tensor.js';
import type { StepStats } from '../shared/train/replica.js';

export type Hello = MessageOf<'hello'>;

/**
 * Where a worker's gradient buckets go as they arrive, each checked against the expected layout and folded into the
 * step's reduction (StepReduction.sink). `end` runs at the worker's 'computed' and throws unless every bucket came.
 */
export interface GradientSink {
  /** The bucket stream it takes: 'grad' (a gradient sum; the default) or 'avg' (a ring rank's average). */
  stream?: 'grad' | 'avg';
  add(index: number, data: WireTensor): void;
  end(): void;
}

/** Answers the coordinator waits for, by the request type that asks for them. */
export interface Answers {
  ready: MessageOf<'ready'>;
  /**
   * `seq` is the compute request's: the 'average' and 'apply' of the step name it. The gradient (a ring rank 0's
   * average) went to the request's sink; a ring rank other than 0 uploads nothing.
   */
  computed: { seq: number; stats: StepStats; ms: number };
  checksum: MessageOf<'checksum'>;
  evaluated: MessageOf<'evaluated'>;
  bn_stats: MessageOf<'bn_stats'>;
  ack: MessageOf<'ack'>;
}
type AnswerType = keyof Answers;

/**
 * A worker's word that its shard's loss or gradient sum is not finite (it sent none of it): the request it answers
 * rejects with this, the connection stays open. Whether that makes the worker faulty or the run diverged depends on
 * the other workers' answers (Collectives).
 */
export class NonFiniteAnswer extends GdpError {
  constructor(
    readonly link: WorkerLink,
    readonly what: NonFiniteWhat,
  ) {
    super('NON_FINITE', `worker ${link.id}: its shard's ${NON_FINITE_NAMES[what]} not finite`);
  }
}
const NON_FINITE_NAMES: Record<NonFiniteWhat, string> = { loss: 'loss is', gradient: 'gradient is', bn_stats: 'BN running statistics are' };

/**
 * An error a worker reported about itself (an 'error' message, which ends its connection), with the worker's code
 * and its message (e.g. BAD_DATA naming the image that did not decode).
 */
export class WorkerReportedError extends GdpError {
  constructor(
    readonly workerId: string,
    code: ErrorCode,
    message: string,
  ) {
    super(code, `worker ${workerId}: ${message}`);
  }

  /** Whether it ends the run (endsRunWhenReported): a wrong input no retry and no other worker fixes. */
  get endsRun(): boolean {
    return endsRunWhenReported(this.code);
  }
}

/** Codes a worker may answer a request with ('failed') without its connection being closed. */
const REQUEST_FAILURES: ReadonlySet<string> = new Set(['BATCH_TOO_LARGE']);

interface Pending {
  type: AnswerType;
  resolve: (v: never) => void;
  reject: (e: GdpError) => void;
  timer: NodeJS.Timeout;
  started: number;
  gradient?: GradientSink;
  /** A compute request in a ring: the only request a 'ring_failed' may answer. */
  ring?: boolean;
}

/**
 * Hands out request numbers 1, 2, ... Links that share one (a cluster's) never use the same number twice, so a
 * step can give its compute requests to all workers one number, and then send every replica the same bytes for its
 * averaged buckets (encoded once, codec.ts' encodeOnce).
 */
export class RequestNumbers {
  private next = 1;
  take(): number {
    return this.next++;
  }
}

/**
 * The coordinator's view of one worker: a request layer over its Peer. It numbers its requests itself (the
 * welcome is request 0, since 'ready' carries no number; then increasing numbers from `numbers`, its own unless a
 * shared one is given) and pairs every answer with its request (sequence number, type, bucket layout); anything
 * else ends the connection. When the connection ends, every pending request is rejected with WORKER_LOST, or with
 * the worker's own error when it reported one that ends the run (`fatal`).
 */
export class WorkerLink {
  private pending = new Map<number, Pending>();
  /** Set once the welcome state is loaded and verified and the worker takes shards. */
  active = false;
  /** Set when its 'ready' checked out: it becomes active at the next boundary between collective operations. */
  ready = false;
  lostReason?: string;
  /** What the worker reported before its connection ended ('error'), if it did. */
  reported?: WorkerReportedError;
  /** Its ring listener's address, from its 'ready' (absent: it takes part in star steps only). */
  ringUrl?: string;
  /** Training samples of committed steps since the last BN synchronisation: the weight it must report. */
  samplesSinceSync = 0;
  /**
   * Longest time it took to answer each kind of long request, in ms. Per kind: an evaluation over its test shard can
   * take many times a training step, so a step's time says nothing about an evaluation's.
   */
  private longestAnswerMs = { computed: 0, evaluated: 0 };

  constructor(
    readonly peer: Peer,
    readonly hello: Hello,
    private readonly timeoutMs: number,
    private readonly heartbeatTimeoutMs: number,
    readonly numbers: RequestNumbers = new RequestNumbers(),
  ) {
    peer.onMessage((m) => this.receive(m));
    peer.onClose((reason, err) => {
      this.lostReason = err ? `${err.code}: ${err.message}` : reason;
      const fatal = this.fatal;
      for (const [, p] of this.pending) {
        clearTimeout(p.timer);
        p.reject(fatal ?? new GdpError('WORKER_LOST', `worker ${this.id} left: ${this.lostReason}`));
      }
      this.pending.clear();
    });
  }

  get id(): string {
    return this.hello.workerId;
  }
  /** The error the worker reported about itself, when it ends the run (bad data, config...); else undefined. */
  get fatal(): WorkerReportedError | undefined {
    return this.reported?.endsRun ? this.reported : undefined;
  }

  /** Closed, or closing (failed for a bad message): either way out of every operation from now on. */
  get closed(): boolean {
    return this.peer.closed || this.peer.ending;
  }

  /**
   * How long this worker may be silent, in ms. Its tensor backend blocks its event loop while it computes, so while
   * a compute or evaluate request is outstanding the allowance is twice its longest answer of that kind so far (at
   * least the heartbeat timeout); before its first answer of that kind nothing says how long it takes (ResNet-50 on a
   * CPU: minutes a shard), so the step timeout applies. Other requests (the welcome, BN statistics, checksums) leave
   * its heartbeats flowing.
   */
  silenceLimitMs(): number {
    let limit = this.heartbeatTimeoutMs;
    for (const p of this.pending.values()) {
      if (p.type !== 'computed' && p.type !== 'evaluated') continue;
      const longest = this.longestAnswerMs[p.type];
      limit = Math.max(limit, longest > 0 ? 2 * longest : this.timeoutMs);
    }
    return limit;
  }

  /**
   * Sends the messages `build` makes around a fresh sequence number and resolves with the answer of type `type` to
   * them; rejects with WORKER_LOST when the connection ends first (STEP_TIMEOUT closes it). A 'computed' answer's
   * gradient buckets go to the sink `gradient` gives for that number. `seq`: a number taken from this link's
   * `numbers` for several links' requests (a step's compute); throws INTERNAL if a request of it is pending.
   */
  request<T extends AnswerType>(
    type: T,
    build: (seq: number) => Message[],
    gradient?: (seq: number) => GradientSink,
    seq = type === 'ready' ? 0 : this.numbers.take(),
  ): Promise<Answers[T]> {
    if (this.pending.has(seq)) throw new GdpError('INTERNAL', `worker ${this.id}: request ${seq} is already pending`);
    return new Promise<Answers[T]>((resolve, reject) => {
      if (this.closed) {
        reject(new GdpError('WORKER_LOST', `worker ${this.id} left: ${this.lostReason ?? 'closed'}`));
        return;
      }
      const timer = setTimeout(
        () => this.peer.fail(new GdpError('STEP_TIMEOUT', `no '${type}' answer to request ${seq} within ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
      timer.unref();
      const p: Pending = { type, resolve: resolve as (v: never) => void, reject, timer, started: Date.now(), gradient: gradient?.(seq) };
      this.pending.set(seq, p);
      try {
        const messages = build(seq);
        p.ring = messages.some((m) => m.type === 'compute' && m.ring !== undefined);
        for (const m of messages) this.peer.send(m);
      } catch (err) {
        this.peer.fail(err instanceof GdpError ? err : new GdpError('INTERNAL', String(err)));
      }
    });
  }

  /**
   * Sends without waiting for an answer (the ordered channel makes later requests wait behind it). `seq` is the
   * request the messages follow up (the compute a step's 'apply' commits); by default a fresh number.
   */
  post(build: (seq: number) => (Message | EncodedMessage)[], seq = this.numbers.take()): void {
    for (const m of build(seq)) this.peer.send(m);
  }

  /** A fresh sequence number for messages sent later with `post` (a step's average to a worker without a shard). */
  reserveSeq(): number {
    return this.numbers.take();
  }

  private take(seq: number, type: AnswerType): Pending {
    const p = this.pending.get(seq);
    if (!p || p.type !== type) throw new GdpError('PROTOCOL', `unexpected '${type}' for request ${seq}`);
    return p;
  }

  private settle(seq: number, p: Pending, value: unknown): void {
    clearTimeout(p.timer);
    this.pending.delete(seq);
    if (p.type === 'computed' || p.type === 'evaluated') this.longestAnswerMs[p.type] = Math.max(this.longestAnswerMs[p.type], Date.now() - p.started);
    p.resolve(value as never);
  }

  private receive(m: Message): void {
    switch (m.type) {
      case 'bucket': {
        const p = this.take(m.seq, 'computed');
        const want = p.gradient ? (p.gradient.stream ?? 'grad') : 'no';
        if (m.stream !== want) throw new GdpError('PROTOCOL', `'${m.stream}' bucket for request ${m.seq}, which expects ${want} buckets`);
        p.gradient!.add(m.index, m.data);
        return;
      }
      case 'computed': {
        const p = this.take(m.seq, 'computed');
        p.gradient?.end();
        this.settle(m.seq, p, { seq: m.seq, stats: m.stats, ms: Date.now() - p.started });
        return;
      }
      case 'ring_failed': {
        // The worker stays connected: only this step's all-reduce failed (the ring is re-formed, the step redone).
        const p = this.take(m.seq, 'computed');
        if (!p.ring) throw new GdpError('PROTOCOL', `'ring_failed' for request ${m.seq}, which is not a ring step`);
        clearTimeout(p.timer);
        this.pending.delete(m.seq);
        p.reject(
          new GdpError('RING_FAILED', `worker ${this.id}: ring all-reduce of request ${m.seq} failed: ${m.code}: ${m.message.replace(/\n\s*/g, ' / ')}`),
        );
        return;
      }
      case 'checksum':
      case 'evaluated':
      case 'bn_stats':
      case 'ack':
        this.settle(m.seq, this.take(m.seq, m.type), m);
        return;
      case 'ready': {
        this.settle(0, this.take(0, 'ready'), m);
        return;
      }
      case 'non_finite':
      case 'failed': {
        const p = this.pending.get(m.seq);
        if (!p || (p.type !== 'computed' && p.type !== 'evaluated')) throw new GdpError('PROTOCOL', `unexpected '${m.type}' for request ${m.seq}`);
        if (m.type === 'failed' && !REQUEST_FAILURES.has(m.code))
          throw new GdpError('PROTOCOL', `'failed' answers may carry ${[...REQUEST_FAILURES].join(', ')}, got '${m.code}'`);
        clearTimeout(p.timer);
        this.pending.delete(m.seq);
        p.reject(
          m.type === 'non_finite' ? new NonFiniteAnswer(this, m.what) : new GdpError(codeFromRemote(m.code), `worker ${this.id}: ${oneLine(m.message)}`),
        );
        return;
      }
      case 'error': {
        // Kept before the connection closes: a request pending now, and the membership, learn the worker's own code.
        const code = codeFromRemote(m.code);
        this.reported = new WorkerReportedError(this.id, code, `${code === m.code ? '' : `${m.code}: `}${oneLine(m.message)}`);
        throw this.reported;
      }
      default:
        throw new GdpError('PROTOCOL', `unexpected '${m.type}' message from a worker`);
    }
  }
}

/** Text from a worker for one log line. */
const oneLine = (text: string): string => text.replace(/\n\s*/g, ' / ');
