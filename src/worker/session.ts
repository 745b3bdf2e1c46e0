import * as tf from '@tensorflow/tfjs-core';
import { parseConfig } from '../shared/config/load.js';
import type { Config } from '../shared/config/schema.js';
import type { DatasetPair } from '../shared/data/dataset.js';
import { dataFingerprint, loadDataset } from '../shared/data/index.js';
import { GdpError, codeFromRemote } from '../shared/errors.js';
import { checkModelFitsData, configModel } from '../shared/models/registry.js';
import { BucketAssembler, bucketRanges } from '../shared/protocol/buckets.js';
import type { Message, MessageOf } from '../shared/protocol/messages.js';
import { Peer, asGdpError } from '../shared/protocol/peer.js';
import { firstNonFinite, int32FromWire, namedArraysFromWire, namedArraysToWire, toWire, toWireFloat16 } from '../shared/protocol/tensor.js';
import type { Transport } from '../shared/protocol/transport.js';
import { PROTOCOL_VERSION } from '../shared/protocol/version.js';
import { backendMemoryLimit } from '../shared/train/memory.js';
import { layoutOf, unflattenState } from '../shared/train/model_state.js';
import { Replica, addStats, emptyStats, type FlatLayout, type ShapedTensor } from '../shared/train/replica.js';
// Registers the pruning engine's model-update handlers (mask decisions, melts) in every worker.
import '../shared/pruning/updates.js';
import { RingMember, type RingInfo, type RingListenSettings } from './ring_member.js';
import { ShardMemoryCheck } from './shard_memory.js';

export interface WorkerOptions {
  workerId: string;
  backend: string;
  gpu: number | null;
  host: string;
  pid: number;
  /** Where the data comes from; tests inject small datasets. */
  loadData?: (config: Config) => Promise<DatasetPair>;
  /** This machine's dataset folder (--data-dir), over the config's data.dir. */
  dataDir?: string;
  /**
   * Where this worker listens for ring peers (gdp-worker --listen). The listener opens at the welcome when the
   * run's dist.allreduce is 'ring' or 'auto'; without settings the worker takes part in star steps only.
   */
  ring?: RingListenSettings;
  /** Sent in hello; tests send a wrong one on purpose. */
  protocol?: number;
  /**
   * Bytes this worker's tensor backend may hold, which every shard is checked against before it is computed;
   * default: the active backend's known limit (wasm: 4 GiB; cpu and tensorflow: none). Tests set a small one.
   */
  memoryLimit?: number;
  log: (line: string) => void;
}

interface Welcomed {
  config: Config;
  replica: Replica;
  data: DatasetPair;
}

/** A welcome whose state buckets are still arriving, and the freshly built replica that will hold it. */
interface PendingState {
  welcome: MessageOf<'welcome'>;
  config: Config;
  replica: Replica;
  assembler: BucketAssembler;
}

/**
 * Lets due timers run (a setImmediate would not): the heartbeat goes out between long synchronous parts of the
 * welcome, since the coordinator drops a worker silent for dist.heartbeat_timeout_ms.
 */
const letTimersRun = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

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

/**
 * A worker: holds one replica, computes what the coordinator asks and applies what it broadcasts. `run()`
 * resolves when the coordinator ends the session, and rejects on refusal, a protocol error or a lost connection.
 */
export class WorkerSession {
  private readonly peer: Peer;
  private state?: Welcomed;
  private pendingState?: PendingState;
  private held?: HeldAverage;
  private uncommitted?: Uncommitted;
  private bucketElems = 1;
  /** Training samples since the last BN synchronisation: this worker's weight in the average. */
  private samplesSinceSync = 0;
  private avgBuffer?: Float32Array;
  private ringMember?: RingMember;
  /** The ring's average for the compute request `seq`, applied when its 'apply' arrives (held). */
  private ringHeld?: { seq: number; avg: Float32Array };
  private shutdownReason?: string;
  private wasWelcomed = false;
  private remoteError?: GdpError;
  private readonly done: Promise<void>;
  /** Messages are handled one at a time in arrival order, even when one awaits data loading. */
  private queue: Promise<void> = Promise.resolve();
  private readonly memory: ShardMemoryCheck;

