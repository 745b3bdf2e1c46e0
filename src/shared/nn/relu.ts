import * as tf from '@tensorflow/tfjs-core';
import { hasKernel, ReluGrad } from '../kernels/custom_kernels.js';

/**
 * tf.relu, with its gradient taken from the output in one fused pass where the backend has that kernel (wasm);
 * tfjs' own gradient runs three full-size passes (Step, Cast, Multiply).
 */
export function relu<T extends tf.Tensor>(x: T): T {
  if (!hasKernel(ReluGrad)) return tf.relu(x);
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[1] as tf.GradSaveFunc;
    const y = tf.relu(args[0] as tf.Tensor);
    save([y]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, [ys]: tf.Tensor[]) => tf.engine().runKernel(ReluGrad, { dy, y: ys }, {}) as tf.Tensor,
    };
  });
  return op(x) as T;
}
