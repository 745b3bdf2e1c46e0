/**
 * Identity for the wasm backend without a copy.
 *
 * tf.grads clones every tensor it saves for the backward pass
 * (Engine.saveTensorsForBackwardMode -> clone -> Identity), and the stock
 * wasm Identity copies the whole buffer each time (~8% of a ResNet block's
 * training step). Tensors are immutable, so, like the cpu backend's
 * Identity and the wasm Reshape, the output shares the input's data and
 * bumps its reference count.
 */
import { Identity, IdentityInputs, KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';

import { required, WasmKernelArgs } from './kernel_utils.js';

export function identity(args: WasmKernelArgs<IdentityInputs, {}>): TensorInfo {
  const x = required(args.inputs.x, 'x');
  args.backend.incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

export const identityConfig: KernelConfig = {
  kernelName: Identity,
  backendName: 'wasm',
  // The registry's KernelFunc takes an untyped backend; ours needs wasm's.
  kernelFunc: identity as unknown as KernelFunc,
};
