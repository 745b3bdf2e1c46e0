import { createHash } from 'node:crypto';
import * as tf from '@tensorflow/tfjs-core';
import type { Batch } from '../data/dataset.js';
import { tensorOps, type Module, type Slot } from '../nn/module.js';
import { GdpError } from '../errors.js';
import { BatchNorm2d, Conv2d, DepthwiseConv2d } from '../nn/layers.js';
import type { ModelUpdate } from '../protocol/model_update.js';
import { applyModelUpdate } from './apply_update.js';
import { isRunningStat, stateChecksum, type ChecksumScope, type FlatLayout, type ReplicaState, type StateTensor } from './model_state.js';
import { sgdStep, type SgdOptions } from './sgd.js';

export type { FlatLayout } from './model_state.js';

/**
 * Which parameters a step trains: all trainable ones, only the Gate Decorator gates (gdp's Tick), or all but the
 * convolutions' weights and biases (the paper's Tick, `gbn.tick_trains: all_but_conv`).
 */
export type ParamSet = 'all' | 'gates' | 'all_but_conv';

export interface StepStats {
  lossSum: number;
  correct1: number;
  correct5: number;
  count: number;
}

export const emptyStats = (): StepStats => ({ lossSum: 0, correct1: 0, correct5: 0, count: 0 });
export function addStats(a: StepStats, b: StepStats): StepStats {
  return { lossSum: a.lossSum + b.lossSum, correct1: a.correct1 + b.correct1, correct5: a.correct5 + b.correct5, count: a.count + b.count };
}

function isGate(name: string): boolean {
  return name === 'g' || name.endsWith('.g');
}

/** The parameters of every convolution (weight, bias), by name: what the paper's `freeze_conv` freezes. */
function convParameterNames(model: Module): Set<string> {
  const names = new Set<string>();
  for (const [path, m] of model.namedModules()) {
    if (!(m instanceof Conv2d || m instanceof DepthwiseConv2d)) continue;
    for (const [name] of m.namedParameters()) names.add(path ? `${path}.${name}` : name);
  }
  return names;
}

/** SGD options of a step, with the Gate Decorator's extras (Replica.applyGradient). */
export type StepSgdOptions = SgdOptions & { gateL1?: number; decayFrozen?: boolean };

/** A named float32 tensor with its shape, as Replica.runningStats returns it. */
export interface ShapedTensor {
  name: string;
  shape: number[];
  values: Float32Array;
}

/**
 * One copy of the model with its host-side parameter vectors, SGD momentum and model-update log. Workers compute
 * gradient sums on their shards; every replica (the coordinator's too) applies the same averaged update in plain
 * float32 arithmetic and the same model updates, so replicas stay identical (checksum() proves it). State that
 * comes from elsewhere (a welcome, a resume point, BN statistics) is validated here and refused with GdpError codes.
 */
export class Replica {
  /** Authoritative host copy of every trainable parameter; device tensors are uploaded from it. */
  private host = new Map<string, Float32Array>();
  private momentum = new Map<string, Float32Array>();
  private readonly log: ModelUpdate[] = [];

  constructor(
    readonly model: Module,
    readonly inputShape: readonly [number, number, number],
  ) {
    this.pullFromDevice();
  }

  /** Re-reads parameters from the model's tensors: after construction, loading or surgery. */
  pullFromDevice(): void {
    this.host.clear();
    for (const [name, s] of this.model.namedParameters()) this.host.set(name, s.value.dataSync() as Float32Array);
    for (const name of [...this.momentum.keys()]) {
      if (this.host.get(name)?.length !== this.momentum.get(name)?.length) this.momentum.delete(name);
    }
  }

  layout(set: ParamSet): FlatLayout {
    const names: string[] = [];
    const shapes: number[][] = [];
    const offsets: number[] = [];
    let size = 0;
    const convs = set === 'all_but_conv' ? convParameterNames(this.model) : undefined;
    for (const [name, s] of this.model.namedParameters()) {
      if (set === 'gates' && !isGate(name)) continue;
      if (convs?.has(name)) continue;
      names.push(name);
      shapes.push(s.value.shape);
      offsets.push(size);
      size += s.value.size;
    }
    return { names, shapes, offsets, size };
  }

  private slots(layout: FlatLayout): Slot[] {
    const byName = new Map(this.model.namedParameters());
    return layout.names.map((n) => {
      const s = byName.get(n);
      if (!s) throw new GdpError('INTERNAL', `parameter '${n}' of the layout is not in the model`);
      return s;
    });
  }

