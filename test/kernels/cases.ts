/** The case grids the wasm kernel tests share: convolutions, pools, and a small CNN touching every op of a step. */
import { type Pad, randomArray, size, tf } from './helpers.js';

export type Shape4 = [number, number, number, number];

export interface ConvCase {
  n: number;
  h: number;
  w: number;
  ci: number;
  co: number;
  k: number;
  strides: [number, number];
  pad: Pad;
}

export function describeCase(c: ConvCase): string {
  return `n${c.n} ${c.h}x${c.w}x${c.ci}->${c.co} k${c.k} s${c.strides.join(',')} pad ${JSON.stringify(c.pad)}`;
}

/** The grid: every kernel/stride/padding combination, varied sizes. */
export function convCases(): ConvCase[] {
  const kernels = [1, 3, 7];
  const strides: Array<[number, number]> = [
    [1, 1],
    [2, 2],
  ];
  const pads: Pad[] = [
    'same',
    'valid',
    [
      [0, 0],
      [1, 2],
      [0, 3],
      [0, 0],
    ],
  ];
  const sizes = [7, 9, 15];
  const channels = [1, 3, 16];
  const cases: ConvCase[] = [];
  let i = 0;
  for (const k of kernels) {
    for (const s of strides) {
      for (const pad of pads) {
        const h = sizes[i % 3];
        const w = sizes[(i + 1) % 3];
        if (pad !== 'valid' || (h >= k && w >= k)) {
          cases.push({
            n: i % 2 === 0 ? 1 : 8,
            h,
            w,
            ci: channels[i % 3],
            co: channels[(i + 2) % 3],
            k,
            strides: s,
            pad,
          });
        }
        i++;
      }
    }
  }
  // Shapes the grid misses: unused trailing rows (valid, even size), ResNet
  // shortcut and stem geometry, even kernel, stride 3, unequal strides, and
  // explicit pads that exceed the kernel (negative derived pads).
  cases.push(
    { n: 2, h: 8, w: 10, ci: 3, co: 4, k: 3, strides: [2, 2], pad: 'valid' },
    { n: 8, h: 16, w: 16, ci: 16, co: 32, k: 1, strides: [2, 2], pad: 'same' },
    {
      n: 1,
      h: 15,
      w: 15,
      ci: 3,
      co: 16,
      k: 7,
      strides: [2, 2],
      pad: [
        [0, 0],
        [3, 3],
        [3, 3],
        [0, 0],
      ],
    },
    { n: 2, h: 9, w: 9, ci: 3, co: 5, k: 2, strides: [2, 2], pad: 'same' },
    { n: 2, h: 10, w: 11, ci: 4, co: 3, k: 3, strides: [3, 3], pad: 'same' },
    { n: 2, h: 9, w: 8, ci: 3, co: 4, k: 3, strides: [2, 1], pad: 'same' },
    {
      n: 2,
      h: 7,
      w: 9,
      ci: 2,
      co: 3,
      k: 1,
      strides: [2, 2],
      pad: [
        [0, 0],
        [3, 1],
        [2, 4],
        [0, 0],
      ],
    },
    {
      n: 1,
      h: 7,
      w: 7,
      ci: 2,
      co: 2,
      k: 3,
      strides: [1, 1],
      pad: [
        [0, 0],
        [4, 0],
        [0, 5],
        [0, 0],
      ],
    },
  );
  return cases;
}

export function convGeometry(c: ConvCase) {
  return tf.backend_util.computeConv2DInfo([c.n, c.h, c.w, c.ci], [c.k, c.k, c.ci, c.co], c.strides, 1, c.pad);
}

export interface PoolCase {
  shape: Shape4;
  filter: number;
  stride: number;
  pad: 'same' | 'valid';
}

