import type { Config } from '../shared/config/schema.js';
import { sampleSeed } from '../shared/data/dataset.js';
import { GdpError } from '../shared/errors.js';
import { BucketAssembler, bucketRanges } from '../shared/protocol/buckets.js';
import type { Message } from '../shared/protocol/messages.js';
import { toWire } from '../shared/protocol/tensor.js';
import { addStats, emptyStats, type ParamSet, type Replica, type StepStats } from '../shared/train/replica.js';
import type { StepResult, StepSgd } from './collectives.js';
import { postAveragedBucket } from './gradient_reducer.js';
import { isLost, type Membership } from './membership.js';
import type { Answers, GradientSink, WorkerLink } from './worker_link.js';

/**
 * `dist.allreduce: "auto"` takes the ring from this many workers on. By bytes on the busiest link, one after the
 * other: the star's coordinator link carries N gradients in, then N averages out (2N gradient times); a ring step
 * 2(N-1)/N gradients each way at once, then rank 0's one upload (3 gradient times at most). Measured with
 * `node dist/bench/ring.js --emulate 1 --topology ring,star` (tc-limited 1 Gbit/s namespaces, ResNet-56 size):
 * ring 100 / 169 ms, star 198 / 457 ms at N = 2 / 4, so the ring pays from 2 workers on, its upload (~30 ms)
 * included. On loopback (no link limit) both are bound by CPU and equal within noise.
 */
export const RING_AUTO_MIN_WORKERS = 2;

/** Ring failures with the same workers after which the run falls back to the star (2 redos, then give up). */
const RING_ATTEMPTS = 3;

/** One worker's part of a step: its link and its samples (collectives.ts shardsOf; never empty). */
export interface RingShard {
  link: WorkerLink;
  idx: Int32Array;
}

export interface RingStepOptions {
  config: Config;
  replica: Replica;
  bucketElems: number;
  members: Membership;
  log: (line: string) => void;
  /** Closes the connection of a worker whose loss and accuracy sums cannot be right (Collectives.checkAnswers). */
  checkAnswers: (shards: RingShard[], answers: { stats: StepStats }[], what: string) => void;
}

/**
 * Data-parallel steps over a ring all-reduce among the workers (src/shared/collective): the coordinator keeps the
 * control plane (shards, the commit point, followers) and receives the average from rank 0 alone, so its traffic
 * is one gradient per step whatever N. Ranks follow the join order, the order the star sums in; the ring sums each
 * segment in a fixed rank order too, so the averages of the two agree to float32 rounding (not bit for bit) and
 * every replica applies identical bits. A new set of workers forms a new ring (a new formation id); a ring that
 * fails (a rank answers ring_failed) is re-formed and the step redone, like a lost worker; after RING_ATTEMPTS
 * failures with the same workers the run goes on with the star, and says why.
 */
export class RingSteps {
  /**
   * The current formation's id and its workers' links in rank order (links, not ids: a worker that reconnected
   * under the same id holds no ring); undefined: form a new one.
   */
  private formation = 0;
  private formed?: WorkerLink[];
  private failedKey?: string;
  private failures = 0;
  /** The all-reduce id: one per attempt, increasing, the same on every rank. */
  private op = 0;
  private fallback?: string;
  private noListener = false;
  private avgBuffer?: Float32Array;
  /** The assembler of the current attempt's rank-0 upload (its average). */
  private rank0Average?: BucketAssembler;

  constructor(private readonly o: RingStepOptions) {}

  /** Whether a step over these shards' workers goes through the ring (dist.allreduce, worker count, listeners). */
  wanted(shards: readonly RingShard[]): boolean {
    const mode = this.o.config.dist.allreduce;
    if (mode === 'star' || this.fallback !== undefined) return false;
    if (mode === 'auto' && shards.length < RING_AUTO_MIN_WORKERS) return false;
    const missing = shards.filter((s) => s.link.ringUrl === undefined);
    if (missing.length) {
      if (!this.noListener)
        this.o.log(`ring all-reduce: worker(s) ${missing.map((s) => s.link.id).join(', ')} have no ring listener (gdp-worker --listen); star steps meanwhile`);
      this.noListener = true;
      return false;
    }
    this.noListener = false;
    return true;
  }