  private input(batch: Batch): tf.Tensor4D {
    const [h, w, c] = this.inputShape;
    return tf.tensor4d(batch.x, [batch.n, h, w, c]);
  }

  /**
   * Sum over the batch of the cross-entropy gradient for `layout`'s parameters, as one flat vector, with loss and
   * top-1/top-5 counts. Batch statistics of BN are this batch's (per shard in data-parallel training). `out`, when
   * given, receives the vector (every element is written) instead of a new array: a caller that is done with the
   * previous step's vector spares a full-size allocation per step. Throws INTERNAL for an `out` of another size.
   */
  gradients(batch: Batch, layout: FlatLayout, out?: Float32Array): { grad: Float32Array; stats: StepStats } {
    if (out && out.length !== layout.size) throw new GdpError('INTERNAL', `gradient buffer of ${out.length} values, layout ${layout.size}`);
    this.model.train();
    const slots = this.slots(layout);
    const grad = out ?? new Float32Array(layout.size);
    let stats = emptyStats();
    tf.tidy(() => {
      const x = this.input(batch);
      const labels = tf.tensor1d(batch.y, 'int32');
      let logits: tf.Tensor | undefined;
      const f = () => {
        logits = tf.keep(this.model.apply(x, tensorOps));
        return sumCrossEntropy(logits, labels, this.numClasses(logits));
      };
      const { value, grads } = tf.valueAndGrads(f)(slots.map((s) => s.value));
      grads.forEach((g, i) => grad.set(g.dataSync() as Float32Array, layout.offsets[i]));
      stats = countCorrect(logits!, batch.y, value.dataSync()[0]);
      logits!.dispose();
    });
    return { grad, stats };
  }

  /**
   * Re-estimates every BatchNorm's running statistics as the plain average of the batch statistics of `batches`
   * (PyTorch's momentum=None), by training-mode forward passes that change nothing else. After pruning, the
   * running statistics of layers downstream of removed channels describe the network before the cut; evaluating
   * with them says little about what the pruned network can do.
   */
  async recalibrateBatchNorm(batches: AsyncIterable<Batch> | Iterable<Batch | Promise<Batch>>): Promise<number> {
    const bns = [...this.model.namedModules()].map(([, m]) => m).filter((m): m is BatchNorm2d => m instanceof BatchNorm2d);
    this.model.train();
    let k = 0;
    try {
      for await (const batch of batches) {
        k++;
        for (const bn of bns) bn.momentum = 1 / k;
        tf.tidy(() => {
          this.model.apply(this.input(batch), tensorOps);
        });
      }
    } finally {
      for (const bn of bns) bn.momentum = 0.1;
    }
    return k;
  }

  /** Eval-mode loss and accuracy sums for a batch. */
  evaluate(batch: Batch): StepStats {
    this.model.eval();
    let stats = emptyStats();
    tf.tidy(() => {
      const logits = this.model.apply(this.input(batch), tensorOps);
      const loss = sumCrossEntropy(logits, tf.tensor1d(batch.y, 'int32'), this.numClasses(logits));
      stats = countCorrect(logits, batch.y, loss.dataSync()[0]);
    });
    return stats;
  }

  private numClasses(logits: tf.Tensor): number {
    return logits.shape[logits.shape.length - 1];
  }

  /**
   * Applies an averaged gradient with SGD (PyTorch semantics) and uploads the new values. `gateL1` adds the
   * sparsity term lambda * sign(g) to every gate's gradient, as the paper's code does after backward. With
   * `decayFrozen`, every parameter outside `layout` that has a momentum buffer (trained since the last momentum
   * reset) takes an SGD step with a zero gradient, i.e. weight decay and momentum only: what PyTorch 1.x's SGD does
   * to a frozen parameter whose `.grad` zero_grad() left as a zero tensor (`gbn.tick_decay_frozen`).
   */
  applyGradient(layout: FlatLayout, avgGrad: Float32Array, opts: StepSgdOptions): void {
    if (avgGrad.length !== layout.size) throw new GdpError('INTERNAL', `gradient has ${avgGrad.length} values, layout ${layout.size}`);
    const slots = this.slots(layout);
    // The wasm backend copies an uploaded array into its heap at once, so the host vector itself can go; the cpu and
    // tensorflow backends may keep the array they are given, which the next update changes in place: they get a
    // copy. (A full-size copy per step is garbage that brings V8's major collections sooner.)
    const copy = tf.getBackend() !== 'wasm';
    layout.names.forEach((name, i) => {
      const p = this.host.get(name)!;
      let buf = this.momentum.get(name);
      const first = buf === undefined;
      if (!buf) this.momentum.set(name, (buf = new Float32Array(p.length)));
      let g = avgGrad.subarray(layout.offsets[i], layout.offsets[i] + p.length);
      if (opts.gateL1 && isGate(name)) {
        const l1 = opts.gateL1;
        g = g.map((v, j) => v + l1 * Math.sign(p[j]));
      }
      sgdStep(p, g, buf, first, opts);
      slots[i].set(tf.tensor(copy ? p.slice() : p, layout.shapes[i]));
    });
    if (opts.decayFrozen) this.decayFrozen(new Set(layout.names), opts);
  }

