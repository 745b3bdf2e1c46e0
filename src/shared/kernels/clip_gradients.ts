/**
 * Gradients of tfjs' Relu6 and ClipByValue kernels that run the one-pass ClipGrad kernel (custom_kernels.ts)
 * where the active backend has it (wasm), else the same mask composed from tfjs ops. Registered over tfjs' own
 * (tf.relu6 and tf.clipByValue, and so any model built from them, get the fast gradient on wasm without code
 * changes); call after `@tensorflow/tfjs` has registered its gradients (at import), as registerWasmTrainingKernels
 * does.
 *
 * The masks are tfjs': ReLU6 passes dy where 0 < x <= 6, clipByValue where min <= x <= max.
 */
import * as tf from '@tensorflow/tfjs-core';

import { ClipGrad, ClipGradAttrs, hasKernel } from './custom_kernels.js';

function clipGradient(dy: tf.Tensor, x: tf.Tensor, attrs: ClipGradAttrs): tf.Tensor {
  if (hasKernel(ClipGrad)) return tf.engine().runKernel(ClipGrad, { dy, x }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor;
  return tf.tidy(() => {
    const above = attrs.loInclusive ? tf.greaterEqual(x, attrs.lo) : tf.greater(x, attrs.lo);
    return tf.mul(dy, tf.cast(tf.logicalAnd(above, tf.lessEqual(x, attrs.hi)), 'float32'));
  });
}

const relu6Gradient: tf.GradConfig = {
  kernelName: tf.Relu6,
  inputsToSave: ['x'],
  gradFunc: (dy, saved) => ({ x: () => clipGradient(dy as tf.Tensor, saved[0], { lo: 0, hi: 6, loInclusive: false }) }),
};

const clipByValueGradient: tf.GradConfig = {
  kernelName: tf.ClipByValue,
  inputsToSave: ['x'],
  gradFunc: (dy, saved, attrs) => {
    const { clipValueMin, clipValueMax } = attrs as unknown as tf.ClipByValueAttrs;
    return { x: () => clipGradient(dy as tf.Tensor, saved[0], { lo: clipValueMin, hi: clipValueMax, loInclusive: true }) };
  },
};

/** Registers both gradients (idempotent). */
export function registerClipGradients(): void {
  tf.registerGradient(relu6Gradient);
  tf.registerGradient(clipByValueGradient);
}
