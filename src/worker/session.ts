import * as tf from '@tensorflow/tfjs-core';
import { parseConfig } from '../shared/config/load.js';
import type { Config } from '../shared/config/schema.js';
import type { DatasetPair } from '../shared/data/dataset.js';
import { dataFingerprint, loadDataset } from '../shared/data/index.js';
import { GdpError, codeFromRemote } from '../shared/errors.js';
import { archSpec, buildModel, checkModelFitsData } from '../shared/models/registry.js';
import type { Module } from '../shared/nn/module.js';
import { BucketAssembler, bucketRanges } from '../shared/protocol/buckets.js';
import type { Message, MessageOf } from '../shared/protocol/messages.js';
import { applyModelUpdate } from '../shared/protocol/model_update.js';
import { isRunningStat, layoutOf, loadSlots, stateChecksum, type TensorEntry } from '../shared/protocol/model_state.js';
import { Peer, asGdpError } from '../shared/protocol/peer.js';
import { float32FromWire, int32FromWire, toWire, toWireFloat16, type NamedTensor } from '../shared/protocol/tensor.js';
import type { Transport } from '../shared/protocol/transport.js';
import { PROTOCOL_VERSION } from '../shared/protocol/version.js';
import { Replica, addStats, emptyStats, type FlatLayout, type ParamSet } from '../shared/train/replica.js';
// Registers the pruning engine's model-update handlers (mask decisions, melts) in every worker.
import '../shared/pruning/updates.js';

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
  /** Sent in hello; tests send a wrong one on purpose. */
  protocol?: number;
  log: (line: string) => void;
}

interface Welcomed {
  config: Config;
  model: Module;
  replica: Replica;
  data: DatasetPair;
}

interface PendingState {
  assembler: BucketAssembler;
  slots: TensorEntry[];
  momentum: TensorEntry[];
  config: Config;
  model: Module;
}

/** A computed shard whose step is not applied yet: if the step is redone without it, its side effects are undone. */
interface Uncommitted {
  seq: number;
  /** BN running statistics before the shard's forward pass. */
  runningStats: [string, Float32Array][];
  samples: number;
}

interface PendingApply {
  seq: number;
  layout: FlatLayout;
  sgd: MessageOf<'apply'>['sgd'];
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
  private pendingApply?: PendingApply;
  private uncommitted?: Uncommitted;
  private bucketElems = 1;
  /** Training samples since the last BN synchronisation: this worker's weight in the average. */
  private samplesSinceSync = 0;
  private avgBuffer?: Float32Array;
  private shutdownReason?: string;
  private wasWelcomed = false;
  private remoteError?: GdpError;
  private readonly done: Promise<void>;
  /** Messages are handled one at a time in arrival order, even when one awaits data loading. */
  private queue: Promise<void> = Promise.resolve();

