/**
 * Per-kernel cpu time of training steps on wasm (process.cpuUsage around every kernel call, exclusive of the kernels
 * it calls), for finding where a step's time goes on a shared machine:
 *
 *   node dist/bench/kernel_profile.js [--arch mnist.resnet20] [--batch 64] [--steps 3]
 *
 * Conv kernels are split by filter size and stride; a Conv2D called from another kernel is listed under the caller
 * ('Conv2DBackpropInput > Conv2D ...').
 */
import { Command } from 'commander';
import { getKernelsForBackend, KernelConfig, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs-core';
import { initBackend } from '../src/shared/backend.js';
import { trainingStep } from './train_step.js';

const opts = new Command()
  .name('kernel_profile')
  .option('--arch <name>', 'architecture', 'mnist.resnet20')
  .option('--batch <n>', 'batch size', (v) => Number(v), 64)
  .option('--steps <n>', 'profiled steps', (v) => Number(v), 3)
  .parse()
  .opts<{ arch: string; batch: number; steps: number }>();

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

await initBackend('wasm');
const totals = new Map<string, number>();
const stack: Array<{ key: string; child: number }> = [];
let on = false;
const describe = (name: string, inputs: NamedTensorInfoMap, attrs: Record<string, unknown>) => {
  const w = (inputs.filter ?? inputs.dy) as TensorInfo | undefined;
  if (!name.startsWith('Conv2D') || w == null) return name;
  const f = (inputs.filter as TensorInfo | undefined)?.shape ?? attrs.filterShape;
  return `${name} k${(f as number[])?.slice(0, 2).join('x')} s${String(attrs.strides)}`;
};
for (const config of getKernelsForBackend('wasm') as KernelConfig[]) {
  const inner = config.kernelFunc;
  (config as { kernelFunc: unknown }).kernelFunc = (args: Parameters<typeof inner>[0]) => {
    if (!on) return inner(args);
    const key = (stack.length > 0 ? stack[stack.length - 1].key + ' > ' : '') + describe(config.kernelName, args.inputs, args.attrs as Record<string, unknown>);
    const frame = { key, child: 0 };
    stack.push(frame);
    const t0 = cpuMs();
    try {
      return inner(args);
    } finally {
      const dt = cpuMs() - t0;
      stack.pop();
      if (stack.length > 0) stack[stack.length - 1].child += dt;
      totals.set(key, (totals.get(key) ?? 0) + dt - frame.child);
    }
  };
}

const { model, gradients: step } = trainingStep(opts.arch, opts.batch);
step();
on = true;
const t0 = cpuMs();
for (let i = 0; i < opts.steps; i++) step();
const all = (cpuMs() - t0) / opts.steps;
on = false;
const kernels = [...totals.values()].reduce((a, b) => a + b, 0) / opts.steps;
console.log(`${opts.arch} b${opts.batch}: ${all.toFixed(0)} cpu ms per step (gradients only), kernels ${kernels.toFixed(0)}`);
for (const [k, v] of [...totals].sort((a, b) => b[1] - a[1])) {
  const ms = v / opts.steps;
  if (ms >= 0.5) console.log(`${ms.toFixed(1).padStart(8)} ms ${((100 * ms) / all).toFixed(1).padStart(5)}%  ${k}`);
}
model.dispose();
