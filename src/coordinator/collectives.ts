import type { Config } from '../shared/config/schema.js';
import { sampleSeed } from '../shared/data/dataset.js';
import { GdpError } from '../shared/errors.js';
import type { Message } from '../shared/protocol/messages.js';
import type { ModelUpdate } from '../shared/protocol/model_update.js';
import { asGdpError } from '../shared/protocol/peer.js';
import { firstNonFinite, namedArraysFromWire, namedArraysToWire, toWire } from '../shared/protocol/tensor.js';
import { timelineEvent } from '../shared/timeline.js';
import type { ChecksumScope } from '../shared/train/model_state.js';
import { addStats, emptyStats, type FlatLayout, type ParamSet, type Replica, type StepSgdOptions, type StepStats } from '../shared/train/replica.js';
import { DivergedError, type DivergenceSite } from './divergence.js';
import { postAveragedBucket, type GradientReducer } from './gradient_reducer.js';
import { isLost, type Membership } from './membership.js';
import { RingSteps } from './ring_step.js';
import { NonFiniteAnswer, type Answers, type WorkerLink } from './worker_link.js';

export type StepSgd = StepSgdOptions;

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

/** Sample ranges [start, end) of a contiguous split of n samples over k workers; sizes differ by at most 1. */
export function shardRanges(n: number, k: number): [number, number][] {
  const out: [number, number][] = [];
  for (let r = 0; r < k; r++) out.push([Math.floor((r * n) / k), Math.floor(((r + 1) * n) / k)]);
  return out;
}

/** One worker's part of a sharded operation: its link and its samples (never empty). */
interface Shard {
  link: WorkerLink;
  idx: Int32Array;
}

function shardsOf(indices: Int32Array, links: readonly WorkerLink[]): Shard[] {
  return shardRanges(indices.length, links.length)
    .map(([s, e], r) => ({ link: links[r], idx: indices.subarray(s, e) }))
    .filter((s) => s.idx.length > 0);
}

/** Checks a worker's loss and accuracy sums against the samples it was given. */
function checkStats(s: StepStats, samples: number, what: string): void {
  if (s.count !== samples) throw new GdpError('BAD_ANSWER', `${what}: reports ${s.count} samples, it was given ${samples}`);
  if (s.correct1 > s.correct5 || s.correct5 > s.count)
    throw new GdpError('BAD_ANSWER', `${what}: top-1 ${s.correct1} / top-5 ${s.correct5} correct of ${s.count} is impossible`);
  if (s.lossSum < 0) throw new GdpError('BAD_ANSWER', `${what}: negative loss sum ${s.lossSum}`);
}

/**
 * Awaits every answer of a request sent to several workers (so no request is left half-read before a retry), then
 * throws what decides the operation, in this order: a failure no retry fixes (BATCH_TOO_LARGE: re-sending the shard
 * would only make it bigger; a worker's own error that ends the run, e.g. BAD_DATA naming an image); DIVERGED at `site` when every worker answered that its result (loss, gradient, BN
 * statistics) is non-finite;
 * the first WORKER_LOST (redone, blaming no one); WORKER_LOST after closing the connections of the workers that
 * answered non-finite while others did not (faulty workers: the others redo it).
 */
async function all<T>(ps: Promise<T>[], site?: DivergenceSite): Promise<T[]> {
  const rs = await Promise.allSettled(ps);
  const failures = rs.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
  if (!failures.length) return rs.map((r) => (r as PromiseFulfilledResult<T>).value);
  const nonFinite = failures.filter((e): e is NonFiniteAnswer => e instanceof NonFiniteAnswer);
  const fatal = failures.find((e) => !isLost(e) && !nonFinite.includes(e as NonFiniteAnswer));
  if (fatal) throw fatal;
  if (site && nonFinite.length === rs.length) {
    throw new DivergedError(site, `non-finite on every worker (${nonFinite.map((e) => `${e.link.id}: ${e.what}`).join(', ')})`);
  }
  const lost = failures.find(isLost);
  if (lost) throw lost;
  for (const e of nonFinite) reject(e.link, e);
  throw new GdpError('WORKER_LOST', `${nonFinite.map((e) => e.message).join('; ')}, the others' are finite`);
}

/**
 * Throws DIVERGED unless the average and the summed loss of a step are finite: every worker's were (a worker sends
 * nothing non-finite), but their float32 sum can still overflow.
 */
