import * as tf from '@tensorflow/tfjs-core';
import { BatchNormTrainBackward, BatchNormTrainForward, hasKernel } from '../kernels/custom_kernels.js';

/**
 * Training-mode batch normalisation with a hand-written backward pass:
 *   y = (x - mean) * rsqrt(var + eps) * a + c,   mean/var over N, H, W of NHWC `x`,
 * where `a` and `c` are per-channel vectors (for a gated BN, a = weight * g * mask and c = bias * g * mask; their
 * gradients flow on to weight, bias and g through cheap vector ops). Autograd through `tf.moments` costs about
 * twenty passes over the activation; this costs five forward and seven backward.
 *
 * `onStats` receives the batch mean and biased variance for the running statistics; they are valid only during
 * the call (the backward pass still needs the mean), so the callee derives what it needs and must not dispose them.
 *
 * Backends with the fused kernels (wasm) run the same maths in three passes forward and two backward.
 */
export function batchNormTrain(
  x: tf.Tensor4D,
  a: tf.Tensor1D,
  c: tf.Tensor1D,
  eps: number,
  onStats: (mean: tf.Tensor1D, variance: tf.Tensor1D) => void,
): tf.Tensor4D {
  if (hasKernel(BatchNormTrainForward) && hasKernel(BatchNormTrainBackward)) return fused(x, a, c, eps, onStats);
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xIn, aIn, cIn] = args as tf.Tensor[];
    const save = args[3] as tf.GradSaveFunc;
    const x4 = xIn as tf.Tensor4D;
    // Two reductions (mean, then mean squared deviation); tf.moments would add a cast, a subtraction and a
    // square, each a full pass over the activation.
    const mean = tf.mean(x4, [0, 1, 2]);
    const variance = tf.mean(tf.squaredDifference(x4, mean), [0, 1, 2]);
    const rs = tf.rsqrt(tf.add(variance, eps));
    // Affine output as a multiply and an add: wasm's FusedBatchNorm kernel is slower than the two together.
    const scale = tf.mul(aIn, rs);
    const y = tf.add(tf.mul(x4, scale), tf.sub(cIn, tf.mul(mean, scale)));
    onStats(mean as tf.Tensor1D, variance as tf.Tensor1D);
    save([x4, mean, rs, aIn]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, mu, r, av] = saved;
        const n = xs.size / xs.shape[3]!;
        // Per-channel reductions: sum(dy) and sum(dy * (x - mean)) = sum(dy * x) - mean * sum(dy).
        const sumDy = tf.sum(dy, [0, 1, 2]);
        const sumDyX = tf.sum(tf.mul(dy, xs), [0, 1, 2]);
        const sumDyXc = tf.sub(sumDyX, tf.mul(mu, sumDy));
        // dx = a*r*dy - a*r^3*sumDyXc/n * (x - mean) - a*r*sumDy/n, folded into dy*A + x*B + C.
        const A = tf.mul(av, r);
        const B = tf.neg(tf.div(tf.mul(tf.mul(A, tf.square(r)), sumDyXc), n));
        const C = tf.sub(tf.neg(tf.mul(B, mu)), tf.div(tf.mul(A, sumDy), n));
        const dx = tf.add(tf.add(tf.mul(dy, A), tf.mul(xs, B)), C);
        const da = tf.mul(sumDyXc, r);
        return [dx, da, sumDy];
      },
    };
  });
  return op(x, a, c) as tf.Tensor4D;
}

function fused(x: tf.Tensor4D, a: tf.Tensor1D, c: tf.Tensor1D, eps: number, onStats: (mean: tf.Tensor1D, variance: tf.Tensor1D) => void): tf.Tensor4D {
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xIn, aIn, cIn] = args as tf.Tensor[];
    const save = args[3] as tf.GradSaveFunc;
    const [y, mean, variance, rs] = tf.engine().runKernel(BatchNormTrainForward, { x: xIn, a: aIn, c: cIn }, {
      epsilon: eps,
    } as unknown as tf.NamedAttrMap) as tf.Tensor[];
    onStats(mean as tf.Tensor1D, variance as tf.Tensor1D);
    save([xIn, mean, rs, aIn]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, mu, r, av] = saved;
        return tf.engine().runKernel(BatchNormTrainBackward, { dy, x: xs, mean: mu, rs: r, a: av }, {}) as tf.Tensor[];
      },
    };
  });
  return op(x, a, c) as tf.Tensor4D;
}
