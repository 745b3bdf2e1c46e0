import * as tf from '@tensorflow/tfjs-core';
import { relu } from './relu.js';
import { GdpError } from '../errors.js';

/**
 * A named tensor slot. Tensors are immutable, so updating a parameter swaps the tensor; the slot keeps the name
 * stable. Values live outside any tf.tidy scope (kept) and are owned by the slot.
 */
export class Slot {
  constructor(
    private tensor: tf.Tensor,
    /** Trainable parameters get gradients; buffers (running stats, masks) do not. */
    public trainable: boolean,
  ) {
    tf.keep(tensor);
  }
  get value(): tf.Tensor {
    return this.tensor;
  }
  set(t: tf.Tensor): void {
    if (t === this.tensor) return;
    this.tensor.dispose();
    this.tensor = tf.keep(t);
  }
  dispose(): void {
    this.tensor.dispose();
  }
}

/** Elementary operations that composite modules use, on real tensors or on symbols while tracing. */
export interface Ops<T> {
  layer(m: Layer, x: T): T;
  add(a: T, b: T): T;
  relu(x: T): T;
  /**
   * [N,H,W,C] to [N,C*H*W] in PyTorch's order (feature c*H*W + h*W + w, as `torch.flatten` of NCHW), so Linear
   * weights keep PyTorch's layout; [N,F] stays as it is.
   */
  flatten(x: T): T;
  /** Concatenation along the channel (last) axis, as `torch.cat(xs, 1)` on NCHW; spatial sizes must agree. */
  concat(xs: T[]): T;
}

/** A module is a tree of named children with named parameters and buffers, in PyTorch's naming. */
export abstract class Module {
  training = true;
  private readonly childList: [string, Module][] = [];
  private readonly slotList: [string, Slot][] = [];

  protected addChild<M extends Module>(name: string, m: M): M {
    this.childList.push([name, m]);
    return m;
  }
  protected addSlot(name: string, t: tf.Tensor, trainable: boolean): Slot {
    const s = new Slot(t, trainable);
    this.slotList.push([name, s]);
    return s;
  }
  protected removeSlot(name: string): void {
    const i = this.slotList.findIndex(([n]) => n === name);
    if (i >= 0) {
      this.slotList[i][1].dispose();
      this.slotList.splice(i, 1);
    }
  }

  children(): readonly [string, Module][] {
    return this.childList;
  }

  /** Every module in the tree with its dotted path ('' for the root), parents before children. */
  *namedModules(prefix = ''): Generator<[string, Module]> {
    yield [prefix, this];
    for (const [n, c] of this.childList) yield* c.namedModules(prefix ? `${prefix}.${n}` : n);
  }

  /** Every slot in the tree, in a fixed order (module order, then declaration order). */
  *namedSlots(): Generator<[string, Slot]> {
    for (const [path, m] of this.namedModules()) {
      for (const [n, s] of m.slotList) yield [path ? `${path}.${n}` : n, s];
    }
  }

  namedParameters(): [string, Slot][] {
    return [...this.namedSlots()].filter(([, s]) => s.trainable);
  }
  namedBuffers(): [string, Slot][] {
    return [...this.namedSlots()].filter(([, s]) => !s.trainable);
  }
  slot(name: string): Slot {
    for (const [n, s] of this.namedSlots()) if (n === name) return s;
    throw new GdpError('UNKNOWN_LAYER', `the model has no parameter or buffer named '${name}'`);
  }

  train(on = true): this {
    for (const [, m] of this.namedModules()) m.training = on;
    return this;
  }
  eval(): this {
    return this.train(false);
  }

  /** Runs the module on a tensor; intermediates are freed (tidy), only the output is returned. */
  run(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => this.apply(x, tensorOps));
  }

  /** Runs the module on real tensors or, while tracing, on symbols. Composite modules only use `F`. */
  abstract apply<T>(x: T, F: Ops<T>): T;

  dispose(): void {
    for (const [, s] of this.namedSlots()) s.dispose();
  }
}

/** A leaf module: computes on tensors, and knows its output shape for the tracer. Shapes are NHWC without N. */
export abstract class Layer extends Module {
  abstract forward(x: tf.Tensor): tf.Tensor;
  abstract outShape(inShape: readonly number[]): number[];
  apply<T>(x: T, F: Ops<T>): T {
    return F.layer(this, x);
  }
}

/** PyTorch's nn.Sequential: children named 0, 1, 2, ... */
export class Sequential extends Module {
  readonly layers: Module[];
  constructor(layers: Module[]) {
    super();
    this.layers = layers.map((m, i) => this.addChild(String(i), m));
  }
  apply<T>(x: T, F: Ops<T>): T {
    let y = x;
    for (const m of this.layers) y = m.apply(y, F);
    return y;
  }
}

export const tensorOps: Ops<tf.Tensor> = {
  layer: (m, x) => m.forward(x),
  add: (a, b) => tf.add(a, b),
  relu: (x) => relu(x),
  flatten: (x) => {
    // NHWC -> NCHW first when the map is spatial: channel-major features, as PyTorch flattens.
    const spatial = x.rank === 4 && x.shape[1]! * x.shape[2]! > 1;
    return tf.reshape(spatial ? tf.transpose(x, [0, 3, 1, 2]) : x, [x.shape[0], -1]);
  },
  concat: (xs) => tf.concat(xs, -1),
};