  /**
   * One attempt at a ring step (the caller counts it and checks checksums). Throws WORKER_LOST, which redoes the
   * step, when a worker was lost or the ring failed; the coordinator's replica changes only after every rank's
   * answer checked out, as in the star.
   */
  async stepOnce(shards: RingShard[], set: ParamSet, sgd: StepSgd, steps: number): Promise<StepResult> {
    const { replica, config, members } = this.o;
    const layout = replica.layout(set);
    const what = `step ${steps + 1}`;
    const key = shards.map((s) => s.link.id).join(' -> ');
    const same = this.formed?.length === shards.length && shards.every((s, i) => s.link === this.formed![i]);
    if (!same) {
      this.formation++;
      this.formed = shards.map((s) => s.link);
      this.o.log(`ring ${this.formation} formed for ${what}: ${key}`);
    }
    const ring = this.formation;
    const op = this.op++;
    const size = shards.length;
    const count = shards.reduce((a, s) => a + s.idx.length, 0);
    const seed = sampleSeed(config.base.seed, steps);
    const rs = await Promise.allSettled(
      shards.map(({ link, idx }, rank) => {
        const prev = shards[(rank + size - 1) % size].link.ringUrl!;
        const compute: Message = { type: 'compute', seq: 0, set, indices: toWire(idx), seed, ring: { ring, rank, size, prev, op, count } };
        return link.request('computed', (seq) => [{ ...compute, seq }], rank === 0 ? (seq) => this.averageSink(link, seq, layout.size) : undefined);
      }),
    );
    this.settleFailures(rs, key, ring, what);
    const answers = rs.map((r) => (r as PromiseFulfilledResult<Answers['computed']>).value);
    this.o.checkAnswers(shards, answers, `answer to ${what}`);
    const stats = answers.reduce((acc, a) => addStats(acc, a.stats), emptyStats());
    // Rank 0's sink checked at its 'computed' that every bucket of the average came.
    const avg = this.rank0Average!.result();
    // The commit point, as in the star step.
    const gone = shards.find((s) => s.link.closed);
    if (gone) throw new GdpError('WORKER_LOST', `worker ${gone.link.id} left before ${what} was applied`);
    this.failures = 0;
    const held = new Map(shards.map((s, i) => [s.link, answers[i].seq]));
    const others: WorkerLink[] = [];
    for (const link of [...members.active(), ...members.followers()]) {
      const seq = held.get(link);
      if (seq !== undefined) link.post((q) => [{ type: 'apply', seq: q, set, sgd, held: true }], seq);
      else others.push(link);
    }
    this.sendAverage(others, avg, set, sgd);
    for (const { link, idx } of shards) link.samplesSinceSync += idx.length;
    replica.applyGradient(layout, avg, sgd);
    return { avgGrad: avg, layout, stats, perWorker: shards.map((s, i) => ({ id: s.link.id, count: s.idx.length, ms: answers[i].ms })) };
  }

  /**
   * Throws for a failed attempt: a lost worker as it is (membership redoes the step without it); other errors as
   * they are (they stop the run, as in the star); ring failures as WORKER_LOST after dropping the formation, or,
   * past RING_ATTEMPTS with the same workers, after switching the run to the star.
   */
  private settleFailures(rs: PromiseSettledResult<unknown>[], key: string, ring: number, what: string): void {
    const errs = rs.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as unknown);
    if (!errs.length) return;
    this.formed = undefined;
    const lost = errs.find(isLost);
    if (lost) throw lost;
    const other = errs.find((e) => !(e instanceof GdpError && e.code === 'RING_FAILED'));
    if (other) throw other;
    if (this.failedKey !== key) this.failures = 0;
    this.failedKey = key;
    this.failures++;
    const first = errs[0] as GdpError;
    if (this.failures >= RING_ATTEMPTS) {
      this.fallback = `ring all-reduce failed ${this.failures} times in a row with the same workers (${key}); last: ${first.message}`;
      this.o.log(`${this.fallback}: star all-reduce for the rest of the run`);
    }
    throw new GdpError('WORKER_LOST', `ring ${ring} failed at ${what} (${first.message})${this.fallback ? '' : '; re-forming it'}`);
  }

  /**
   * Followers (and active workers without samples this step) receive the average as in a star step: its header, its
   * buckets, then the commit. Links that share their numbering (the cluster's) get one number, so each bucket is
   * encoded once and the same frame goes to all of them (postAveragedBucket), not once per link.
   */
  private sendAverage(links: WorkerLink[], avg: Float32Array, set: ParamSet, sgd: StepSgd): void {
    if (!links.length) return;
    const shared = links.every((l) => l.numbers === links[0].numbers) ? links[0].numbers.take() : undefined;
    const seqs = new Map(links.map((l) => [l, shared ?? l.reserveSeq()]));
    for (const [link, seq] of seqs) link.post(() => [{ type: 'average', seq, set }], seq);
    bucketRanges(avg.length, this.o.bucketElems).forEach(([a, b], index) => postAveragedBucket(seqs, index, avg.subarray(a, b)));
    for (const [link, seq] of seqs) link.post(() => [{ type: 'apply', seq, set, sgd }], seq);
  }

  /** Rank 0's upload of the average, float32 whatever dist.grad_dtype: the coordinator applies exactly those bits. */
  private averageSink(link: WorkerLink, seq: number, size: number): GradientSink {
    const a = new BucketAssembler(`ring average from worker ${link.id} for request ${seq}`, size, this.o.bucketElems, (n) => {
      if (this.avgBuffer?.length !== n) this.avgBuffer = new Float32Array(n);
      return this.avgBuffer;
    });
    this.rank0Average = a;
    return { stream: 'avg', add: (i, d) => a.add(i, d), end: () => void a.result() };
  }
}