  constructor(
    transport: Transport,
    private readonly opts: WorkerOptions,
  ) {
    const backend = tf.getBackend();
    this.memory = new ShardMemoryCheck(backend, opts.memoryLimit ?? backendMemoryLimit(backend));
    // Until the welcome brings the run's settings, the defaults of a config's dist section.
    this.peer = new Peer(transport, { name: `coordinator (${transport.remote})`, heartbeatMs: 2000, timeoutMs: 600000, log: opts.log });
    this.done = new Promise((resolve, reject) => {
      this.peer.onMessage((m) => {
        // Noted at once: the close that follows these may arrive before the queue reaches them.
        if (m.type === 'shutdown') this.shutdownReason = m.reason;
        if (m.type === 'refuse') this.remoteError = new GdpError(codeFromRemote(m.code), `coordinator refused this worker (${m.code}): ${m.reason}`);
        if (m.type === 'error') this.remoteError = new GdpError(codeFromRemote(m.code), `coordinator reported ${m.code}: ${m.message}`);
        this.queue = this.queue.then(() => this.handle(m)).catch((err) => this.peer.fail(asGdpError(err)));
      });
      this.peer.onClose((reason, err) => {
        this.dispose();
        const e = this.remoteError ?? err;
        if (e) reject(e);
        else if (this.shutdownReason !== undefined) resolve();
        else reject(new GdpError('DISCONNECTED', `connection to the coordinator closed: ${reason}`));
      });
    });
    this.peer.send({
      type: 'hello',
      protocol: opts.protocol ?? PROTOCOL_VERSION,
      workerId: opts.workerId,
      backend: opts.backend,
      gpu: opts.gpu,
      host: opts.host,
      pid: opts.pid,
    });
  }

  run(): Promise<void> {
    return this.done;
  }

  /** True once the coordinator's state was loaded (stays true after the session ends). */
  get welcomed(): boolean {
    return this.wasWelcomed;
  }

  /** The replica once welcomed (tests compare it with the coordinator's). */
  get replica(): Replica | undefined {
    return this.state?.replica;
  }

  close(reason = 'worker closing'): void {
    this.peer.close(reason);
  }

  private need(): Welcomed {
    if (!this.state) throw new GdpError('PROTOCOL', 'request before the welcome state was complete');
    return this.state;
  }

  private async handle(m: Message): Promise<void> {
    // After a step's compute come only its 'average', 'avg' buckets and 'apply'; anything else means the step was
    // dropped (another worker was lost) and is being redone: this shard's effects on the BN statistics are undone,
    // and averaged buckets already held are discarded.
    if (this.uncommitted && m.type !== 'apply' && m.type !== 'bucket' && m.type !== 'average') this.rollback();
    if (this.held && !((m.type === 'apply' || (m.type === 'bucket' && m.stream === 'avg')) && m.seq === this.held.seq)) this.held = undefined;
    switch (m.type) {
      case 'welcome':
        return this.welcome(m);
      case 'bucket':
        return this.bucket(m);
      case 'compute':
        return this.compute(m);
      case 'average':
        return this.average(m);
      case 'apply':
        return this.apply(m);
      case 'checksum_request':
        this.peer.send({ type: 'checksum', seq: m.seq, checksum: this.need().replica.checksum('parameters') });
        return;
      case 'evaluate':
        return this.evaluate(m);
      case 'bn_request':
        this.peer.send({ type: 'bn_stats', seq: m.seq, samples: this.samplesSinceSync, tensors: namedArraysToWire(this.need().replica.runningStats()) });
        return;
      case 'set_buffers': {
        const { replica } = this.need();
        replica.setRunningStats(namedArraysFromWire(m.tensors, 'BN statistic'));
        this.samplesSinceSync = 0;
        this.peer.send({ type: 'ack', seq: m.seq, checksum: replica.checksum('state') });
        return;
      }
      case 'model_update': {
        const { replica } = this.need();
        replica.applyUpdate(m.update);
        this.peer.send({ type: 'ack', seq: m.seq, checksum: replica.checksum('state-without-running-stats') });
        return;
      }
      case 'shutdown':
        this.opts.log(`coordinator ended the session: ${m.reason}${this.state ? `; state checksum ${this.state.replica.checksum('state')}` : ''}`);
        this.peer.close('shutdown');
        return;
      case 'refuse':
        this.peer.close('refused');
        return;
      case 'error':
        this.peer.close('coordinator error');
        return;
      default:
        throw new GdpError('PROTOCOL', `unexpected '${m.type}' message from the coordinator`);
    }
  }

