import * as tf from '@tensorflow/tfjs-core';
import { Layer } from './module.js';

/**
 * Layers with Keras semantics that imported TF.js models need and PyTorch-style models do not: explicit (possibly
 * asymmetric) zero padding, pooling with TF's 'same' padding, global max pooling and input rescaling. None has
 * weights. Shapes are NHWC; `outShape` takes and gives [H, W, C] without the batch axis.
 */

type Pair = readonly [number, number];

/** Keras' ZeroPadding2D: [[top, bottom], [left, right]] zero rows and columns. Zero stays zero, per channel. */
export class ZeroPad2d extends Layer {
  constructor(readonly pad: readonly [Pair, Pair]) {
    super();
  }
  forward(x: tf.Tensor): tf.Tensor {
    const [[t, b], [l, r]] = this.pad;
    return tf.pad(x, [
      [0, 0],
      [t, b],
      [l, r],
      [0, 0],
    ]);
  }
  outShape([h, w, c]: readonly number[]): number[] {
    const [[t, b], [l, r]] = this.pad;
    return [h + t + b, w + l + r, c];
  }
}

function poolOut(n: number, k: number, s: number, same: boolean): number {
  return same ? Math.ceil(n / s) : Math.floor((n - k) / s) + 1;
}

/**
 * Keras' MaxPooling2D / AveragePooling2D as tf.maxPool / tf.avgPool compute them: 'same' padding never wins a max
 * and is left out of an average (TF's semantics, unlike PyTorch's count_include_pad).
 */
export class Pool2d extends Layer {
  constructor(
    readonly kind: 'max' | 'avg',
    readonly pool: Pair,
    readonly strides: Pair,
    readonly padding: 'same' | 'valid',
  ) {
    super();
  }
  forward(x: tf.Tensor): tf.Tensor {
    const f = this.kind === 'max' ? tf.maxPool : tf.avgPool;
    return f(x as tf.Tensor4D, [this.pool[0], this.pool[1]], [this.strides[0], this.strides[1]], this.padding);
  }
  outShape([h, w, c]: readonly number[]): number[] {
    const same = this.padding === 'same';
    return [poolOut(h, this.pool[0], this.strides[0], same), poolOut(w, this.pool[1], this.strides[1], same), c];
  }
}

/** Maximum over the spatial dimensions, keeping [N,1,1,C] as GlobalAvgPool does. */
export class GlobalMaxPool extends Layer {
  forward(x: tf.Tensor): tf.Tensor {
    return tf.max(x, [1, 2], true);
  }
  outShape([, , c]: readonly number[]): number[] {
    return [1, 1, c];
  }
}

/** Keras' Rescaling: x * scale + offset (scalars). */
export class Rescale extends Layer {
  constructor(
    readonly scale: number,
    readonly offset: number,
  ) {
    super();
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => tf.add(tf.mul(x, this.scale), this.offset));
  }
  outShape(s: readonly number[]): number[] {
    return [...s];
  }
}
