import type { Config } from '../shared/config/schema.js';
import type { DatasetPair } from '../shared/data/dataset.js';
import { GdpError } from '../shared/errors.js';
import { BucketAssembler, bucketRanges } from '../shared/protocol/buckets.js';
import type { Message, MessageOf } from '../shared/protocol/messages.js';
import { asGdpError } from '../shared/protocol/peer.js';
import { firstNonFinite, int32FromWire, toWire, toWireFloat16 } from '../shared/protocol/tensor.js';
import { timelineEvent } from '../shared/timeline.js';
import type { FlatLayout, Replica, ShapedTensor } from '../shared/train/replica.js';
import type { RingInfo, RingMember } from './ring_member.js';

/** What a welcomed worker holds: the run's config, its replica and its data. */
export interface Welcomed {
  config: Config;
  replica: Replica;
  data: DatasetPair;
}

/** What the worker's step needs from its session. */
export interface StepContext {
  send(m: Message): void;
  /** The welcomed state; throws PROTOCOL before the welcome. */
  need(): Welcomed;
  /** Values per bucket (the welcome's bucketElems). */
  bucketElems(): number;
  /** The ring listener, when the run may use the ring. */
  ringMember(): RingMember | undefined;
  /**
   * Runs a shard's memory check against the replica; a shard too big is answered with 'failed' BATCH_TOO_LARGE and
   * false returned.
   */
  fits(seq: number, samples: number): boolean;
  log(line: string): void;
}

/** A computed shard whose step is not applied yet: if the step is redone without it, its side effects are undone. */
interface Uncommitted {
  seq: number;
  /** BN running statistics before the shard's forward pass. */
  runningStats: ShapedTensor[];
  samples: number;
}

/** A step's averaged gradient, arriving or held until the step's 'apply' commits it. */
interface HeldAverage {
  seq: number;
  set: MessageOf<'average'>['set'];
  layout: FlatLayout;
  assembler: BucketAssembler;
}

type Gradients = ReturnType<Replica['gradients']>;

/**
 * The worker's part of a data-parallel step: computes its shard's gradient sum, uploads it (star) or all-reduces
 * it with the other ranks (ring), holds the average until the step's 'apply' (the coordinator's commit point) and
 * applies it; a step the coordinator dropped has its shard's BN statistics undone.
 */
export class WorkerStep {
  private held?: HeldAverage;
  private uncommitted?: Uncommitted;
  /** Training samples since the last BN synchronisation: this worker's weight in the average. */
  samplesSinceSync = 0;
  private avgBuffer?: Float32Array;
  /** The ring's average for the compute request `seq`, applied when its 'apply' arrives (held). */
  private ringHeld?: { seq: number; avg: Float32Array };
  /**
   * The star step's gradient vector, reused: it is encoded into the upload frames before compute() returns. A
   * full-size array per step would be garbage that brings V8's major collections (and their marking threads, which
   * take the core another worker computes on) sooner.
   */
  private gradBuffer?: Float32Array;

  constructor(private readonly c: StepContext) {}

  /**
   * Called before every message is handled. After a step's compute come only its 'average', 'avg' buckets and
   * 'apply'; anything else means the step was dropped (another worker was lost) and is being redone: this shard's
   * effects on the BN statistics are undone, and averaged buckets already held are discarded.
   */
  before(m: Message): void {
    if (this.uncommitted && m.type !== 'apply' && m.type !== 'bucket' && m.type !== 'average') this.rollback();
    if (this.held && !((m.type === 'apply' || (m.type === 'bucket' && m.stream === 'avg')) && m.seq === this.held.seq)) this.held = undefined;
  }

  /** True when an 'avg' bucket of request `seq` is expected. */
  holds(seq: number): boolean {
    return this.held?.seq === seq;
  }

