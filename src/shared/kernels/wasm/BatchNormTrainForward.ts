/**
 * Training-mode batch norm forward for wasm in three passes over x: channel
 * sums, channel sums of squared deviations, and the affine output (see
 * ../custom_kernels.ts for the contract). The tfjs-op composition costs
 * about six passes and as many full-size intermediates.
 */
import { KernelConfig, KernelFunc, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs-core';

import { BatchNormTrainForward, BatchNormTrainForwardAttrs } from '../custom_kernels.js';
import { ChannelPasses } from './channel_ops.js';
import { required, WasmKernelArgs } from './kernel_utils.js';
import { withScratch } from './scratch.js';

export function batchNormTrainForward(args: WasmKernelArgs<NamedTensorInfoMap, BatchNormTrainForwardAttrs>): TensorInfo[] {
  const { inputs, backend, attrs } = args;
  const x = required(inputs.x, 'x');
  const a = required(inputs.a, 'a');
  const c = required(inputs.c, 'c');
  return withScratch(backend, (s) => {
    const cp = new ChannelPasses(s, x);
    const count = cp.total / cp.channels;
    const xi = cp.at(x);
    const [sum] = cp.reduce(
      1,
      (v0, n, [acc]) => cp.simd!.sumCyclic(cp.ptr(x) + 16 * v0, n, acc, 4 * cp.period),
      (h, i, ch, [acc]) => {
        acc[ch] += h[xi + i];
      },
    );
    const mean = sum.map((v) => v / count);
    const meanTile = cp.tile(mean);
    const meanF = Float32Array.from(mean);
    const [sq] = cp.reduce(
      1,
      (v0, n, [acc]) => cp.simd!.sqDevSumCyclic(cp.ptr(x) + 16 * v0, n, meanTile, acc, 4 * cp.period),
      (h, i, ch, [acc]) => {
        const d = h[xi + i] - meanF[ch];
        acc[ch] += d * d;
      },
    );
    const variance = sq.map((v) => v / count);
    const rs = variance.map((v) => 1 / Math.sqrt(v + attrs.epsilon));
    const av = cp.read(a),
      cv = cp.read(c);
    const scale = Float32Array.from(rs, (r, ch) => av[ch] * r);
    const shift = Float32Array.from(mean, (m, ch) => cv[ch] - m * scale[ch]);
    const scaleTile = cp.tile(scale),
      shiftTile = cp.tile(shift);
    const y = backend.makeOutput(x.shape, 'float32');
    const yi = cp.at(y);
    cp.map(
      y,
      (n) => cp.simd!.affineCyclic(cp.ptr(x), n, scaleTile, shiftTile, cp.ptr(y), 4 * cp.period),
      (h, i, ch) => {
        h[yi + i] = h[xi + i] * scale[ch] + shift[ch];
      },
    );
    return [y, cp.vector(mean), cp.vector(variance), cp.vector(rs)];
  });
}

export const batchNormTrainForwardConfig: KernelConfig = {
  kernelName: BatchNormTrainForward,
  backendName: 'wasm',
  kernelFunc: batchNormTrainForward as unknown as KernelFunc,
};