function checkFiniteResult(avg: Float32Array, stats: StepStats, step: number): void {
  if (!Number.isFinite(stats.lossSum)) throw new DivergedError({ step }, `the summed loss of the workers is ${stats.lossSum}`);
  const i = firstNonFinite(avg);
  if (i >= 0) throw new DivergedError({ step }, `the averaged gradient holds ${avg[i]} at element ${i}`);
}

/** Closes a worker's connection for bad data and returns the error that makes the operation retry without it. */
function reject(link: WorkerLink, err: GdpError): GdpError {
  link.peer.fail(err);
  return new GdpError('WORKER_LOST', `worker ${link.id}: ${err.message}`);
}

export interface CollectiveOptions {
  config: Config;
  replica: Replica;
  bucketElems: number;
  members: Membership;
  reducer: GradientReducer;
  log: (line: string) => void;
}

/**
 * The collective operations over the active workers, each one a request/answer round through their WorkerLinks:
 * a data-parallel step (scatter shards, gather gradient sums, reduce, broadcast the average), a sharded evaluation,
 * the BN statistics average, a model-update broadcast and the checksum comparison. Each holds the membership's
 * lock and is redone without a worker lost meanwhile; the coordinator's replica changes only once every answer
 * checked out. Followers receive every change without taking part.
 */
export class Collectives {
  /** Data-parallel steps applied so far (augmentation seeds and checksum timing follow it). */
  steps = 0;
  /** Steps over a ring all-reduce among the workers (dist.allreduce 'ring' or 'auto'). */
  private readonly ring: RingSteps;

  constructor(private readonly o: CollectiveOptions) {
    this.ring = new RingSteps({ ...o, checkAnswers: (shards, answers, what) => this.checkAnswers(shards, answers, what) });
  }

  step(indices: Int32Array, set: ParamSet, sgd: StepSgd): Promise<StepResult> {
    return this.o.members.exclusive(() => this.o.members.withWorkers(`step ${this.steps + 1}`, (links) => this.stepOnce(links, indices, set, sgd)));
  }

  /**
   * One attempt at a step; a WORKER_LOST before the commit point makes it redone. The star: a gather to the
   * coordinator that reduces bucket by bucket in join order and streams each averaged bucket back at once, then a
   * commit; with dist.allreduce 'ring' or 'auto' a ring all-reduce among the workers replaces the gather
   * (ring_step.ts; the coordinator receives the average from rank 0).
   */
  private async stepOnce(links: WorkerLink[], indices: Int32Array, set: ParamSet, sgd: StepSgd): Promise<StepResult> {
    const shards = shardsOf(indices, links);
    if (this.ring.wanted(shards)) {
      const result = await this.ring.stepOnce(shards, set, sgd, this.steps);
      this.steps++;
      if (this.steps % this.o.config.dist.checksum_every === 0) await this.checksumsOnce();
      return result;
    }
    const { replica } = this.o;
    const layout = replica.layout(set);
    const { answers, avg, seqs } = await this.gather(shards, layout, set);
    this.checkAnswers(shards, answers, `answer to step ${this.steps + 1}`);
    const stats = answers.reduce((acc, a) => addStats(acc, a.stats), emptyStats());
    // A float32 sum of finite gradients can still overflow: that too is the run diverging, not a worker's fault.
    checkFiniteResult(avg, stats, this.steps + 1);
    // The commit point. A worker that left after answering makes the step redone too, so that "lost at step K"
    // means exactly: step K and later were computed without it.
    const gone = shards.find((s) => s.link.closed);
    if (gone) throw new GdpError('WORKER_LOST', `worker ${gone.link.id} left before step ${this.steps + 1} was applied`);
    this.broadcastAverage(set, sgd, seqs);
    for (const { link, idx } of shards) link.samplesSinceSync += idx.length;
    timelineEvent('coordinator: apply sent');
    replica.applyGradient(layout, avg, sgd);
    timelineEvent('coordinator: update applied');
    this.steps++;
    if (this.steps % this.o.config.dist.checksum_every === 0) await this.checksumsOnce();
    return { avgGrad: avg, layout, stats, perWorker: shards.map((s, i) => ({ id: s.link.id, count: s.idx.length, ms: answers[i].ms })) };
  }