  /** The zero-gradient SGD step of applyGradient's `decayFrozen`, on the parameters with momentum not in `trained`. */
  private decayFrozen(trained: ReadonlySet<string>, opts: SgdOptions): void {
    for (const [name, s] of this.model.namedParameters()) {
      const buf = this.momentum.get(name);
      if (trained.has(name) || !buf) continue;
      const p = this.host.get(name)!;
      sgdStep(p, new Float32Array(p.length), buf, false, opts);
      s.set(tf.tensor(p.slice(), s.value.shape));
    }
  }

  /** Momentum buffers by parameter name (copies): the optimizer state a joining worker receives. */
  momentumState(): [string, Float32Array][] {
    return [...this.momentum].map(([n, b]) => [n, b.slice()]);
  }
  setMomentumState(entries: Iterable<[string, Float32Array]>): void {
    this.momentum = new Map([...entries].map(([n, b]) => [n, b.slice()]));
  }

  /** Drops momentum (the paper's code builds a fresh optimizer per stage). */
  resetMomentum(): void {
    this.momentum.clear();
  }

  readParams(layout: FlatLayout): Float32Array {
    const out = new Float32Array(layout.size);
    layout.names.forEach((n, i) => out.set(this.host.get(n)!, layout.offsets[i]));
    return out;
  }

  /** Every model update applied so far, in order: replayed on a freshly built model they rebuild its architecture. */
  get updates(): readonly ModelUpdate[] {
    return this.log;
  }

  /**
   * Applies a replayable model update (gates, masks, pruning surgery, a momentum reset) and records it: changes the
   * model's tensors, re-reads the parameters (which drops momentum of a parameter whose shape changed), and drops
   * all momentum when the update says so. Throws BAD_UPDATE or UNKNOWN_UPDATE_HANDLER (applyModelUpdate); an update
   * that throws is not recorded.
   */
  applyUpdate(update: ModelUpdate): void {
    const { resetMomentum } = applyModelUpdate(this.model, update);
    this.log.push(update);
    this.pullFromDevice();
    if (resetMomentum) this.resetMomentum();
  }

  /**
   * The whole state, enough to make a freshly built replica identical (loadState): the update log, every slot in
   * model order and every momentum buffer ([n]). Slot values may be the tensors' own host arrays: read them before
   * the replica changes.
   */
  snapshot(): ReplicaState {
    return {
      updates: [...this.log],
      slots: [...this.model.namedSlots()].map(([name, s]) => ({ name, shape: [...s.value.shape], values: s.value.dataSync() as Float32Array })),
      momentum: this.momentumState().map(([name, values]) => ({ name, shape: [values.length], values })),
    };
  }

  /**
   * Makes this freshly built replica (no update applied yet) hold `state`: replays its update log, then overwrites
   * every slot and replaces the momentum. Everything is checked before anything is overwritten: every slot of the
   * model present once, no other, sizes (and shapes, where given) equal; every momentum buffer named after a
   * parameter of its size. Throws BAD_STATE naming the tensor, the update errors of applyModelUpdate, INTERNAL on
   * a replica that already applied updates.
   */
  loadState(state: ReplicaState): void {
    if (this.log.length) throw new GdpError('INTERNAL', `loadState() is for a freshly built replica; this one applied ${this.log.length} update(s)`);
    // Parameters are re-read once at the end: slots and momentum are overwritten anyway.
    for (const u of state.updates) {
      applyModelUpdate(this.model, u);
      this.log.push(u);
    }
    const slots = [...this.model.namedSlots()];
    const values = matchTensors(slots, state.slots, 'state');
    const params = new Map(this.model.namedParameters());
    for (const m of state.momentum) {
      if (params.get(m.name)?.value.size !== m.values.length) {
        throw new GdpError('BAD_STATE', `momentum '${m.name}' (${m.values.length} values) matches no parameter of the model`);
      }
    }
    // Copies: the values may be views into a received buffer.
    slots.forEach(([, s], i) => s.set(tf.tensor(values[i].slice(), s.value.shape)));
    this.pullFromDevice();
    this.setMomentumState(state.momentum.map((m) => [m.name, m.values]));
  }