  /** A step's averaged gradient follows in 'avg' buckets: held until its 'apply' (the coordinator's commit). */
  private average(m: MessageOf<'average'>): void {
    // The average of another step than the one this worker computed: that step was dropped.
    if (this.uncommitted && this.uncommitted.seq !== m.seq) this.rollback();
    const layout = this.need().replica.layout(m.set);
    // One buffer reused across steps: applyGradient consumes the average before the next one arrives.
    const assembler = new BucketAssembler(`averaged gradient of request ${m.seq}`, layout.size, this.bucketElems, (n) => {
      if (this.avgBuffer?.length !== n) this.avgBuffer = new Float32Array(n);
      return this.avgBuffer;
    });
    this.held = { seq: m.seq, set: m.set, layout, assembler };
  }

  /** The step is committed: the averaged gradient held for it (streamed by the coordinator, or the ring's) is applied. */
  private apply(m: MessageOf<'apply'>): void {
    if (m.held) return this.applyHeld(m);
    const held = this.held;
    this.held = undefined;
    if (held?.seq !== m.seq) throw new GdpError('PROTOCOL', `'apply' ${m.seq} without the average of that step`);
    if (held.set !== m.set) throw new GdpError('PROTOCOL', `'apply' ${m.seq} of '${m.set}' parameters, its average was of '${held.set}'`);
    if (this.uncommitted) {
      if (this.uncommitted.seq !== m.seq) this.rollback();
      this.uncommitted = undefined;
    }
    this.need().replica.applyGradient(held.layout, held.assembler.result(), m.sgd);
  }

  private async welcome(m: MessageOf<'welcome'>): Promise<void> {
    if (this.state || this.pendingState) throw new GdpError('PROTOCOL', 'second welcome');
    if (m.protocol !== PROTOCOL_VERSION) throw new GdpError('PROTOCOL_VERSION', `coordinator speaks protocol ${m.protocol}, this worker ${PROTOCOL_VERSION}`);
    const config = parseConfig(m.config, 'config from the coordinator');
    // Paths are this machine's business: a folder named by the network is never read (--data-dir is).
    config.data.dir = undefined;
    this.bucketElems = m.bucketElems;
    // The coordinator may be busy for a while (evaluation, checkpoints): its silence is bounded by the step timeout.
    this.peer.configure({ heartbeatMs: config.dist.heartbeat_ms, timeoutMs: config.dist.step_timeout_ms });
    const size = layoutOf(m.slots).size + layoutOf(m.momentum).size;
    const built = configModel(config.model, config.base.seed);
    const replica = new Replica(built.model, built.inputShape);
    this.pendingState = { welcome: m, config, replica, assembler: new BucketAssembler('welcome state', size, m.bucketElems) };
    if (this.pendingState.assembler.complete) await this.finishWelcome();
  }

  private async bucket(m: MessageOf<'bucket'>): Promise<void> {
    if (m.stream === 'state' && this.pendingState) {
      this.pendingState.assembler.add(m.index, m.data);
      if (this.pendingState.assembler.complete) await this.finishWelcome();
    } else if (m.stream === 'avg' && this.held?.seq === m.seq) {
      this.held.assembler.add(m.index, m.data);
    } else {
      throw new GdpError('PROTOCOL', `unexpected '${m.stream}' bucket ${m.index} of request ${m.seq}`);
    }
  }

