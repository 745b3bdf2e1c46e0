/**
 * Interleaved A/B of full training steps on wasm, for measuring kernel changes on a shared machine:
 *
 *   node dist/bench/train_ab.js [--arch cifar.resnet56] [--batch 64] [--rounds 5] [--untuned] [--direct]
 *
 * Alternates one step with the XNNPACK-only paths (im2col/swapped filter gradients, stock Conv2D, BatchNorm and
 * ReLU gradients composed from tfjs ops) and one with the defaults (hand-written SIMD kernels), in the same
 * process, and prints the median process cpu time per step of each and their ratio. Cpu time rather than wall
 * time: other processes on the cores lengthen wall time but not (much) the work this process does. `--untuned` adds
 * a third variant, the SIMD kernels without their blocking refinements (Conv2D's overlapping last tile instead of
 * 1-3 pixel tiles, 512 KiB filter-gradient image groups instead of 64 KiB), which give the same bits. `--direct` adds
 * the SIMD kernels without Winograd (stride-1 3x3 convolutions on the direct tiles).
 */
import { Command } from 'commander';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/shared/backend.js';
import { customKernelOptions } from '../src/shared/kernels/custom_kernels.js';
import { conv2DOptions } from '../src/shared/kernels/wasm/Conv2D.js';
import { conv2DBackpropFilterOptions } from '../src/shared/kernels/wasm/Conv2DBackpropFilter.js';
import { trainingStep } from './train_step.js';

const opts = new Command()
  .name('train_ab')
  .option('--arch <name>', 'architecture', 'cifar.resnet56')
  .option('--batch <n>', 'batch size', (v) => Number(v), 64)
  .option('--rounds <n>', 'timed steps of each variant', (v) => Number(v), 5)
  .option('--untuned', 'also time the SIMD kernels without their blocking refinements')
  .option('--direct', 'also time the SIMD kernels without Winograd')
  .parse()
  .opts<{ arch: string; batch: number; rounds: number; untuned?: boolean; direct?: boolean }>();

const tuned = { remainderTiles: conv2DOptions.remainderTiles, groupBytes: conv2DBackpropFilterOptions.groupBytes };

const variants: Record<string, () => void> = {
  xnnpack: () => {
    conv2DBackpropFilterOptions.strategy = 'xnnpack';
    conv2DOptions.simd = false;
    customKernelOptions.enabled = false;
  },
  simd: () => {
    conv2DBackpropFilterOptions.strategy = 'auto';
    conv2DOptions.simd = true;
    conv2DOptions.winograd = true;
    customKernelOptions.enabled = true;
    conv2DOptions.remainderTiles = tuned.remainderTiles;
    conv2DBackpropFilterOptions.groupBytes = tuned.groupBytes;
  },
};
if (opts.untuned) {
  variants.untuned = () => {
    variants.simd();
    conv2DOptions.remainderTiles = false;
    conv2DBackpropFilterOptions.groupBytes = 1 << 19;
  };
}

if (opts.direct) {
  variants.direct = () => {
    variants.simd();
    conv2DOptions.winograd = false;
  };
}

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

await initBackend('wasm');
const { model, step } = trainingStep(opts.arch, opts.batch);

const times: Record<string, number[]> = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
for (const set of Object.values(variants)) {
  set();
  step(); // warm-up: kernel set-up, first allocations
}
const tensors = tf.memory().numTensors;
for (let r = 0; r < opts.rounds; r++) {
  for (const [name, set] of Object.entries(variants)) {
    set();
    const t0 = cpuMs();
    step();
    times[name].push(cpuMs() - t0);
  }
}
variants.simd();
const median = (a: number[]) => [...a].sort((p, q) => p - q)[Math.floor(a.length / 2)];
for (const [name, t] of Object.entries(times)) {
  console.log(
    `${name.padEnd(8)} ${median(t).toFixed(0)} cpu ms per step (${((opts.batch * 1000) / median(t)).toFixed(1)} img/s); all: ${t.map((v) => v.toFixed(0)).join(' ')}`,
  );
}
const untuned =
  (times.untuned ? `, ${(median(times.untuned) / median(times.simd)).toFixed(3)}x untuned` : '') +
  (times.direct ? `, ${(median(times.direct) / median(times.simd)).toFixed(3)}x direct (no Winograd)` : '');
console.log(
  `${opts.arch} b${opts.batch}: simd is ${(median(times.xnnpack) / median(times.simd)).toFixed(3)}x xnnpack${untuned}; tensors ${tensors} -> ${tf.memory().numTensors}`,
);
model.dispose();