  /** The BatchNorm running statistics (running_mean, running_var) in model order, as copies. */
  runningStats(): ShapedTensor[] {
    return this.runningStatSlots().map(([name, s]) => ({ name, shape: [...s.value.shape], values: (s.value.dataSync() as Float32Array).slice() }));
  }

  /**
   * Checks a full set of running statistics against the model (e.g. a worker's answer before it is averaged):
   * every statistic once, no other, shapes equal, finite. Returns the values in the order of runningStats().
   * Throws BAD_STATE or NON_FINITE naming the tensor.
   */
  checkRunningStats(tensors: readonly StateTensor[]): Float32Array[] {
    const values = matchTensors(this.runningStatSlots(), tensors, 'BN statistics');
    values.forEach((v, i) => {
      if (!v.every(Number.isFinite)) throw new GdpError('NON_FINITE', `BN statistic '${this.runningStatSlots()[i][0]}' is not finite`);
    });
    return values;
  }

  /** Overwrites every running statistic, checked in full first (checkRunningStats). */
  setRunningStats(tensors: readonly StateTensor[]): void {
    const values = this.checkRunningStats(tensors);
    this.runningStatSlots().forEach(([, s], i) => s.set(tf.tensor(values[i], s.value.shape)));
  }

  private runningStatSlots(): [string, Slot][] {
    return [...this.model.namedBuffers()].filter(([n]) => isRunningStat(n));
  }

  /**
   * SHA-256 (first 16 hex digits) over the names and float32 bytes of what `scope` covers, in model order: equal on
   * replicas that stayed identical. `parameters` reads the host copies; the state scopes read every slot.
   */
  checksum(scope: ChecksumScope): string {
    if (scope !== 'parameters') return stateChecksum(this.model, scope);
    const h = createHash('sha256');
    for (const [name, p] of this.host) {
      h.update(name);
      h.update(new Uint8Array(p.buffer, p.byteOffset, p.byteLength));
    }
    return h.digest('hex').slice(0, 16);
  }
}

/**
 * The values of `given` in the order of `slots`, after checking that it names every slot once and nothing else,
 * each with the slot's size (and shape, where given). Throws BAD_STATE naming the first problem.
 */
function matchTensors(slots: readonly [string, Slot][], given: readonly StateTensor[], what: string): Float32Array[] {
  const byName = new Map(given.map((t) => [t.name, t]));
  if (byName.size !== given.length) throw new GdpError('BAD_STATE', `${what}: ${given.length} tensors, only ${byName.size} distinct names`);
  const known = new Set(slots.map(([n]) => n));
  const extra = given.find((t) => !known.has(t.name));
  if (extra) throw new GdpError('BAD_STATE', `${what} has tensor '${extra.name}', which the model does not have`);
  return slots.map(([name, s]) => {
    const t = byName.get(name);
    if (!t) throw new GdpError('BAD_STATE', `${what} lacks tensor '${name}'`);
    const shape = s.value.shape;
    if (t.values.length !== s.value.size || (t.shape && t.shape.join('x') !== shape.join('x'))) {
      throw new GdpError('BAD_STATE', `${what}: tensor '${name}' is [${t.shape ?? [t.values.length]}], the model's [${shape}]`);
    }
    return t.values;
  });
}

function sumCrossEntropy(logits: tf.Tensor, labels: tf.Tensor1D, classes: number): tf.Scalar {
  const onehot = tf.oneHot(labels, classes);
  return tf.neg(tf.sum(tf.mul(onehot, tf.logSoftmax(logits)))) as tf.Scalar;
}

function countCorrect(logits: tf.Tensor, y: Int32Array, lossSum: number): StepStats {
  const k = Math.min(5, logits.shape[1]!);
  const top = tf.topk(logits, k).indices.dataSync();
  let c1 = 0;
  let c5 = 0;
  for (let i = 0; i < y.length; i++) {
    if (top[i * k] === y[i]) c1++;
    for (let j = 0; j < k; j++) if (top[i * k + j] === y[i]) c5++;
  }
  return { lossSum, correct1: c1, correct5: c5, count: y.length };
}
