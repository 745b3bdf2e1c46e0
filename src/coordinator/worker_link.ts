import { GdpError, codeFromRemote } from '../shared/errors.js';
import { BucketAssembler, type BucketDtype } from '../shared/protocol/buckets.js';
import type { Message, MessageOf } from '../shared/protocol/messages.js';
import type { Peer } from '../shared/protocol/peer.js';
import type { StepStats } from '../shared/train/replica.js';

export type Hello = MessageOf<'hello'>;

/** Answers the coordinator waits for, by the request type that asks for them. */
export interface Answers {
  ready: MessageOf<'ready'>;
  computed: { grad: Float32Array; stats: StepStats; ms: number };
  checksum: MessageOf<'checksum'>;
  evaluated: MessageOf<'evaluated'>;
  bn_stats: MessageOf<'bn_stats'>;
  ack: MessageOf<'ack'>;
}
type AnswerType = keyof Answers;

interface Pending {
  type: AnswerType;
  resolve: (v: never) => void;
  reject: (e: GdpError) => void;
  timer: NodeJS.Timeout;
  started: number;
  assembler?: BucketAssembler;
}

/**
 * The coordinator's view of one worker: request/answer bookkeeping over its Peer. Every answer is checked
 * against the request it answers (sequence number, type, bucket layout); anything else ends the connection.
 * When the connection ends, every pending request is rejected with WORKER_LOST.
 */
export class WorkerLink {
  private pending = new Map<number, Pending>();
  /** Set once the welcome state is loaded and verified and the worker takes shards. */
  active = false;
  /** Set when its 'ready' checked out: it becomes active at the next boundary between collective operations. */
  ready = false;
  lostReason?: string;
  /** Training samples of committed steps since the last BN synchronisation: the weight it must report. */
  samplesSinceSync = 0;
  /** Longest time it took to answer a compute or evaluate request, in ms. */
  private longestAnswerMs = 0;

  constructor(
    readonly peer: Peer,
    readonly hello: Hello,
    private readonly timeoutMs: number,
    private readonly heartbeatTimeoutMs: number,
  ) {
    peer.onMessage((m) => this.receive(m));
    peer.onClose((reason, err) => {
      this.lostReason = err ? `${err.code}: ${err.message}` : reason;
      for (const [, p] of this.pending) {
        clearTimeout(p.timer);
        p.reject(new GdpError('WORKER_LOST', `worker ${this.id} left: ${this.lostReason}`));
      }
      this.pending.clear();
    });
  }

  get id(): string {
    return this.hello.workerId;
  }
  /** Closed, or closing (failed for a bad message): either way out of every operation from now on. */
  get closed(): boolean {
    return this.peer.closed || this.peer.ending;
  }

  /**
   * How long this worker may be silent. Its tensor backend blocks its event loop while it computes, so while a
   * compute or evaluate request is outstanding the allowance is twice its longest such answer so far (at least the
   * heartbeat timeout); before its first one nothing says how long a shard takes (ResNet-50 on a CPU: minutes), so
   * the step timeout applies. Other requests (the welcome, BN statistics, checksums) leave its heartbeats flowing.
   */
  silenceLimitMs(): number {
    const computing = [...this.pending.values()].some((p) => p.type === 'computed' || p.type === 'evaluated');
    if (!computing) return this.heartbeatTimeoutMs;
    return Math.max(this.heartbeatTimeoutMs, this.longestAnswerMs > 0 ? 2 * this.longestAnswerMs : this.timeoutMs);
  }

  /** Sends `messages` and resolves with the answer of type `type` to request `seq`. */
  request<T extends AnswerType>(
    seq: number,
    type: T,
    messages: Message[],
    gradSize?: { size: number; bucketElems: number; allocate?: (n: number) => Float32Array; dtype?: BucketDtype },
  ): Promise<Answers[T]> {
    return new Promise<Answers[T]>((resolve, reject) => {
      if (this.closed) {
        reject(new GdpError('WORKER_LOST', `worker ${this.id} left: ${this.lostReason ?? 'closed'}`));
        return;
      }
      const timer = setTimeout(() => this.peer.fail(new GdpError('STEP_TIMEOUT', `no '${type}' answer to request ${seq} within ${this.timeoutMs} ms`)), this.timeoutMs);
      timer.unref();
      const assembler = gradSize ? new BucketAssembler(`gradient from worker ${this.id} for request ${seq}`, gradSize.size, gradSize.bucketElems, gradSize.allocate, gradSize.dtype) : undefined;
      this.pending.set(seq, { type, resolve: resolve as (v: never) => void, reject, timer, started: Date.now(), assembler });
      try {
        for (const m of messages) this.peer.send(m);
      } catch (err) {
        this.peer.fail(err instanceof GdpError ? err : new GdpError('INTERNAL', String(err)));
      }
    });
  }

  /** Sends without waiting for an answer (the ordered channel makes later requests wait behind it). */
  post(messages: Message[]): void {
    for (const m of messages) this.peer.send(m);
  }

  private take(seq: number, type: AnswerType): Pending {
    const p = this.pending.get(seq);
    if (!p || p.type !== type) throw new GdpError('PROTOCOL', `unexpected '${type}' for request ${seq}`);
    return p;
  }

  private settle(seq: number, p: Pending, value: unknown): void {
    clearTimeout(p.timer);
    this.pending.delete(seq);
    if (p.type === 'computed' || p.type === 'evaluated') this.longestAnswerMs = Math.max(this.longestAnswerMs, Date.now() - p.started);
    p.resolve(value as never);
  }

  private receive(m: Message): void {
    switch (m.type) {
      case 'bucket': {
        if (m.stream !== 'grad') throw new GdpError('PROTOCOL', `workers send only 'grad' buckets, got '${m.stream}'`);
        const p = this.take(m.seq, 'computed');
        p.assembler!.add(m.index, m.data);
        return;
      }
      case 'computed': {
        const p = this.take(m.seq, 'computed');
        this.settle(m.seq, p, { grad: p.assembler!.result(), stats: m.stats, ms: Date.now() - p.started });
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
      case 'error':
        throw new GdpError(codeFromRemote(m.code), `worker reported ${m.code}: ${m.message.replace(/\n\s*/g, ' / ')}`);
      default:
        throw new GdpError('PROTOCOL', `unexpected '${m.type}' message from a worker`);
    }
  }
}
