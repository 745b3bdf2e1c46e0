/**
 * The depthwise convolution on wasm at MobileNetV2 (width 0.35, 96x96 input) shapes.
 *
 *   node dist/bench/depthwise.js [--batch 32] [--trials 3] [--no-cpu] [--tfjs-relu6] [--blocks-only|--kernels-only]
 *
 * 1. Kernels, ms per call: the stock forward (XNNPACK), gdp's DepthwiseConv2dNativeBackpropFilter and
 *    ...BackpropInput (auto path, and the SIMD tap path forced), and the same gradients on the tfjs cpu backend
 *    (what a model fell back to without them; one call each).
 * 2. Every inverted residual block of MobileNetV2-0.35 (1x1 conv, BN, ReLU6, 3x3 depthwise, BN, ReLU6, 1x1 conv,
 *    BN, + residual) as a forward and backward pass (tf.grads w.r.t. the input and all weights) built from
 *    tfjs-core ops and gdp's training batch norm: wall ms per step, and from one profiled step the share of the
 *    depthwise kernels (forward and both gradients) and of the ReLU6 gradient's ops.
 * Times are process cpu time (single-threaded kernels; wall time on a shared machine counts waits), the minimum
 * over trials; kernel times come from tf.profile (wall time per kernel), per kernel the least over trials.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
// tfjs-core's node bundle registers no gradients; the umbrella package registers them all.
import '@tensorflow/tfjs';

import { batchNormTrain } from '../src/shared/nn/batchnorm_train.js';
import { depthwiseGradOptions } from '../src/shared/kernels/wasm/depthwise_common.js';
import { registerWasmTrainingKernels } from '../src/shared/kernels/wasm/register_all.js';
import { makeDivisible, MOBILENET_V2_STAGES } from '../src/shared/models/mobilenet_v2.js';

const args = process.argv.slice(2);
const flag = (name: string, fallback: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const batch = flag('--batch', 32);
const trials = flag('--trials', 3);
const withCpu = !args.includes('--no-cpu');
// --tfjs-relu6: tfjs' own ReLU6 gradient instead of gdp's ClipGrad kernel, for comparison.
const tfjsRelu6 = args.includes('--tfjs-relu6');

/** One inverted residual block: input [res, res, cin], expansion t, output cout, depthwise stride. */
interface Block {
  res: number;
  cin: number;
  t: number;
  cout: number;
  stride: number;
}

/** MobileNetV2 (Sandler et al. 2018, table 2) at width 0.35 on 96x96 inputs: channels rounded to multiples of 8. */
function mobileNetV2Blocks(width = 0.35, input = 96): Block[] {
  const blocks: Block[] = [];
  let res = input / 2,
    cin = makeDivisible(32 * width);
  for (const [t, c, n, s] of MOBILENET_V2_STAGES) {
    const cout = makeDivisible(c * width);
    for (let i = 0; i < n; i++) {
      const stride = i === 0 ? s : 1;
      blocks.push({ res, cin, t, cout, stride });
      res = Math.ceil(res / stride);
      cin = cout;
    }
  }
  return blocks;
}

/** Process cpu time in ms: the kernels run on one thread, and on a shared machine wall time counts the waits. */
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e3;
}

/** Cpu ms per call of `f`: the minimum over trials of `reps` calls (after one warm-up call). */
function minMs(f: () => tf.Tensor | tf.Tensor[], reps: number): number {
  tf.dispose(f());
  let best = Infinity;
  for (let t = 0; t < trials; t++) {
    const start = cpuMs();
    // wasm and cpu run kernels synchronously: no read-back (a dataSync would add a copy of the output).
    for (let r = 0; r < reps; r++) tf.dispose(f());
    best = Math.min(best, (cpuMs() - start) / reps);
  }
  return best;
}

const pad = (v: string | number, width: number) => String(v).padStart(width);

async function onCpu<T>(f: () => T): Promise<T> {
  await tf.setBackend('cpu');
  try {
    return f();
  } finally {
    await tf.setBackend('wasm');
  }
}

/** The depthwise kernels at one block's shapes: x [batch, res, res, c], 3x3 'same'; the caller disposes. */
function depthwiseCase(b: Block) {
  const c = b.cin * b.t;
  const x = tf.randomNormal([batch, b.res, b.res, c]) as tf.Tensor4D;
  const w = tf.randomNormal([3, 3, c, 1]) as tf.Tensor4D;
  const y = tf.depthwiseConv2d(x, w, b.stride, 'same');
  const dy = tf.randomNormal(y.shape);
  const attrs = { strides: b.stride, pad: 'same', dilations: 1 };
  return {
    x,
    w,
    dy,
    attrs,
    tensors: [x, w, y, dy],
    fwd: () => tf.depthwiseConv2d(x, w, b.stride, 'same'),
    dW: () => tf.engine().runKernel(tf.DepthwiseConv2dNativeBackpropFilter, { x, dy }, { ...attrs, filterShape: w.shape }) as tf.Tensor,
    dx: () => tf.engine().runKernel(tf.DepthwiseConv2dNativeBackpropInput, { dy, filter: w }, { ...attrs, inputShape: x.shape }) as tf.Tensor,
  };
}