export const poolCases: PoolCase[] = [
  { shape: [2, 8, 8, 3], filter: 2, stride: 2, pad: 'valid' },
  { shape: [2, 9, 7, 3], filter: 2, stride: 2, pad: 'valid' },
  { shape: [1, 9, 9, 16], filter: 2, stride: 2, pad: 'same' },
  { shape: [8, 15, 15, 3], filter: 3, stride: 2, pad: 'same' },
  { shape: [2, 7, 9, 1], filter: 3, stride: 1, pad: 'same' },
  { shape: [2, 7, 7, 16], filter: 7, stride: 1, pad: 'valid' },
  { shape: [2, 9, 9, 3], filter: 3, stride: 3, pad: 'valid' },
];

/** Small CNN touching every op a ResNet training step uses. */
export function cnnLoss(x: tf.Tensor4D, labels: tf.Tensor2D, p: Record<string, tf.Tensor>): tf.Scalar {
  let h: tf.Tensor4D = tf.add(tf.conv2d(x, p.w1 as tf.Tensor4D, 1, 'same'), p.b1);
  const { mean, variance } = tf.moments(h, [0, 1, 2]);
  h = tf.add(tf.mul(tf.div(tf.sub(h, mean), tf.sqrt(tf.add(variance, 1e-5))), p.g), p.beta);
  h = tf.relu(h);
  h = tf.maxPool(h, 3, 2, 'same');
  h = tf.conv2d(h, p.w2 as tf.Tensor4D, 2, 'same');
  h = tf.maxPool(tf.relu(h), 2, 2, 'valid');
  h = tf.add(tf.clipByValue(h, -2, 2), tf.mul(tf.abs(h), 0.1));
  h = tf.add(h, tf.mul(tf.sign(h), 0.01));
  const pooled = tf.add(tf.mean(h, [1, 2]), tf.reshape(tf.avgPool(h, 2, 1, 'valid'), [h.shape[0], -1]));
  const logits = tf.add(tf.matMul(pooled, p.wf), p.bf);
  const ce = tf.losses.softmaxCrossEntropy(labels, logits);
  const nll = tf.neg(tf.mean(tf.sum(tf.mul(labels, tf.logSoftmax(logits)), 1)));
  return tf.add(ce, nll) as tf.Scalar;
}

export const cnnShapes: Record<string, number[]> = {
  w1: [3, 3, 3, 8],
  b1: [8],
  g: [8],
  beta: [8],
  w2: [3, 3, 8, 6],
  wf: [6, 5],
  bf: [5],
};

export function cnnInputs(batch: number) {
  const names = Object.keys(cnnShapes);
  const arrays = [
    { values: randomArray(batch * 16 * 16 * 3, 2000), shape: [batch, 16, 16, 3] },
    {
      values: Float32Array.from({ length: batch * 5 }, (_, i) => (i % 5 === ((i / 5) | 0) % 5 ? 1 : 0)),
      shape: [batch, 5],
    },
    ...names.map((name, i) => ({
      values: randomArray(size(cnnShapes[name]), 2100 + i).map((v) => (name === 'g' ? 1 + 0.5 * v : v)),
      shape: cnnShapes[name],
    })),
  ];
  const grads = (x: tf.Tensor, labels: tf.Tensor, ...ps: tf.Tensor[]) => {
    const f = (...args: tf.Tensor[]) => cnnLoss(x as tf.Tensor4D, labels as tf.Tensor2D, Object.fromEntries(names.map((n, i) => [n, args[i]])));
    const { value, grads } = tf.valueAndGrads(f)(ps);
    // Top-2 accuracy of some logits, as training loops report it.
    const logits = tf.matMul(tf.mean(x, [1, 2]), tf.reshape(tf.range(0, 15), [3, 5]));
    const top = tf.topk(logits, 2).indices;
    const hit = tf.equal(top, tf.expandDims(tf.argMax(labels, 1), 1));
    const acc = tf.mean(tf.cast(tf.any(hit, 1), 'float32'));
    return [value, ...grads, acc, tf.cast(top, 'float32')];
  };
  return { names, arrays, grads };
}
