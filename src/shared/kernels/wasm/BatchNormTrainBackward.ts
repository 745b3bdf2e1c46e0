/**
 * Training-mode batch norm gradient for wasm in two passes: the channel
 * sums of dy and dy * (x - mean) over dy and x together, then
 * dx = dy * A + x * B + C with per-channel A, B, C (see
 * ../custom_kernels.ts). The tfjs-op composition costs about seven passes.
 */
import { KernelConfig, KernelFunc, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs-core';

import { BatchNormTrainBackward } from '../custom_kernels.js';
import { ChannelPasses } from './channel_ops.js';
import { required, WasmKernelArgs } from './kernel_utils.js';
import { withScratch } from './scratch.js';

export function batchNormTrainBackward(args: WasmKernelArgs<NamedTensorInfoMap, {}>): TensorInfo[] {
  const { inputs, backend } = args;
  const dy = required(inputs.dy, 'dy');
  const x = required(inputs.x, 'x');
  const meanT = required(inputs.mean, 'mean');
  const rsT = required(inputs.rs, 'rs');
  const a = required(inputs.a, 'a');
  return withScratch(backend, (s) => {
    const cp = new ChannelPasses(s, x);
    const count = cp.total / cp.channels;
    const mean = cp.read(meanT),
      r = cp.read(rsT),
      av = cp.read(a);
    const meanTile = cp.tile(mean);
    const dyi = cp.at(dy),
      xi = cp.at(x);
    const [sumDy, sumDyXc] = cp.reduce(
      2,
      (v0, n, [accDy, accDyXc]) => cp.simd!.gradSumsCyclic(cp.ptr(dy) + 16 * v0, cp.ptr(x) + 16 * v0, n, meanTile, accDy, accDyXc, 4 * cp.period),
      (h, i, ch, [accDy, accDyXc]) => {
        accDy[ch] += h[dyi + i];
        accDyXc[ch] += h[dyi + i] * (h[xi + i] - mean[ch]);
      },
    );
    // dx = a*r*dy - a*r^3*sumDyXc/n * (x - mean) - a*r*sumDy/n, as dy*A + x*B + C.
    const A = Float32Array.from(r, (rc, ch) => av[ch] * rc);
    const B = Float32Array.from(A, (ac, ch) => (-ac * r[ch] * r[ch] * sumDyXc[ch]) / count);
    const C = Float32Array.from(A, (ac, ch) => -B[ch] * mean[ch] - (ac * sumDy[ch]) / count);
    const tiles = [A, B, C].map((v) => cp.tile(v));
    const dx = backend.makeOutput(x.shape, 'float32');
    const dxi = cp.at(dx);
    cp.map(
      dx,
      (n) => cp.simd!.affine2Cyclic(cp.ptr(dy), cp.ptr(x), n, tiles[0], tiles[1], tiles[2], cp.ptr(dx), 4 * cp.period),
      (h, i, ch) => {
        h[dxi + i] = h[dyi + i] * A[ch] + h[xi + i] * B[ch] + C[ch];
      },
    );
    return [dx, cp.vector(sumDyXc.map((v, ch) => v * r[ch])), cp.vector(sumDy)];
  });
}

export const batchNormTrainBackwardConfig: KernelConfig = {
  kernelName: BatchNormTrainBackward,
  backendName: 'wasm',
  kernelFunc: batchNormTrainBackward as unknown as KernelFunc,
};