  /**
   * Sends every shard's compute request and reduces the answers' gradient sums bucket by bucket as they arrive
   * (fixed join order, float32 sums over the samples given: the same arithmetic as one process accumulating shard by
   * shard); each averaged bucket goes at once to every active worker and follower, behind an 'average' header, to be
   * held until the step is committed. Resolves with the answers, the average (valid until the next step) and the
   * number each replica's step messages carry.
   */
  private async gather(
    shards: Shard[],
    layout: FlatLayout,
    set: ParamSet,
  ): Promise<{ answers: Answers['computed'][]; avg: Float32Array; seqs: Map<WorkerLink, number> }> {
    // Augmentation draws from sampleSeed(seed, sample index): independent of which worker runs a sample, and
    // different at every step so that a sample seen again in a later epoch is augmented afresh.
    const seed = sampleSeed(this.o.config.base.seed, this.steps);
    const { reducer, bucketElems, config, members } = this.o;
    // Every replica's step messages carry one number (the links share their numbering, as the cluster's do), so that
    // each averaged bucket is encoded once and the same bytes go to all of them; links numbered apart (a test's) get
    // their own numbers and encodings.
    const targets = [...members.active(), ...members.followers()];
    const shared = targets.every((l) => l.numbers === targets[0]?.numbers) ? targets[0]?.numbers.take() : undefined;
    const seqs = new Map<WorkerLink, number>();
    const reduction = reducer.begin({
      size: layout.size,
      bucketElems,
      workers: shards.map((s) => s.link.id),
      count: shards.reduce((n, s) => n + s.idx.length, 0),
      dtype: config.dist.grad_dtype,
      onAveraged: (index, values) => postAveragedBucket(seqs, index, values),
      fail: (w, err) => shards[w].link.peer.fail(err),
    });
    timelineEvent('coordinator: sending compute');
    const pending = shards.map(({ link, idx }, w) =>
      link.request(
        'computed',
        (seq) => {
          seqs.set(link, seq);
          return [{ type: 'compute', seq, set, indices: toWire(idx), seed }];
        },
        (seq) => reduction.sink(w, `gradient from worker ${link.id} for request ${seq}`),
        shared,
      ),
    );
    for (const link of targets) {
      if (!seqs.has(link)) seqs.set(link, shared ?? link.reserveSeq());
      link.post((seq) => [{ type: 'average', seq, set }], seqs.get(link));
    }
    const answers = await all(pending, { step: this.steps + 1 });
    return { answers, avg: reduction.result(), seqs };
  }

  /**
   * Commits the step on every replica that received its average (active workers, those without samples too, and
   * followers): 'apply', after the last averaged bucket, under the number of the step's 'average'. A worker that
   * computed gets its compute request's number, which tells it its shard's BN statistics stand.
   */
  private broadcastAverage(set: ParamSet, sgd: StepSgd, seqs: Map<WorkerLink, number>): void {
    for (const [link, seq] of seqs) link.post(() => [{ type: 'apply', seq, set, sgd }], seq);
  }

  /** Closes the connection of a worker whose loss and accuracy sums cannot be right (the operation is redone). */
  private checkAnswers(shards: Shard[], answers: { stats: StepStats }[], what: string): void {
    shards.forEach(({ link, idx }, i) => {
      try {
        checkStats(answers[i].stats, idx.length, `worker ${link.id}'s ${what}`);
      } catch (err) {
        throw reject(link, err as GdpError);
      }
    });
  }

  evaluate(indices: Int32Array): Promise<StepStats> {
    const batchSize = this.o.config.data.test_batch_size;
    return this.o.members.exclusive(() =>
      this.o.members.withWorkers('evaluation', async (links) => {
        const shards = shardsOf(indices, links);
        const answers = await all(
          shards.map(({ link, idx }) => link.request('evaluated', (seq) => [{ type: 'evaluate', seq, indices: toWire(idx), batchSize }])),
          { step: this.steps, evaluation: true },
        );
        this.checkAnswers(shards, answers, 'evaluation');
        return answers.reduce((acc, a) => addStats(acc, a.stats), emptyStats());
      }),
    );
  }

  syncBatchNormStats(): Promise<void> {
    return this.o.members.exclusive(() => this.o.members.withWorkers('BN statistics', (links) => this.syncBnOnce(links)));
  }