  /** The state is complete: the replica loads it (update log, slots, momentum), the data loads, 'ready' answers. */
  private async finishWelcome(): Promise<void> {
    const { welcome: w, config, replica, assembler } = this.pendingState!;
    this.pendingState = undefined;
    const flat = assembler.result();
    const slots = unflattenState(w.slots, flat);
    const momentum = unflattenState(w.momentum, flat, layoutOf(w.slots).size);
    let data: DatasetPair;
    try {
      replica.loadState({ updates: w.updates, slots, momentum });
      await letTimersRun();
      data = await (this.opts.loadData ?? ((c: Config) => loadDataset(c, { dataDir: this.opts.dataDir })))(config);
    } catch (err) {
      replica.model.dispose();
      throw err;
    }
    this.state = { config, replica, data };
    this.wasWelcomed = true;
    checkModelFitsData(config, data.train);
    this.opts.log(`welcomed: ${config.model.name}, ${replica.layout('all').size} parameters, data ${data.train.name} (${data.train.size} samples)`);
    if (config.dist.allreduce !== 'star' && this.opts.ring) {
      this.ringMember = await RingMember.open(this.opts.ring, config, this.opts.log);
      this.opts.log(`ring listener at ${this.ringMember.url}`);
    }
    this.peer.send({ type: 'ready', checksum: replica.checksum('state'), data: dataFingerprint(data), ring: this.ringMember?.url });
  }