  /** A step's averaged gradient follows in 'avg' buckets: held until its 'apply' (the coordinator's commit). */
  average(m: MessageOf<'average'>): void {
    // The average of another step than the one this worker computed: that step was dropped.
    if (this.uncommitted && this.uncommitted.seq !== m.seq) this.rollback();
    const layout = this.c.need().replica.layout(m.set);
    // One buffer reused across steps: applyGradient consumes the average before the next one arrives.
    const assembler = new BucketAssembler(`averaged gradient of request ${m.seq}`, layout.size, this.c.bucketElems(), (n) => {
      if (this.avgBuffer?.length !== n) this.avgBuffer = new Float32Array(n);
      return this.avgBuffer;
    });
    this.held = { seq: m.seq, set: m.set, layout, assembler };
  }

  /** One 'avg' bucket of the held average (holds(m.seq) is true). */
  averageBucket(m: MessageOf<'bucket'>): void {
    this.held!.assembler.add(m.index, m.data);
    timelineEvent('worker: averaged bucket received');
  }

  /** The step is committed: the averaged gradient held for it (streamed by the coordinator, or the ring's) is applied. */
  apply(m: MessageOf<'apply'>): void {
    if (m.held) return this.applyHeld(m);
    const held = this.held;
    this.held = undefined;
    if (held?.seq !== m.seq) throw new GdpError('PROTOCOL', `'apply' ${m.seq} without the average of that step`);
    if (held.set !== m.set) throw new GdpError('PROTOCOL', `'apply' ${m.seq} of '${m.set}' parameters, its average was of '${held.set}'`);
    if (this.uncommitted) {
      if (this.uncommitted.seq !== m.seq) this.rollback();
      this.uncommitted = undefined;
    }
    timelineEvent('worker: apply received');
    this.c.need().replica.applyGradient(held.layout, held.assembler.result(), m.sgd);
    timelineEvent('worker: update applied');
  }

  /**
   * The gradient sum of a compute request's shard, or undefined when this worker answered the request itself: a
   * shard too big for its backend's memory ('failed' BATCH_TOO_LARGE), or, with `reportNonFinite`, a loss, gradient
   * or updated BN statistic that is not finite ('non_finite': nothing non-finite is sent, nor kept as the state of a
   * step that may be committed, so the coordinator tells a diverged run (every worker) from a faulty worker). A ring
   * step passes false: its all-reduce refuses non-finite values itself and the ring fails. With `reuse` the vector
   * is this worker's reused buffer, valid until the next shard.
   */
  private async shardGradient(m: MessageOf<'compute'>, reportNonFinite: boolean, reuse: boolean): Promise<Gradients | undefined> {
    const { replica, data } = this.c.need();
    const indices = int32FromWire(m.indices, 'compute indices');
    if (!this.c.fits(m.seq, indices.length)) return undefined;
    const batch = await data.train.load(indices, { augment: true, seed: m.seed });
    const runningStats = replica.runningStats();
    const layout = replica.layout(m.set);
    if (reuse && this.gradBuffer?.length !== layout.size) this.gradBuffer = new Float32Array(layout.size);
    const out = replica.gradients(batch, layout, reuse ? this.gradBuffer : undefined);
    timelineEvent('worker: gradient computed');
    this.uncommitted = { seq: m.seq, runningStats, samples: batch.n };
    this.samplesSinceSync += batch.n;
    if (!reportNonFinite) return out;
    const nonFinite = !Number.isFinite(out.stats.lossSum)
      ? 'loss'
      : firstNonFinite(out.grad) >= 0
        ? 'gradient'
        : replica.runningStats().some((st) => firstNonFinite(st.values) >= 0)
          ? 'bn_stats'
          : undefined;
    if (nonFinite) {
      this.c.send({ type: 'non_finite', seq: m.seq, what: nonFinite });
      return undefined;
    }
    return out;
  }

