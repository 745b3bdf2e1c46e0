import * as tf from '@tensorflow/tfjs';

/** Stock tf.layers networks for the TF.js import tests, built as a user would build them. */

type Sym = tf.SymbolicTensor;
const call = (l: tf.layers.Layer, x: Sym | Sym[]): Sym => l.apply(x) as Sym;

/** A functional MobileNet-style block: stride-2 'same' stem, ReLU6, depthwise, add, concat, dilated separable conv, softmax. */
export function mobileBlock(): tf.LayersModel {
  const input = tf.input({ shape: [12, 12, 3], name: 'img' });
  const stem = call(tf.layers.conv2d({ filters: 8, kernelSize: 3, strides: 2, padding: 'same', useBias: false, name: 'stem' }), input);
  const bn = call(tf.layers.batchNormalization({ name: 'stem_bn' }), stem);
  const act = call(tf.layers.reLU({ maxValue: 6, name: 'stem_relu6' }), bn);
  const dw = call(tf.layers.depthwiseConv2d({ kernelSize: 3, padding: 'same', useBias: false, name: 'dw' }), act);
  const sum = call(tf.layers.add({ name: 'res' }), [act, dw]);
  const cat = call(tf.layers.concatenate({ name: 'cat' }), [sum, act]);
  const sep = call(tf.layers.separableConv2d({ filters: 5, kernelSize: 3, dilationRate: 2, name: 'sep' }), cat);
  const pool = call(tf.layers.globalAveragePooling2d({ name: 'gap' }), sep);
  const drop = call(tf.layers.dropout({ rate: 0.2, name: 'drop' }), pool);
  const fc = call(tf.layers.dense({ units: 4, activation: 'softmax', name: 'fc' }), drop);
  return tf.model({ inputs: input, outputs: fc, name: 'mobile_block' });
}

/** A Sequential with asymmetric zero padding, a fused ReLU, 'same' max pooling, Flatten of a spatial map and Dense layers. */
export function flattenNet(): tf.Sequential {
  return tf.sequential({
    layers: [
      tf.layers.zeroPadding2d({
        inputShape: [9, 8, 2],
        padding: [
          [0, 1],
          [2, 0],
        ] as [[number, number], [number, number]],
        name: 'zero_pad',
      }),
      tf.layers.conv2d({ filters: 4, kernelSize: 3, strides: 2, name: 'conv', activation: 'relu' }),
      tf.layers.maxPooling2d({ poolSize: 3, strides: 2, padding: 'same', name: 'pool' }),
      tf.layers.averagePooling2d({ poolSize: 2, strides: 1, padding: 'same', name: 'avg' }),
      tf.layers.flatten({ name: 'flat' }),
      tf.layers.dense({ units: 6, activation: 'relu6', name: 'hidden' }),
      tf.layers.dense({ units: 2, name: 'out' }),
    ],
  });
}

/**
 * MobileNetV2 (Sandler et al. 2018) in miniature: stem, inverted residual blocks with ReLU6 and depthwise 3x3, 1x1 head, GAP.
 * With `seed`, every kernel starts from a seeded Glorot-uniform draw (TF.js' default initializer), so the same seed
 * gives the same starting network; without it TF.js draws unseeded, as a user's `tf.layers` network does.
 */
export function tinyMobileNetV2(inputShape: [number, number, number], classes: number, width = 8, seed?: number): tf.LayersModel {
  let next = seed;
  const init = (): { kernelInitializer?: ReturnType<typeof tf.initializers.glorotUniform> } =>
    next === undefined ? {} : { kernelInitializer: tf.initializers.glorotUniform({ seed: next++ }) };
  const input = tf.input({ shape: inputShape, name: 'image' });
  const convBn = (x: Sym, name: string, filters: number, kernel: number, strides: number, relu6: boolean, depthwise = false): Sym => {
    const conv = depthwise
      ? tf.layers.depthwiseConv2d({ kernelSize: kernel, strides, padding: 'same', useBias: false, name, depthwiseInitializer: init().kernelInitializer })
      : tf.layers.conv2d({ filters, kernelSize: kernel, strides, padding: 'same', useBias: false, name, ...init() });
    const y = call(tf.layers.batchNormalization({ name: `${name}_bn` }), call(conv, x));
    return relu6 ? call(tf.layers.reLU({ maxValue: 6, name: `${name}_relu` }), y) : y;
  };
  const block = (x: Sym, name: string, inC: number, outC: number, strides: number, t: number): Sym => {
    let y = convBn(x, `${name}_expand`, inC * t, 1, 1, true);
    y = convBn(y, `${name}_dw`, 0, 3, strides, true, true);
    y = convBn(y, `${name}_project`, outC, 1, 1, false);
    return strides === 1 && inC === outC ? call(tf.layers.add({ name: `${name}_add` }), [x, y]) : y;
  };
  let x = convBn(input, 'stem', width, 3, 2, true);
  x = block(x, 'block1', width, width, 1, 4);
  x = block(x, 'block2', width, 2 * width, 2, 4);
  x = block(x, 'block3', 2 * width, 2 * width, 1, 4);
  x = convBn(x, 'head', 4 * width, 1, 1, true);
  x = call(tf.layers.globalAveragePooling2d({ name: 'pool' }), x);
  x = call(tf.layers.dense({ units: classes, activation: 'softmax', name: 'logits', ...init() }), x);
  return tf.model({ inputs: input, outputs: x, name: 'tiny_mobilenet_v2' });
}

/** Replaces every weight with seeded values: kernels in [-0.5, 0.5), vectors (BN, biases) in [0.5, 1.5) so variances stay positive. */
export function randomizeWeights(m: tf.LayersModel, seed = 1): void {
  let s = seed;
  for (const l of m.layers) {
    l.setWeights(
      l
        .getWeights()
        .map((w) => (w.shape.length === 1 ? tf.randomUniform(w.shape, 0.5, 1.5, 'float32', s++) : tf.randomUniform(w.shape, -0.5, 0.5, 'float32', s++))),
    );
  }
}

/** Conv -> ReLU -> Flatten -> Dense without BatchNorm: a model Gate Decorator finds nothing to prune in. */
export function convFlattenDense(inputShape: [number, number, number], classes: number): tf.Sequential {
  return tf.sequential({
    layers: [
      tf.layers.conv2d({ inputShape, filters: 4, kernelSize: 3, strides: 2, activation: 'relu', name: 'conv' }),
      tf.layers.flatten({ name: 'flat' }),
      tf.layers.dense({ units: classes, name: 'out' }),
    ],
  });
}