  /**
   * The gradient sum of a compute request's shard, or undefined when this worker answered the request itself: a
   * shard too big for its backend's memory ('failed' BATCH_TOO_LARGE), or, with `reportNonFinite`, a loss, gradient
   * or updated BN statistic that is not finite ('non_finite': nothing non-finite is sent, nor kept as the state of a
   * step that may be committed, so the coordinator tells a diverged run (every worker) from a faulty worker). A ring
   * step passes false: its all-reduce refuses non-finite values itself and the ring fails.
   */
  private async shardGradient(m: MessageOf<'compute'>, reportNonFinite: boolean): Promise<ReturnType<Replica['gradients']> | undefined> {
    const { replica, data, config } = this.need();
    const indices = int32FromWire(m.indices, 'compute indices');
    if (!this.fits(m.seq, () => this.memory.check(replica, config, indices.length, 'train', 'data.batch_size'))) return undefined;
    const batch = await data.train.load(indices, { augment: true, seed: m.seed });
    const runningStats = replica.runningStats();
    const out = replica.gradients(batch, replica.layout(m.set));
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
      this.peer.send({ type: 'non_finite', seq: m.seq, what: nonFinite });
      return undefined;
    }
    return out;
  }

  private async compute(m: MessageOf<'compute'>): Promise<void> {
    if (m.ring) return this.computeRing(m, m.ring);
    const { config } = this.need();
    const r = await this.shardGradient(m, true);
    if (!r) return;
    const { grad, stats } = r;
    // Sent bucket by bucket, each encoded just before it goes (float16 halves the upload, dist.grad_dtype).
    const dtype = config.dist.grad_dtype;
    bucketRanges(grad.length, this.bucketElems).forEach(([s, e], index) => {
      const data = dtype === 'float16' ? toWireFloat16(grad.subarray(s, e)) : toWire(grad.subarray(s, e));
      this.peer.send({ type: 'bucket', stream: 'grad', seq: m.seq, index, data });
    });
    this.peer.send({ type: 'computed', seq: m.seq, stats });
  }

  /**
   * A ring step: the shard's gradient sum is all-reduced with the other ranks and the average held until 'apply';
   * rank 0 uploads it (the coordinator's replica needs it, and one upload keeps its traffic constant in N). A ring
   * failure is answered with 'ring_failed' (the connection stays: the coordinator re-forms the ring and redoes the
   * step); a failure to compute ends the session as in a star step.
   */
  private async computeRing(m: MessageOf<'compute'>, info: RingInfo): Promise<void> {
    if (!this.ringMember) throw new GdpError('PROTOCOL', `'compute' ${m.seq} in a ring, but this worker has no ring listener`);
    const r = await this.shardGradient(m, false);
    if (!r) return;
    const { grad, stats } = r;
    let avg: Float32Array;
    try {
      avg = await this.ringMember.allreduce(info, grad);
    } catch (err) {
      const e = asGdpError(err);
      this.opts.log(`ring ${info.ring} rank ${info.rank} of ${info.size}: all-reduce of request ${m.seq} failed: ${e.code}: ${e.message}`);
      // The message schema bounds the text and refuses control characters (a peer's words may end up in it).
      this.peer.send({ type: 'ring_failed', seq: m.seq, code: e.code, message: e.message.replace(/[\x00-\x09\x0b-\x1f\x7f]/g, ' ').slice(0, 10000) });
      return;
    }
    this.ringHeld = { seq: m.seq, avg };
    if (info.rank === 0) {
      // float32 always: the coordinator's replica must apply the very bits the ranks apply.
      bucketRanges(avg.length, this.bucketElems).forEach(([s, e], index) =>
        this.peer.send({ type: 'bucket', stream: 'avg', seq: m.seq, index, data: toWire(avg.subarray(s, e)) }),
      );
    }
    this.peer.send({ type: 'computed', seq: m.seq, stats });
  }

  /** Commits a ring step: the average held from the all-reduce of request `m.seq`. */
  private applyHeld(m: MessageOf<'apply'>): void {
    const h = this.ringHeld;
    if (!h || h.seq !== m.seq) throw new GdpError('PROTOCOL', `'apply' ${m.seq} of a held average, but ${h ? `request ${h.seq}'s` : 'none'} is held`);
    const layout = this.need().replica.layout(m.set);
    if (layout.size !== h.avg.length)
      throw new GdpError('PROTOCOL', `'apply' ${m.seq} of '${m.set}' (${layout.size} values), the held average has ${h.avg.length}`);
    this.ringHeld = undefined;
    this.uncommitted = undefined;
    this.need().replica.applyGradient(layout, h.avg, m.sgd);
  }

  /** Undoes the BN statistics and sample count of a shard whose step was dropped. */
  private rollback(): void {
    const u = this.uncommitted!;
    this.uncommitted = undefined;
    this.ringHeld = undefined;
    this.need().replica.setRunningStats(u.runningStats);
    this.samplesSinceSync -= u.samples;
    this.opts.log(`step of request ${u.seq} was dropped by the coordinator; its BN statistics are undone`);
  }

  private async evaluate(m: MessageOf<'evaluate'>): Promise<void> {
    const { replica, data, config } = this.need();
    const indices = int32FromWire(m.indices, 'evaluate indices');
    if (!this.fits(m.seq, () => this.memory.check(replica, config, Math.min(indices.length, m.batchSize), 'forward', 'data.test_batch_size'))) return;
    let stats = emptyStats();
    for (let s = 0; s < indices.length; s += m.batchSize) {
      const batch = await data.test.load(indices.subarray(s, s + m.batchSize), { augment: false, seed: 0 });
      stats = addStats(stats, replica.evaluate(batch));
    }
    if (!Number.isFinite(stats.lossSum)) this.peer.send({ type: 'non_finite', seq: m.seq, what: 'loss' });
    else this.peer.send({ type: 'evaluated', seq: m.seq, stats });
  }

  /** Runs a shard's memory check; a shard too big is answered with 'failed' BATCH_TOO_LARGE (returns false). */
  private fits(seq: number, check: () => void): boolean {
    try {
      check();
      return true;
    } catch (err) {
      if (!(err instanceof GdpError) || err.code !== 'BATCH_TOO_LARGE') throw err;
      this.opts.log(`request ${seq}: ${err.message}`);
      this.peer.send({ type: 'failed', seq, code: err.code, message: err.message });
      return false;
    }
  }

  private dispose(): void {
    void this.ringMember?.close();
    this.ringMember = undefined;
    void this.state?.data.close?.();
    this.state?.replica.model.dispose();
    this.state = undefined;
    this.pendingState?.replica.model.dispose();
    this.pendingState = undefined;
  }
}
