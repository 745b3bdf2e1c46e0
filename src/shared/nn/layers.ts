import * as tf from '@tensorflow/tfjs-core';
import { Layer, type Slot } from './module.js';
import type { Rng } from '../rng.js';
import { GdpError } from '../errors.js';
import { batchNormTrain } from './batchnorm_train.js';
import { relu } from './relu.js';
import { updatedRunningStat } from './running_stats.js';

function expectChannels(layer: string, got: number, want: number): void {
  // Caught while tracing, so a model with inconsistent widths fails at load time, not mid-run.
  if (got !== want) throw new GdpError('SHAPE_MISMATCH', `${layer} expects ${want} input channels but receives ${got}`);
}

function kaimingNormal(rng: Rng, shape: number[], fanIn: number): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const std = Math.sqrt(2 / fanIn);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = rng.normal() * std;
  return tf.tensor(v, shape);
}

function uniform(rng: Rng, shape: number[], bound: number): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = (rng.next() * 2 - 1) * bound;
  return tf.tensor(v, shape);
}

/** Keeps the given indices of `axis` (sorted ascending) of a slot's tensor. */
function keepAlong(s: Slot, axis: number, keep: readonly number[]): void {
  s.set(tf.tidy(() => tf.gather(s.value, tf.tensor1d(Array.from(keep), 'int32'), axis)));
}

function outSize(inSize: number, k: number, stride: number, pad: number): number {
  return Math.floor((inSize + 2 * pad - k) / stride) + 1;
}

export interface Conv2dOptions {
  stride?: number;
  padding?: number;
  bias?: boolean;
  /** Spacing of the kernel taps (PyTorch's and TF's dilation); default 1. */
  dilation?: number;
}

/**
 * A kxk kernel [k,k,I,O] spread to taps `d` apart: [d(k-1)+1, d(k-1)+1, I, O] with zeros between. A dilated conv is a
 * plain conv with this kernel; built from differentiable ops, so it trains where tfjs' dilated conv gradients refuse.
 */
function dilateKernel(w: tf.Tensor4D, d: number): tf.Tensor4D {
  const [k, , i, o] = w.shape;
  const e = d * (k - 1) + 1;
  const spread = tf.pad(tf.reshape(w, [k, 1, k, 1, i, o]), [
    [0, 0],
    [0, d - 1],
    [0, 0],
    [0, d - 1],
    [0, 0],
    [0, 0],
  ]);
  return tf.slice(tf.reshape(spread, [k * d, k * d, i, o]), [0, 0, 0, 0], [e, e, i, o]) as tf.Tensor4D;
}

type ConvPad = 'valid' | [[number, number], [number, number], [number, number], [number, number]];

/** What Conv2d and DepthwiseConv2d share: weight and optional bias, kernel, stride, PyTorch's symmetric padding. */
abstract class SpatialConv extends Layer {
  readonly weight: Slot;
  readonly bias?: Slot;
  readonly kernel: number;
  readonly stride: number;
  readonly padding: number;
  readonly dilation: number;
  constructor(weightShape: number[], fanIn: number, outChannels: number, kernel: number, rng: Rng, opts: Conv2dOptions) {
    super();
    this.kernel = kernel;
    this.stride = opts.stride ?? 1;
    this.padding = opts.padding ?? 0;
    this.dilation = opts.dilation ?? 1;
    this.weight = this.addSlot('weight', kaimingNormal(rng, weightShape, fanIn), true);
    if (opts.bias) this.bias = this.addSlot('bias', uniform(rng, [outChannels], 1 / Math.sqrt(fanIn)), true);
  }
  protected abstract convolve(x: tf.Tensor4D, w: tf.Tensor4D, pad: ConvPad): tf.Tensor;
  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const p = this.padding;
      const w = this.dilation > 1 ? dilateKernel(this.weight.value as tf.Tensor4D, this.dilation) : (this.weight.value as tf.Tensor4D);
      const y = this.convolve(
        x as tf.Tensor4D,
        w,
        p === 0
          ? 'valid'
          : [
              [0, 0],
              [p, p],
              [p, p],
              [0, 0],
            ],
      );
      return this.bias ? tf.add(y, this.bias.value) : y;
    });
  }
  protected outSpatial(h: number, w: number): [number, number] {
    const k = this.dilation * (this.kernel - 1) + 1;
    return [outSize(h, k, this.stride, this.padding), outSize(w, k, this.stride, this.padding)];
  }
}

/** 2-D convolution, NHWC activations, HWIO weight (PyTorch's OIHW is converted at import and export). */
export class Conv2d extends SpatialConv {
  constructor(
    public inChannels: number,
    public outChannels: number,
    kernel: number,
    rng: Rng,
    opts: Conv2dOptions = {},
  ) {
    super([kernel, kernel, inChannels, outChannels], inChannels * kernel * kernel, outChannels, kernel, rng, opts);
  }
  protected convolve(x: tf.Tensor4D, w: tf.Tensor4D, pad: ConvPad): tf.Tensor {
    return tf.conv2d(x, w, this.stride, pad);
  }
  outShape([h, w, c]: readonly number[]): number[] {
    expectChannels('Conv2d', c, this.inChannels);
    return [...this.outSpatial(h, w), this.outChannels];
  }
  keepOutputChannels(keep: readonly number[]): void {
    keepAlong(this.weight, 3, keep);
    if (this.bias) keepAlong(this.bias, 0, keep);
    this.outChannels = keep.length;
  }
  keepInputChannels(keep: readonly number[]): void {
    keepAlong(this.weight, 2, keep);
    this.inChannels = keep.length;
  }
}