  constructor(
    transport: Transport,
    private readonly opts: WorkerOptions,
  ) {
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
    // The coordinator sends 'apply' right after the answers of a step; anything else means the step was dropped
    // (another worker was lost) and is being redone: this shard's effects on the BN statistics are undone.
    if (this.uncommitted && m.type !== 'apply' && m.type !== 'bucket') this.rollback();
    switch (m.type) {
      case 'welcome':
        return this.welcome(m);
      case 'bucket':
        return this.bucket(m);
      case 'compute':
        return this.compute(m);
      case 'apply': {
        if (this.pendingApply) throw new GdpError('PROTOCOL', `'apply' ${m.seq} before the buckets of 'apply' ${this.pendingApply.seq} were complete`);
        const layout = this.need().replica.layout(m.set);
        if (this.uncommitted) {
          if (this.uncommitted.seq !== m.seq) this.rollback();
          this.uncommitted = undefined;
        }
        // One buffer reused across steps: applyGradient consumes the average before the next one arrives.
        const assembler = new BucketAssembler(`averaged gradient of request ${m.seq}`, layout.size, this.bucketElems, (n) => {
          if (this.avgBuffer?.length !== n) this.avgBuffer = new Float32Array(n);
          return this.avgBuffer;
        });
        this.pendingApply = { seq: m.seq, layout, sgd: m.sgd, assembler };
        if (assembler.complete) this.applyPending();
        return;
      }
      case 'checksum_request':
        this.peer.send({ type: 'checksum', seq: m.seq, checksum: this.need().replica.checksum() });
        return;
      case 'evaluate':
        return this.evaluate(m);
      case 'bn_request': {
        const tensors = [...this.need().model.namedBuffers()]
          .filter(([n]) => isRunningStat(n))
          .map(([name, s]) => ({ name, tensor: toWire(s.value.dataSync() as Float32Array, s.value.shape) }));
        this.peer.send({ type: 'bn_stats', seq: m.seq, samples: this.samplesSinceSync, tensors });
        return;
      }
      case 'set_buffers': {
        const { model } = this.need();
        setBuffers(model, m.tensors);
        this.samplesSinceSync = 0;
        this.peer.send({ type: 'ack', seq: m.seq, checksum: stateChecksum(model) });
        return;
      }
      case 'model_update': {
        const { model, replica } = this.need();
        const { resetMomentum } = applyModelUpdate(model, m.update);
        replica.pullFromDevice();
        if (resetMomentum) replica.resetMomentum();
        this.peer.send({ type: 'ack', seq: m.seq, checksum: stateChecksum(model, { runningStats: false }) });
        return;
      }
      case 'shutdown':
        this.opts.log(`coordinator ended the session: ${m.reason}${this.state ? `; state checksum ${stateChecksum(this.state.model)}` : ''}`);
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
    const model = buildModel(config.model.name, { numClasses: config.model.num_class, seed: config.base.seed });
    for (const u of m.updates) applyModelUpdate(model, u);
    const size = layoutOf(m.slots).size + layoutOf(m.momentum).size;
    this.pendingState = { assembler: new BucketAssembler('welcome state', size, m.bucketElems), slots: m.slots, momentum: m.momentum, config, model };
    if (this.pendingState.assembler.complete) await this.finishWelcome();
  }

  private async bucket(m: MessageOf<'bucket'>): Promise<void> {
    if (m.stream === 'state' && this.pendingState) {
      this.pendingState.assembler.add(m.index, m.data);
      if (this.pendingState.assembler.complete) await this.finishWelcome();
    } else if (m.stream === 'avg' && this.pendingApply?.seq === m.seq) {
      this.pendingApply.assembler.add(m.index, m.data);
      if (this.pendingApply.assembler.complete) this.applyPending();
    } else {
      throw new GdpError('PROTOCOL', `unexpected '${m.stream}' bucket ${m.index} of request ${m.seq}`);
    }
  }

  private async finishWelcome(): Promise<void> {
    const p = this.pendingState!;
    this.pendingState = undefined;
    const flat = p.assembler.result();
    const slotSize = layoutOf(p.slots).size;
    loadSlots(p.model, p.slots, flat.subarray(0, slotSize));
    const replica = new Replica(p.model, archSpec(p.config.model.name).inputShape);
    const mLayout = layoutOf(p.momentum);
    replica.setMomentumState(
      p.momentum.map((e, i) => {
        const start = slotSize + mLayout.offsets[i];
        return [e.name, flat.subarray(start, start + e.shape.reduce((a, b) => a * b, 1))];
      }),
    );
    const data = await (this.opts.loadData ?? ((c: Config) => loadDataset(c, { dataDir: this.opts.dataDir })))(p.config);
    this.state = { config: p.config, model: p.model, replica, data };
    this.wasWelcomed = true;
    checkModelFitsData(p.config, data.train);
    this.opts.log(`welcomed: ${p.config.model.name}, ${replica.layout('all').size} parameters, data ${data.train.name} (${data.train.size} samples)`);
    this.peer.send({ type: 'ready', checksum: stateChecksum(p.model), data: dataFingerprint(data) });
  }

  private async compute(m: MessageOf<'compute'>): Promise<void> {
    const { replica, data, config } = this.need();
    if (this.pendingApply) throw new GdpError('PROTOCOL', `'compute' ${m.seq} before the update of step ${this.pendingApply.seq} was complete`);
    const indices = int32FromWire(m.indices, 'compute indices');
    const layout = replica.layout(m.set);
    const batch = await data.train.load(indices, { augment: true, seed: m.seed });
    const runningStats = [...this.need().model.namedBuffers()].filter(([n]) => isRunningStat(n)).map(([n, s]): [string, Float32Array] => [n, (s.value.dataSync() as Float32Array).slice()]);
    const { grad, stats } = replica.gradients(batch, layout);
    this.uncommitted = { seq: m.seq, runningStats, samples: batch.n };
    this.samplesSinceSync += batch.n;
    // Sent bucket by bucket, each encoded just before it goes (float16 halves the upload, dist.grad_dtype).
    const dtype = config.dist.grad_dtype;
    bucketRanges(grad.length, this.bucketElems).forEach(([s, e], index) => {
      const data = dtype === 'float16' ? toWireFloat16(grad.subarray(s, e)) : toWire(grad.subarray(s, e));
      this.peer.send({ type: 'bucket', stream: 'grad', seq: m.seq, index, data });
    });
    this.peer.send({ type: 'computed', seq: m.seq, stats });
  }

  /** Undoes the BN statistics and sample count of a shard whose step was dropped. */
  private rollback(): void {
    const u = this.uncommitted!;
    this.uncommitted = undefined;
    const buffers = new Map(this.need().model.namedBuffers());
    for (const [name, v] of u.runningStats) buffers.get(name)!.set(tf.tensor(v, buffers.get(name)!.value.shape));
    this.samplesSinceSync -= u.samples;
    this.opts.log(`step of request ${u.seq} was dropped by the coordinator; its BN statistics are undone`);
  }

  private applyPending(): void {
    const p = this.pendingApply!;
    this.pendingApply = undefined;
    this.need().replica.applyGradient(p.layout, p.assembler.result(), p.sgd);
  }

  private async evaluate(m: MessageOf<'evaluate'>): Promise<void> {
    const { replica, data } = this.need();
    const indices = int32FromWire(m.indices, 'evaluate indices');
    let stats = emptyStats();
    for (let s = 0; s < indices.length; s += m.batchSize) {
      const batch = await data.test.load(indices.subarray(s, s + m.batchSize), { augment: false, seed: 0 });
      stats = addStats(stats, replica.evaluate(batch));
    }
    this.peer.send({ type: 'evaluated', seq: m.seq, stats });
  }

  private dispose(): void {
    void this.state?.data.close?.();
    this.state?.model.dispose();
    this.state = undefined;
    this.pendingState?.model.dispose();
    this.pendingState = undefined;
  }
}

/** Overwrites the named buffers (BN running statistics) of a model. */
export function setBuffers(model: Module, tensors: readonly NamedTensor[]): void {
  const buffers = new Map(model.namedBuffers());
  for (const { name, tensor } of tensors) {
    const s = buffers.get(name);
    if (!s) throw new GdpError('BAD_STATE', `buffer '${name}' is not in the model`);
    const v = float32FromWire(tensor, `buffer '${name}'`);
    if (v.length !== s.value.size) throw new GdpError('BAD_STATE', `buffer '${name}' has ${v.length} values, the model ${s.value.size}`);
    if (!v.every(Number.isFinite)) throw new GdpError('NON_FINITE', `buffer '${name}' is not finite`);
    s.set(tf.tensor(v, s.value.shape));
  }
}
