import { registerKernel, type KernelConfig } from '@tensorflow/tfjs-core';

const kernels: KernelConfig[] = [];

export function registerWasmTrainingKernels(): void {
  for (const k of kernels) registerKernel(k);
}