/**
 * Depthwise 2-D convolution: PyTorch's Conv2d with groups == in_channels == out_channels (weight [C,1,kh,kw]),
 * here tf.depthwiseConv2d with filter [kh,kw,C,1] on NHWC activations. Channel c of the output reads only channel c
 * of the input, so pruning keeps input and output channels together (`keepChannels`).
 */
export class DepthwiseConv2d extends SpatialConv {
  constructor(
    public channels: number,
    kernel: number,
    rng: Rng,
    opts: Conv2dOptions = {},
  ) {
    // PyTorch's fan-in of a grouped convolution: in_channels / groups * kh * kw.
    super([kernel, kernel, channels, 1], kernel * kernel, channels, kernel, rng, opts);
  }
  protected convolve(x: tf.Tensor4D, w: tf.Tensor4D, pad: ConvPad): tf.Tensor {
    return tf.depthwiseConv2d(x, w, this.stride, pad);
  }
  outShape([h, w, c]: readonly number[]): number[] {
    expectChannels('DepthwiseConv2d', c, this.channels);
    return [...this.outSpatial(h, w), this.channels];
  }
  /** Keeps the given channels (ascending) of input and output alike: filter c and bias c. */
  keepChannels(keep: readonly number[]): void {
    keepAlong(this.weight, 2, keep);
    if (this.bias) keepAlong(this.bias, 0, keep);
    this.channels = keep.length;
  }
}

/** Fully connected layer; weight stored [in, out]. */
export class Linear extends Layer {
  readonly weight: Slot;
  readonly bias: Slot;
  constructor(
    public inFeatures: number,
    public outFeatures: number,
    rng: Rng,
  ) {
    super();
    this.weight = this.addSlot('weight', kaimingNormal(rng, [inFeatures, outFeatures], inFeatures), true);
    this.bias = this.addSlot('bias', uniform(rng, [outFeatures], 1 / Math.sqrt(inFeatures)), true);
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => tf.add(tf.matMul(x as tf.Tensor2D, this.weight.value as tf.Tensor2D), this.bias.value));
  }
  outShape(s: readonly number[]): number[] {
    expectChannels('Linear', s[s.length - 1], this.inFeatures);
    return [this.outFeatures];
  }
  keepInputChannels(keep: readonly number[]): void {
    keepAlong(this.weight, 0, keep);
    this.inFeatures = keep.length;
  }
}

/**
 * BatchNorm2d (eps 1e-5 unless given, e.g. Keras' 1e-3 for imported models; momentum 0.1, PyTorch semantics), optionally gated: `bn(x) * g * mask` with one gate `g`
 * per channel (Gate Decorator's GBN). A gated BN has its weight fixed to 1 and frozen.
 */
export class BatchNorm2d extends Layer {
  readonly weight: Slot;
  readonly bias: Slot;
  readonly runningMean: Slot;
  readonly runningVar: Slot;
  gate?: Slot;
  mask?: Slot;
  /** Weight of a new batch in the running statistics (re-estimation sets 1/k for a plain average). */
  momentum = 0.1;
  constructor(
    public channels: number,
    readonly eps = 1e-5,
  ) {
    super();
    this.weight = this.addSlot('weight', tf.ones([channels]), true);
    this.bias = this.addSlot('bias', tf.zeros([channels]), true);
    this.runningMean = this.addSlot('running_mean', tf.zeros([channels]), false);
    this.runningVar = this.addSlot('running_var', tf.ones([channels]), false);
  }
  get gated(): boolean {
    return this.gate !== undefined;
  }

  /** Turns this BN into a GBN as the paper's code does: bias <- clamp(bias/weight, -10, 10), g <- weight, weight <- 1. */
  addGate(): void {
    if (this.gate) return;
    const w = this.weight.value;
    this.bias.set(tf.tidy(() => tf.clipByValue(tf.div(this.bias.value, w), -10, 10)));
    this.gate = this.addSlot('g', w.clone(), true);
    this.mask = this.addSlot('bn_mask', tf.ones([this.channels]), false);
    this.weight.set(tf.ones([this.channels]));
    this.weight.trainable = false;
  }

  /** Folds gate and mask into weight and bias (melting); the module becomes a plain BN again. */
  removeGate(): void {
    const g = this.gate;
    const m = this.mask;
    if (!g || !m) return;
    const gm = tf.tidy(() => tf.mul(g.value, m.value));
    this.weight.set(tf.tidy(() => tf.mul(this.weight.value, gm)));
    this.bias.set(tf.tidy(() => tf.mul(this.bias.value, gm)));
    gm.dispose();
    this.removeSlot('g');
    this.removeSlot('bn_mask');
    this.gate = undefined;
    this.mask = undefined;
    this.weight.trainable = true;
  }

