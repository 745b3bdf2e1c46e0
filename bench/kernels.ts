/**
 * Micro-benchmark of the wasm training kernels.
 *
 *   node dist/bench/kernels.js [--stock] [--trials N] [name-filter]
 *
 * Prints GFLOP/s of Conv2D forward, Conv2DBackpropInput and
 * Conv2DBackpropFilter on ResNet-56 (batch 64) and ResNet-50 (batch 8)
 * shapes, plus timings of the other replaced kernels against their forward
 * counterparts. `--stock` also times the stock wasm Conv2DBackpropInput.
 * Each number is the minimum over trials of a timed loop (warm-up excluded,
 * one dataSync at the end of each loop); see timeAll.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-wasm';

import { getStockKernel } from '../src/shared/kernels/wasm/kernel_utils.js';
import { registerWasmTrainingKernels } from '../src/shared/kernels/wasm/register_all.js';

interface ConvShape {
  name: string;
  n: number;
  hw: number;
  ci: number;
  co: number;
  k: number;
  s: number;
}

const convShapes: ConvShape[] = [
  { name: 'r56 32x32x16 3x3', n: 64, hw: 32, ci: 16, co: 16, k: 3, s: 1 },
  { name: 'r56 16x16x32 3x3', n: 64, hw: 16, ci: 32, co: 32, k: 3, s: 1 },
  { name: 'r56 8x8x64 3x3', n: 64, hw: 8, ci: 64, co: 64, k: 3, s: 1 },
  { name: 'r56 32->16 3x3 s2', n: 64, hw: 32, ci: 16, co: 32, k: 3, s: 2 },
  { name: 'r56 16->8 3x3 s2', n: 64, hw: 16, ci: 32, co: 64, k: 3, s: 2 },
  { name: 'r56 32->16 1x1 s2', n: 64, hw: 32, ci: 16, co: 32, k: 1, s: 2 },
  { name: 'r56 16->8 1x1 s2', n: 64, hw: 16, ci: 32, co: 64, k: 1, s: 2 },
  { name: 'r50 56x56x64 1x1', n: 8, hw: 56, ci: 64, co: 64, k: 1, s: 1 },
  { name: 'r50 56x56x64->256 1x1', n: 8, hw: 56, ci: 64, co: 256, k: 1, s: 1 },
  { name: 'r50 56x56x64 3x3', n: 8, hw: 56, ci: 64, co: 64, k: 3, s: 1 },
  { name: 'r50 stem 224x224x3 7x7 s2', n: 8, hw: 224, ci: 3, co: 64, k: 7, s: 2 },
];

const args = process.argv.slice(2);
const withStock = args.includes('--stock');
const trialsArg = args.indexOf('--trials');
const trials = trialsArg >= 0 ? Number(args[trialsArg + 1]) : 5;
const filter = args.find((a, i) => !a.startsWith('--') && (trialsArg < 0 || i !== trialsArg + 1));

/**
 * Ms per call of each function: the minimum over `trials` timed loops, the
 * functions' loops interleaved so that they see the same machine load (other
 * processes compete for the 2 cores; the minimum is the least disturbed).
 */
function timeAll(fs: Array<() => tf.Tensor>, targetMs = 200): number[] {
  const reps = fs.map((f) => {
    for (let i = 0; i < 2; i++) {
      const out = f();
      out.dataSync();
      out.dispose();
    }
    const t0 = performance.now();
    const probe = f();
    probe.dataSync();
    probe.dispose();
    const once = Math.max(performance.now() - t0, 0.01);
    return Math.max(2, Math.min(200, Math.round(targetMs / once)));
  });
  const best = fs.map(() => Infinity);
  for (let t = 0; t < trials; t++) {
    fs.forEach((f, i) => {
      let last: tf.Tensor | null = null;
      const start = performance.now();
      for (let r = 0; r < reps[i]; r++) {
        last?.dispose();
        last = f();
      }
      last!.dataSync();
      best[i] = Math.min(best[i], (performance.now() - start) / reps[i]);
      last!.dispose();
    });
  }
  return best;
}

function time(f: () => tf.Tensor, targetMs = 200): number {
  return timeAll([f], targetMs)[0];
}

const pad = (v: string | number, width: number) => String(v).padStart(width);

function benchConvs(): void {
  console.log(`Conv2D on wasm, GFLOP/s (best of ${trials}); ratio = time / fwd time`);
  console.log(
    'shape'.padEnd(28) + pad('fwd', 8) + pad('bwd-in', 8) + pad('bwd-f', 8) + pad('in/fwd', 8) + pad('f/fwd', 8) + (withStock ? pad('stock-in', 10) : ''),
  );
  for (const c of convShapes) {
    if (filter != null && !c.name.includes(filter)) continue;
    const x = tf.randomNormal([c.n, c.hw, c.hw, c.ci]) as tf.Tensor4D;
    const w = tf.randomNormal([c.k, c.k, c.ci, c.co]) as tf.Tensor4D;
    const y = tf.conv2d(x, w, c.s, 'same');
    const dy = tf.randomNormal(y.shape);
    const [, oh, ow] = y.shape;
    const gflop = (2 * c.n * oh * ow * c.k * c.k * c.ci * c.co) / 1e9;
    const [fwd, bwdIn, bwdF] = timeAll([
      () => tf.conv2d(x, w, c.s, 'same'),
      () => tf.engine().runKernel(tf.Conv2DBackpropInput, { dy, filter: w }, { strides: c.s, pad: 'same', inputShape: x.shape }) as tf.Tensor,
      () => tf.engine().runKernel(tf.Conv2DBackpropFilter, { x, dy }, { strides: c.s, pad: 'same', filterShape: w.shape }) as tf.Tensor,
    ]);
    let stock = '';
    const stockConfig = getStockKernel(tf.Conv2DBackpropInput);
    if (withStock && stockConfig != null) {
      const backend = tf.backend();
      const ms = time(() => {
        const info = stockConfig.kernelFunc({
          inputs: { dy, filter: w },
          backend,
          attrs: { strides: c.s, pad: 'same', inputShape: x.shape },
        }) as tf.TensorInfo;
        return tf.engine().makeTensorFromTensorInfo(info);
      }, 100);
      stock = pad(((gflop / ms) * 1e3).toFixed(2), 10);
    }
    const g = (ms: number) => pad(((gflop / ms) * 1e3).toFixed(2), 8);
    console.log(c.name.padEnd(28) + g(fwd) + g(bwdIn) + g(bwdF) + pad((bwdIn / fwd).toFixed(2), 8) + pad((bwdF / fwd).toFixed(2), 8) + stock);
    tf.dispose([x, w, y, dy]);
  }
}

