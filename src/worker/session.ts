import * as tf from '@tensorflow/tfjs-core';
import { parseConfig } from '../shared/config/load.js';
import type { Config } from '../shared/config/schema.js';
import type { DatasetPair } from '../shared/data/dataset.js';
import { dataFingerprint, loadDataset } from '../shared/data/index.js';
import { GdpError, codeFromRemote } from '../shared/errors.js';
import { checkModelFitsData, configModel } from '../shared/models/registry.js';
import { BucketAssembler } from '../shared/protocol/buckets.js';
import type { Message, MessageOf } from '../shared/protocol/messages.js';
import { Peer, asGdpError } from '../shared/protocol/peer.js';
import { int32FromWire, namedArraysFromWire, namedArraysToWire } from '../shared/protocol/tensor.js';
import type { Transport } from '../shared/protocol/transport.js';
import { PROTOCOL_VERSION } from '../shared/protocol/version.js';
import { backendMemoryLimit } from '../shared/train/memory.js';
import { layoutOf, unflattenState } from '../shared/train/model_state.js';
import { Replica, addStats, emptyStats } from '../shared/train/replica.js';
// Registers the pruning engine's model-update handlers (mask decisions, melts) in every worker.
import '../shared/pruning/updates.js';
import { RingMember, type RingListenSettings } from './ring_member.js';
import { ShardMemoryCheck } from './shard_memory.js';
import { WorkerStep, type Welcomed } from './step.js';

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

/**
 * A worker: holds one replica, computes what the coordinator asks and applies what it broadcasts. `run()`
 * resolves when the coordinator ends the session, and rejects on refusal, a protocol error or a lost connection.
 */
export class WorkerSession {
  private readonly peer: Peer;
  private state?: Welcomed;
  private pendingState?: PendingState;
  private bucketElems = 1;
  private ringMember?: RingMember;
  private readonly step: WorkerStep;
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
    this.step = new WorkerStep({
      send: (m) => this.peer.send(m),
      need: () => this.need(),
      bucketElems: () => this.bucketElems,
      ringMember: () => this.ringMember,
      fits: (seq, samples) => {
        const { replica, config } = this.need();
        return this.fits(seq, () => this.memory.check(replica, config, samples, 'train', 'data.batch_size'));
      },
      log: opts.log,
    });
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
    this.step.before(m);
    switch (m.type) {
      case 'welcome':
        return this.welcome(m);
      case 'bucket':
        return this.bucket(m);
      case 'compute':
        return this.step.compute(m);
      case 'average':
        return this.step.average(m);
      case 'apply':
        return this.step.apply(m);
      case 'checksum_request':
        this.peer.send({ type: 'checksum', seq: m.seq, checksum: this.need().replica.checksum('parameters') });
        return;
      case 'evaluate':
        return this.evaluate(m);
      case 'bn_request':
        this.peer.send({ type: 'bn_stats', seq: m.seq, samples: this.step.samplesSinceSync, tensors: namedArraysToWire(this.need().replica.runningStats()) });
        return;
      case 'set_buffers': {
        const { replica } = this.need();
        replica.setRunningStats(namedArraysFromWire(m.tensors, 'BN statistic'));
        this.step.samplesSinceSync = 0;
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
    } else if (m.stream === 'avg' && this.step.holds(m.seq)) {
      this.step.averageBucket(m);
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

  private async evaluate(m: MessageOf<'evaluate'>): Promise<void> {
    const { replica, data, config } = this.need();
    const indices = int32FromWire(m.indices, 'evaluate indices');
    if (!this.fits(m.seq, () => this.memory.check(replica, config, Math.min(indices.length, m.batchSize), 'forward', 'data.test_batch_size'))) return;
    let stats = emptyStats();
    for (let s = 0; s < indices.length; s += m.batchSize) {
      // A shard of many batches can take minutes on a loaded CPU, and the tensor backend blocks the event loop:
      // between batches the loop turns once, so heartbeats go out and the coordinator hears the worker is alive.
      if (s > 0) await new Promise<void>((resolve) => setImmediate(resolve));
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