  /** Per-channel factor and offset applied to the normalised input: a = weight*g*mask, c = bias*g*mask. */
  private affine(): [tf.Tensor1D, tf.Tensor1D] {
    if (this.gate && this.mask) {
      const gm = tf.mul(this.gate.value, this.mask.value);
      return [tf.mul(this.weight.value, gm) as tf.Tensor1D, tf.mul(this.bias.value, gm) as tf.Tensor1D];
    }
    return [this.weight.value as tf.Tensor1D, this.bias.value as tf.Tensor1D];
  }

  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const [a, c] = this.affine();
      if (this.training) {
        return batchNormTrain(x as tf.Tensor4D, a, c, this.eps, (mean, variance) => {
          this.updateRunningStats(mean, variance, x.size / this.channels);
        });
      }
      // Eval: y = x * scale + shift with the running statistics (wasm's FusedBatchNorm is slower than these two).
      const scale = tf.mul(a, tf.rsqrt(tf.add(this.runningVar.value, this.eps)));
      return tf.add(tf.mul(x, scale), tf.sub(c, tf.mul(this.runningMean.value, scale)));
    });
  }

  /** PyTorch's update: running = (1 - momentum) * running + momentum * batch statistic, the variance unbiased. */
  private updateRunningStats(mean: tf.Tensor, variance: tf.Tensor, n: number): void {
    const m = this.momentum;
    const unbiased = n > 1 ? n / (n - 1) : 1;
    this.runningMean.set(updatedRunningStat(this.runningMean.value, mean, 1 - m, m));
    this.runningVar.set(updatedRunningStat(this.runningVar.value, variance, 1 - m, m * unbiased));
  }

  outShape(s: readonly number[]): number[] {
    expectChannels('BatchNorm2d', s[s.length - 1], this.channels);
    return [...s];
  }
  keepChannels(keep: readonly number[]): void {
    for (const s of [this.weight, this.bias, this.runningMean, this.runningVar, this.gate, this.mask]) {
      if (s) keepAlong(s, 0, keep);
    }
    this.channels = keep.length;
  }
}

export class ReLU extends Layer {
  forward(x: tf.Tensor): tf.Tensor {
    return relu(x);
  }
  outShape(s: readonly number[]): number[] {
    return [...s];
  }
}

/** PyTorch's ReLU6: min(max(x, 0), 6). */
export class ReLU6 extends Layer {
  forward(x: tf.Tensor): tf.Tensor {
    return tf.relu6(x);
  }
  outShape(s: readonly number[]): number[] {
    return [...s];
  }
}

/**
 * PyTorch's Dropout(p) as a placeholder that keeps torchvision's module indexes (MobileNetV2's `classifier.1`): gdp
 * trains without it, because a random mask per replica and step would break bit-identical replays (resume,
 * N workers = the same run). At inference dropout is the identity anyway.
 */
export class Dropout extends Layer {
  constructor(readonly p: number) {
    super();
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.clone(x);
  }
  outShape(s: readonly number[]): number[] {
    return [...s];
  }
}

/** Max pooling with PyTorch's symmetric padding. */
export class MaxPool2d extends Layer {
  constructor(
    readonly kernel: number,
    readonly stride: number,
    readonly padding = 0,
  ) {
    super();
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const p = this.padding;
      // -Infinity padding keeps PyTorch's semantics (padded cells never win the max).
      const xp =
        p > 0
          ? tf.pad(
              x,
              [
                [0, 0],
                [p, p],
                [p, p],
                [0, 0],
              ],
              -1e30,
            )
          : x;
      return tf.maxPool(xp as tf.Tensor4D, this.kernel, this.stride, 'valid');
    });
  }
  outShape([h, w, c]: readonly number[]): number[] {
    return [outSize(h, this.kernel, this.stride, this.padding), outSize(w, this.kernel, this.stride, this.padding), c];
  }
}

/** Mean over the spatial dimensions, keeping [N,1,1,C] (PyTorch's avg_pool over the whole map). */
export class GlobalAvgPool extends Layer {
  forward(x: tf.Tensor): tf.Tensor {
    return tf.mean(x, [1, 2], true);
  }
  outShape([, , c]: readonly number[]): number[] {
    return [1, 1, c];
  }
}

/** Average pooling kernel k stride k (VGG's trailing AvgPool2d(1,1) is the identity). */
export class AvgPool2d extends Layer {
  constructor(
    readonly kernel: number,
    readonly stride: number,
  ) {
    super();
  }
  forward(x: tf.Tensor): tf.Tensor {
    if (this.kernel === 1 && this.stride === 1) return tf.clone(x);
    return tf.avgPool(x as tf.Tensor4D, this.kernel, this.stride, 'valid');
  }
  outShape([h, w, c]: readonly number[]): number[] {
    return [outSize(h, this.kernel, this.stride, 0), outSize(w, this.kernel, this.stride, 0), c];
  }
}