async function benchKernels(blocks: Block[]): Promise<void> {
  console.log(`Depthwise 3x3 'same' kernels, batch ${batch}, cpu ms per call (best of ${trials}); cpu dW/dx: tfjs-cpu backend, one call`);
  console.log('layer'.padEnd(20) + ['fwd', 'dW', 'dx', 'dx simd', 'cpu dW', 'cpu dx'].map((h) => pad(h, 9)).join(''));
  const seen = new Set<string>();
  for (const b of blocks) {
    const c = b.cin * b.t;
    const key = `${b.res}x${b.res}x${c} s${b.stride}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const { x, w, dy, attrs, tensors, fwd: forward, dW, dx } = depthwiseCase(b);
    const fwd = minMs(forward, 10);
    const ours = minMs(dW, 10),
      oursDx = minMs(dx, 10);
    depthwiseGradOptions.input = 'simd';
    const simdDx = minMs(dx, 10);
    depthwiseGradOptions.input = 'auto';
    let cpu = ['-', '-'];
    if (withCpu) {
      const arrays = [x, w, dy].map((t) => ({ values: t.dataSync(), shape: t.shape }));
      cpu = await onCpu(() => {
        const [xc, wc, dyc] = arrays.map((a) => tf.tensor(a.values, a.shape));
        const time = (f: () => tf.Tensor) => {
          const start = cpuMs();
          tf.dispose(f());
          return (cpuMs() - start).toFixed(1);
        };
        const out = [
          time(() => tf.engine().runKernel(tf.DepthwiseConv2dNativeBackpropFilter, { x: xc, dy: dyc }, { ...attrs, filterShape: w.shape }) as tf.Tensor),
          time(() => tf.engine().runKernel(tf.DepthwiseConv2dNativeBackpropInput, { dy: dyc, filter: wc }, { ...attrs, inputShape: x.shape }) as tf.Tensor),
        ];
        tf.dispose([xc, wc, dyc]);
        return out;
      });
    }
    console.log(key.padEnd(20) + [fwd, ours, oursDx, simdDx].map((v) => pad(v.toFixed(2), 9)).join('') + cpu.map((v) => pad(v, 9)).join(''));
    tf.dispose(tensors);
  }
}

/** Forward of one block from tfjs-core ops and gdp's training batch norm; weights [w1, a1, c1, wd, a2, c2, w3, a3, c3]. */
function blockForward(b: Block, x: tf.Tensor4D, p: tf.Tensor[]): tf.Tensor4D {
  const bn = (t: tf.Tensor4D, a: tf.Tensor, c: tf.Tensor) => batchNormTrain(t, a as tf.Tensor1D, c as tf.Tensor1D, 1e-5, () => {});
  let h = x;
  if (b.t !== 1) h = tf.relu6(bn(tf.conv2d(h, p[0] as tf.Tensor4D, 1, 'same'), p[1], p[2]));
  h = tf.relu6(bn(tf.depthwiseConv2d(h, p[3] as tf.Tensor4D, b.stride, 'same'), p[4], p[5]));
  h = bn(tf.conv2d(h, p[6] as tf.Tensor4D, 1, 'same'), p[7], p[8]);
  return b.stride === 1 && b.cin === b.cout ? tf.add(h, x) : h;
}

function blockParams(b: Block): tf.Tensor[] {
  const e = b.cin * b.t;
  const he = (shape: number[], fanIn: number) => tf.mul(tf.randomNormal(shape), Math.sqrt(2 / fanIn));
  return [
    he([1, 1, b.cin, e], b.cin),
    tf.ones([e]),
    tf.zeros([e]),
    he([3, 3, e, 1], 9),
    tf.ones([e]),
    tf.zeros([e]),
    he([1, 1, e, b.cout], e),
    tf.ones([b.cout]),
    tf.zeros([b.cout]),
  ];
}

const DEPTHWISE = [tf.DepthwiseConv2dNative, tf.DepthwiseConv2dNativeBackpropFilter, tf.DepthwiseConv2dNativeBackpropInput];
// The ReLU6 gradient: gdp's one-pass kernel, or tfjs' composition (LessEqual, Step, Cast, Multiply).
const RELU6_GRAD = ['GdpClipGrad', 'LessEqual', 'Step', 'Cast', 'Multiply'];

async function benchBlocks(blocks: Block[]): Promise<void> {
  console.log(`\nMobileNetV2-0.35 blocks at 96x96, batch ${batch}: forward + backward, cpu ms per step (best of ${trials});`);
  console.log("dw fwd/dW/dx: cpu ms of the block's depthwise kernels timed alone; dw %: their share of the step;");
  console.log('p: shares of kernel time in profiled steps (wall time per kernel, least of the trials)');
  console.log('block'.padEnd(30) + ['step', 'dw fwd', 'dW', 'dx', 'dw %', 'p dw %', 'p relu6g', 'p conv %'].map((h) => pad(h, 9)).join(''));
  let total = 0,
    totalDw = 0;
  const sums = new Map<string, number>();
  let profiledTotal = 0;
  for (const [i, b] of blocks.entries()) {
    const x = tf.randomNormal([batch, b.res, b.res, b.cin]) as tf.Tensor4D;
    const p = blockParams(b);
    const used = b.t === 1 ? p.slice(3) : p;
    const loss = (xi: tf.Tensor, ...ps: tf.Tensor[]) => {
      const full = b.t === 1 ? [p[0], p[1], p[2], ...ps] : ps;
      return tf.sum(blockForward(b, xi as tf.Tensor4D, full));
    };
    const step = () => tf.grads(loss)([x, ...used]);
    const ms = minMs(step, 2);
    total += ms;
    const dwCase = depthwiseCase(b);
    const dwMs = [dwCase.fwd, dwCase.dW, dwCase.dx].map((f) => minMs(f, 5));
    tf.dispose(dwCase.tensors);
    const dwSum = dwMs.reduce((a, v) => a + v, 0);
    totalDw += dwSum;
    // Per kernel, the least of its per-step totals over `trials` profiled steps (spikes are other processes).
    // Scopes that are not kernels (tf.customGrad's 'forward', which holds the batch norm's kernels) are left out.
    const byName = new Map<string, number>();
    for (let t = 0; t < trials; t++) {
      const profile = await tf.profile(() => {
        tf.dispose(step());
      });
      const sums = new Map<string, number>();
      for (const k of profile.kernels) {
        if (tf.getKernel(k.name, 'wasm') == null) continue;
        sums.set(k.name, (sums.get(k.name) ?? 0) + (k.kernelTimeMs as number));
      }
      for (const [name, v] of sums) byName.set(name, Math.min(byName.get(name) ?? Infinity, v));
    }
    const all = [...byName.values()].reduce((s, v) => s + v, 0);
    profiledTotal += all;
    for (const [name, v] of byName) sums.set(name, (sums.get(name) ?? 0) + v);
    const get = (names: string[]) => names.reduce((s, n) => s + (byName.get(n) ?? 0), 0);
    const share = (names: string[]) => ((100 * get(names)) / all).toFixed(1);
    const name = `${i} ${b.res}x${b.res}x${b.cin} t${b.t} s${b.stride} ->${b.cout}`;
    console.log(
      name.padEnd(30) +
        [ms, ...dwMs].map((v) => pad(v.toFixed(2), 9)).join('') +
        [((100 * dwSum) / ms).toFixed(1), share(DEPTHWISE), share(RELU6_GRAD), share([tf.Conv2D, tf.Conv2DBackpropFilter, tf.Conv2DBackpropInput])]
          .map((v) => pad(v, 9))
          .join(''),
    );
    tf.dispose([x, ...p]);
  }
  const pct = (names: string[]) => ((100 * names.reduce((s, n) => s + (sums.get(n) ?? 0), 0)) / profiledTotal).toFixed(1);
  console.log(
    `all ${blocks.length} blocks: ${total.toFixed(1)} ms per step; depthwise kernels ${totalDw.toFixed(1)} ms ` +
      `(${((100 * totalDw) / total).toFixed(1)}% of the step); profiled: depthwise ${pct(DEPTHWISE)}% of kernel time ` +
      `(forward ${pct([DEPTHWISE[0]])}%, dW ${pct([DEPTHWISE[1]])}%, dx ${pct([DEPTHWISE[2]])}%), ReLU6 gradient ops ${pct(RELU6_GRAD)}% ` +
      '(Multiply also counts other products)',
  );
  const top = [...sums.entries()].sort((a, b) => b[1] - a[1]).slice(0, 10);
  console.log('top kernels (ms per step over all blocks): ' + top.map(([n, v]) => `${n} ${v.toFixed(1)}`).join(', '));
}

async function main(): Promise<void> {
  const tfjsRelu6Gradient = tf.getGradient(tf.Relu6);
  registerWasmTrainingKernels();
  if (tfjsRelu6 && tfjsRelu6Gradient != null) tf.registerGradient(tfjsRelu6Gradient);
  await tf.setBackend('wasm');
  await tf.ready();
  const blocks = mobileNetV2Blocks();
  if (!args.includes('--blocks-only')) await benchKernels(blocks);
  if (!args.includes('--kernels-only')) await benchBlocks(blocks);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