function benchOthers(): void {
  console.log(`\nOther kernels, ms per call (best of ${trials}); ` + 'ref = forward or reference op, stock = replaced wasm kernel');
  console.log('kernel'.padEnd(46) + pad('ref', 9) + pad('ours', 9) + pad('stock', 9));
  const row = (name: string, fs: Array<() => tf.Tensor>) => {
    if (filter != null && !name.includes(filter)) return;
    const [ref, ours, stock] = timeAll(fs, 100);
    console.log(name.padEnd(46) + pad(ref.toFixed(2), 9) + pad(ours.toFixed(2), 9) + pad(stock.toFixed(2), 9));
  };
  const runStock = (name: string, inputs: tf.NamedTensorMap, attrs: object) => {
    const config = getStockKernel(name)!;
    const info = config.kernelFunc({
      inputs,
      backend: tf.backend(),
      attrs: attrs as tf.NamedAttrMap,
    }) as tf.TensorInfo;
    return tf.engine().makeTensorFromTensorInfo(info);
  };
  const pools: Array<[string, [number, number, number, number], number, number, 'same' | 'valid']> = [
    ['r50 stem 112x112x64 3x3 s2 same (b8)', [8, 112, 112, 64], 3, 2, 'same'],
    ['32x32x16 2x2 s2 valid (b64)', [64, 32, 32, 16], 2, 2, 'valid'],
    ['8x8x64 8x8 global (b64)', [64, 8, 8, 64], 8, 8, 'valid'],
  ];
  for (const [name, shape, f, s, padding] of pools) {
    const x = tf.randomNormal(shape) as tf.Tensor4D;
    const y = tf.maxPool(x, f, s, padding);
    const dy = tf.randomNormal(y.shape);
    const attrs = { filterSize: f, strides: s, pad: padding };
    row(`MaxPoolGrad ${name}`, [
      () => tf.maxPool(x, f, s, padding),
      () => tf.engine().runKernel(tf.MaxPoolGrad, { dy, input: x, output: y }, attrs) as tf.Tensor,
      () => runStock(tf.MaxPoolGrad, { dy, input: x, output: y }, attrs),
    ]);
    row(`AvgPoolGrad ${name}`, [
      () => tf.avgPool(x, f, s, padding),
      () => tf.engine().runKernel(tf.AvgPoolGrad, { dy, input: x }, attrs) as tf.Tensor,
      () => runStock(tf.AvgPoolGrad, { dy, input: x }, attrs),
    ]);
    tf.dispose([x, y, dy]);
  }
  for (const shape of [
    [64, 32, 32, 16],
    [8, 56, 56, 64],
  ]) {
    const x = tf.randomNormal(shape);
    const axis = [0, 1, 2];
    // ref: the innermost-axis reduction of the same tensor.
    row(`Sum over [0,1,2] of [${shape}]`, [() => tf.sum(x, 3), () => tf.sum(x, axis), () => runStock(tf.Sum, { x }, { axis, keepDims: false })]);
    row(`Mean over [0,1,2] of [${shape}]`, [() => tf.mean(x, 3), () => tf.mean(x, axis), () => runStock(tf.Mean, { x }, { axis, keepDims: false })]);
    row(`Identity (clone) of [${shape}]`, [() => tf.reshape(x, [-1]), () => tf.clone(x), () => runStock(tf.Identity, { x }, {})]);
    x.dispose();
  }
  const mm: Array<[number, number, number]> = [
    [64, 64, 10],
    [512, 512, 512],
    [64, 2048, 1000],
  ];
  for (const [m, k, n] of mm) {
    const a = tf.randomNormal([m, k]),
      aT = tf.randomNormal([k, m]);
    const b = tf.randomNormal([k, n]),
      bT = tf.randomNormal([n, k]);
    const name = `matMul ${m}x${k} @ ${k}x${n}`;
    // ref: the plain product.
    row(`${name} transposeA`, [
      () => tf.matMul(a, b),
      () => tf.matMul(aT, b, true, false),
      () => runStock(tf.BatchMatMul, { a: aT, b }, { transposeA: true, transposeB: false }),
    ]);
    row(`${name} transposeB`, [
      () => tf.matMul(a, b),
      () => tf.matMul(a, bT, false, true),
      () => runStock(tf.BatchMatMul, { a, b: bT }, { transposeA: false, transposeB: true }),
    ]);
    tf.dispose([a, aT, b, bT]);
  }
}

async function main(): Promise<void> {
  registerWasmTrainingKernels();
  await tf.setBackend('wasm');
  await tf.ready();
  benchConvs();
  benchOthers();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