  async compute(m: MessageOf<'compute'>): Promise<void> {
    if (m.ring) return this.computeRing(m, m.ring);
    timelineEvent('worker: compute received');
    const { config } = this.c.need();
    const r = await this.shardGradient(m, true, true);
    if (!r) return;
    const { grad, stats } = r;
    // Sent bucket by bucket, each encoded just before it goes (float16 halves the upload, dist.grad_dtype).
    const dtype = config.dist.grad_dtype;
    bucketRanges(grad.length, this.c.bucketElems()).forEach(([s, e], index) => {
      const data = dtype === 'float16' ? toWireFloat16(grad.subarray(s, e)) : toWire(grad.subarray(s, e));
      this.c.send({ type: 'bucket', stream: 'grad', seq: m.seq, index, data });
    });
    this.c.send({ type: 'computed', seq: m.seq, stats });
    timelineEvent('worker: gradient sent');
  }

  /**
   * A ring step: the shard's gradient sum is all-reduced with the other ranks and the average held until 'apply';
   * rank 0 uploads it (the coordinator's replica needs it, and one upload keeps its traffic constant in N). A ring
   * failure is answered with 'ring_failed' (the connection stays: the coordinator re-forms the ring and redoes the
   * step); a failure to compute ends the session as in a star step.
   */
  private async computeRing(m: MessageOf<'compute'>, info: RingInfo): Promise<void> {
    const ringMember = this.c.ringMember();
    if (!ringMember) throw new GdpError('PROTOCOL', `'compute' ${m.seq} in a ring, but this worker has no ring listener`);
    // The ring holds its average until 'apply', and may reduce in place: a fresh vector.
    const r = await this.shardGradient(m, false, false);
    if (!r) return;
    const { grad, stats } = r;
    let avg: Float32Array;
    try {
      avg = await ringMember.allreduce(info, grad);
    } catch (err) {
      const e = asGdpError(err);
      this.c.log(`ring ${info.ring} rank ${info.rank} of ${info.size}: all-reduce of request ${m.seq} failed: ${e.code}: ${e.message}`);
      // The message schema bounds the text and refuses control characters (a peer's words may end up in it).
      this.c.send({ type: 'ring_failed', seq: m.seq, code: e.code, message: e.message.replace(/[\x00-\x09\x0b-\x1f\x7f]/g, ' ').slice(0, 10000) });
      return;
    }
    this.ringHeld = { seq: m.seq, avg };
    if (info.rank === 0) {
      // float32 always: the coordinator's replica must apply the very bits the ranks apply.
      bucketRanges(avg.length, this.c.bucketElems()).forEach(([s, e], index) =>
        this.c.send({ type: 'bucket', stream: 'avg', seq: m.seq, index, data: toWire(avg.subarray(s, e)) }),
      );
    }
    this.c.send({ type: 'computed', seq: m.seq, stats });
  }

  /** Commits a ring step: the average held from the all-reduce of request `m.seq`. */
  private applyHeld(m: MessageOf<'apply'>): void {
    const h = this.ringHeld;
    if (!h || h.seq !== m.seq) throw new GdpError('PROTOCOL', `'apply' ${m.seq} of a held average, but ${h ? `request ${h.seq}'s` : 'none'} is held`);
    const { replica } = this.c.need();
    const layout = replica.layout(m.set);
    if (layout.size !== h.avg.length)
      throw new GdpError('PROTOCOL', `'apply' ${m.seq} of '${m.set}' (${layout.size} values), the held average has ${h.avg.length}`);
    this.ringHeld = undefined;
    this.uncommitted = undefined;
    replica.applyGradient(layout, h.avg, m.sgd);
  }

  /** Undoes the BN statistics and sample count of a shard whose step was dropped. */
  private rollback(): void {
    const u = this.uncommitted!;
    this.uncommitted = undefined;
    this.ringHeld = undefined;
    this.c.need().replica.setRunningStats(u.runningStats);
    this.samplesSinceSync -= u.samples;
    this.c.log(`step of request ${u.seq} was dropped by the coordinator; its BN statistics are undone`);
  }
}
