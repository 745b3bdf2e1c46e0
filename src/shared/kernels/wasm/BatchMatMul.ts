/**
 * BatchMatMul for the wasm backend with explicit transposes.
 *
 * The stock kernel's transposeA/transposeB paths run at ~1 GFLOP/s versus
 * ~16 GFLOP/s for the plain product (they are hit by every matMul gradient),
 * so a transposed operand is first materialised with the Transpose kernel
 * and the stock kernel then runs without transposes. It also works around
 * a stale-operator bug of the stock kernel (see freshIfReshaped).
 */
import { BatchMatMul, BatchMatMulAttrs, BatchMatMulInputs, KernelConfig, KernelFunc, TensorInfo, Transpose, util } from '@tensorflow/tfjs-core';

import { runStockKernel, required, stockKernelSetup, WasmKernelArgs } from './kernel_utils.js';
import { Scratch, withScratch } from './scratch.js';

/** Swaps the last two axes; a pure reshape when one of them has size 1. */
function transposeInner(s: Scratch, x: TensorInfo): TensorInfo {
  const rank = x.shape.length;
  const shape = x.shape.slice();
  [shape[rank - 2], shape[rank - 1]] = [shape[rank - 1], shape[rank - 2]];
  if (x.shape[rank - 1] === 1 || x.shape[rank - 2] === 1) {
    return s.view(x, shape);
  }
  const perm = shape.map((_, i) => i);
  [perm[rank - 2], perm[rank - 1]] = [rank - 1, rank - 2];
  return s.run(Transpose, { x }, { perm });
}

/**
 * The stock kernel caches XNNPACK operators (with packed B) by B's tensor
 * id, so the same data used as B under another shape (a reshape shares the
 * id) gets the stale operator: wrong results or out-of-bounds accesses.
 * B is therefore passed under a fresh id unless it has its buffer's own
 * shape; the fresh id is released (with its cached operator) afterwards.
 */
function freshIfReshaped(s: Scratch, b: TensorInfo): TensorInfo {
  const own = s.backend.dataIdMap.get(b.dataId).shape;
  return util.arraysEqual(own, b.shape) ? b : s.subView(b, 0, b.shape);
}

export function batchMatMul(args: WasmKernelArgs<BatchMatMulInputs, BatchMatMulAttrs>): TensorInfo {
  const { inputs, backend, attrs } = args;
  const { transposeA, transposeB } = attrs;
  return withScratch(backend, (s) => {
    let a = required(inputs.a, 'a');
    let b = required(inputs.b, 'b');
    a = transposeA ? transposeInner(s, a) : a;
    b = freshIfReshaped(s, transposeB ? transposeInner(s, b) : b);
    return runStockKernel(BatchMatMul, backend, { a, b }, { transposeA: false, transposeB: false });
  });
}

export const batchMatMulConfig: KernelConfig = {
  kernelName: BatchMatMul,
  backendName: 'wasm',
  // We delegate to the stock kernel, which needs its setup to have run.
  setupFunc: stockKernelSetup(BatchMatMul),
  // The registry's KernelFunc takes an untyped backend; ours needs wasm's.
  kernelFunc: batchMatMul as unknown as KernelFunc,
};