  /**
   * Averages the running statistics of `links`, weighted by the training samples each saw since the last
   * synchronisation (PyTorch's SyncBatchNorm weighs by count too), in float64 in join order, and sets them on every
   * replica.
   */
  private async syncBnOnce(links: WorkerLink[]): Promise<void> {
    const { replica, members } = this.o;
    const answers = await all(links.map((l) => l.request('bn_stats', (seq) => [{ type: 'bn_request', seq }])));
    const mine = replica.runningStats();
    const total = answers.reduce((a, b) => a + b.samples, 0);
    // Every answer is checked in full before any of it is used.
    const values = answers.map((a, w) => {
      const link = links[w];
      if (a.samples !== link.samplesSinceSync) {
        throw reject(
          link,
          new GdpError(
            'BAD_STATE',
            `BN statistics weighted by ${a.samples} samples; the worker was given ${link.samplesSinceSync} since the last synchronisation`,
          ),
        );
      }
      try {
        return replica.checkRunningStats(namedArraysFromWire(a.tensors, 'BN statistic'));
      } catch (err) {
        throw reject(link, asGdpError(err));
      }
    });
    if (total === 0) return;
    const acc = mine.map((s) => new Float64Array(s.values.length));
    answers.forEach((a, w) => {
      mine.forEach((_, i) => {
        const v = values[w][i];
        for (let j = 0; j < v.length; j++) acc[i][j] += a.samples * v[j];
      });
    });
    const averaged = mine.map((s, i) => ({ name: s.name, shape: s.shape, values: Float32Array.from(acc[i], (x) => x / total) }));
    replica.setRunningStats(averaged);
    const tensors = namedArraysToWire(averaged);
    const targets = members.active();
    for (const l of [...targets, ...members.followers()]) l.samplesSinceSync = 0;
    await this.broadcastChange((seq) => ({ type: 'set_buffers', seq, tensors }), targets, 'state', 'BN synchronisation');
  }

  /** Applies a replayable model update on every replica (the coordinator's first, so a bad update is never sent). */
  broadcastModelUpdate(update: ModelUpdate): Promise<void> {
    return this.o.members.exclusive(async () => {
      await this.o.members.untilEnoughWorkers(`model update '${update.kind}'`);
      this.o.replica.applyUpdate(update);
      await this.broadcastChange(
        (seq) => ({ type: 'model_update', seq, update }),
        this.o.members.active(),
        'state-without-running-stats',
        `a '${update.kind}' update`,
      );
    });
  }

  /**
   * Sends a state change the coordinator's replica already made to `targets` and to the followers, and compares the
   * checksum of `scope` each answers with the coordinator's. Followers are not waited for (they may still be loading
   * their data): one that disagrees is closed. A target lost here is simply gone; the others must all have applied
   * the change (dropDiverged).
   */
  private async broadcastChange(message: (seq: number) => Message, targets: WorkerLink[], scope: ChecksumScope, what: string): Promise<void> {
    const checksum = this.o.replica.checksum(scope);
    for (const link of this.o.members.followers()) {
      link
        .request('ack', (seq) => [message(seq)])
        .then(
          (a) => {
            if (a.checksum !== checksum)
              link.peer.fail(new GdpError('REPLICA_DIVERGED', `worker ${link.id} holds state ${a.checksum} after ${what}, the coordinator ${checksum}`));
          },
          () => undefined,
        );
    }
    const rs = await Promise.allSettled(targets.map((l) => l.request('ack', (seq) => [message(seq)])));
    for (const r of rs) if (r.status === 'rejected' && !isLost(r.reason)) throw r.reason;
    this.dropDiverged(targets, rs, checksum, `after ${what}`);
  }

  verifyChecksums(): Promise<void> {
    return this.o.members.exclusive(() => this.checksumsOnce());
  }

  private async checksumsOnce(): Promise<void> {
    const links = this.o.members.active();
    const rs = await Promise.allSettled(links.map((l) => l.request('checksum', (seq) => [{ type: 'checksum_request', seq }])));
    this.dropDiverged(links, rs, this.o.replica.checksum('parameters'), `parameter checksums after step ${this.steps}`);
  }

  /**
   * Closes the connection of every worker whose answered checksum differs from the coordinator's: its replica can
   * no longer be trusted, the others go on. When all of them differ, the coordinator's own replica is the suspect:
   * throws REPLICA_DIVERGED, which stops the run.
   */
  private dropDiverged(links: WorkerLink[], answers: PromiseSettledResult<{ checksum: string }>[], mine: string, when: string): void {
    const checksums = answers.map((r) => (r.status === 'fulfilled' ? r.value.checksum : undefined));
    const answered = links.filter((_, i) => checksums[i] !== undefined);
    const diverged = links.filter((_, i) => checksums[i] !== undefined && checksums[i] !== mine);
    if (!diverged.length) return;
    const detail = diverged.map((l) => `worker ${l.id} has ${checksums[links.indexOf(l)]}`).join(', ');
    if (diverged.length === answered.length) throw new GdpError('REPLICA_DIVERGED', `${when}: ${detail}, the coordinator ${mine}`);
    for (const l of diverged)
      l.peer.fail(new GdpError('REPLICA_DIVERGED', `${when}: worker ${l.id} has checksum ${checksums[links.indexOf(l)]}, the coordinator ${mine}`));
  }
}
