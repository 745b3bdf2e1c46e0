/**
 * Shared plumbing for the wasm training kernels: calling the wasm backend's own kernels (and the stock ones ours
 * replaced) on TensorInfos, geometry under short names, input checks. Scratch tensors are in scratch.ts, heap
 * block copies in heap_layout.ts.
 */
import { backend_util, getKernel, KernelConfig, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { GdpError } from '../../errors.js';

export const WASM = 'wasm';

/** Arguments every kernelFunc receives, with the backend narrowed to wasm. */
export interface WasmKernelArgs<I, A> {
  inputs: I;
  backend: BackendWasm;
  attrs: A;
}

/**
 * Stock wasm kernels that register_all.ts replaced, keyed by kernel name, so
 * that our replacements can delegate to them (e.g. for unsupported cases).
 */
const stockKernels = new Map<string, KernelConfig>();

export function rememberStockKernel(config: KernelConfig): void {
  if (!stockKernels.has(config.kernelName)) {
    stockKernels.set(config.kernelName, config);
  }
}

export function getStockKernel(kernelName: string): KernelConfig | undefined {
  return stockKernels.get(kernelName);
}

function single(out: TensorInfo | TensorInfo[], name: string): TensorInfo {
  if (Array.isArray(out)) {
    throw new GdpError('INTERNAL', `${name}: expected a single output`);
  }
  return out;
}

/**
 * Runs the kernel currently registered for the wasm backend. Attributes are
 * typed loosely because tfjs' NamedAttrMap does not model every attribute
 * shape kernels accept (explicit paddings are number[][]).
 */
export function runKernel(name: string, backend: BackendWasm, inputs: NamedTensorInfoMap, attrs: object = {}): TensorInfo {
  return callKernel(getKernel(name, WASM), name, backend, inputs, attrs);
}

/** Runs a stock kernel that we replaced (or the registered one otherwise). */
export function runStockKernel(name: string, backend: BackendWasm, inputs: NamedTensorInfoMap, attrs: object = {}): TensorInfo {
  return callKernel(stockKernels.get(name) ?? getKernel(name, WASM), name, backend, inputs, attrs);
}

function callKernel(config: KernelConfig | undefined, name: string, backend: BackendWasm, inputs: NamedTensorInfoMap, attrs: object): TensorInfo {
  if (config == null) {
    throw new GdpError('INTERNAL', `wasm kernel ${name} is not registered`);
  }
  return single(config.kernelFunc({ inputs, backend, attrs: attrs as unknown as NamedAttrMap }), name);
}

/**
 * setupFunc for a kernel that may delegate to the stock kernel it replaces:
 * runs the stock kernel's setup (looked up when the backend is set up).
 */
export function stockKernelSetup(kernelName: string): (backend: {}) => void {
  return (backend: {}) => {
    getStockKernel(kernelName)?.setupFunc?.(backend);
  };
}

/**
 * A conv or pool geometry (NHWC) under the short names the kernels' formulas
 * use; c is the input channel count, pt/pl the top/left padding.
 */
export function shortGeometry(info: backend_util.Conv2DInfo) {
  return {
    n: info.batchSize,
    h: info.inHeight,
    w: info.inWidth,
    c: info.inChannels,
    oh: info.outHeight,
    ow: info.outWidth,
    co: info.outChannels,
    kh: info.filterHeight,
    kw: info.filterWidth,
    sh: info.strideHeight,
    sw: info.strideWidth,
    pt: info.padInfo.top,
    pl: info.padInfo.left,
  };
}

/**
 * Size [hq, wq] of the stride-phase grid of a padded input: xpad[s*q + b] =
 * phase_b[q]; a window tap k = s*a + b reads phase_b[o + a] for output o, so
 * the grid needs o + a < hq, and must hold the padded input (pt + h).
 */
export function phaseGridSize(g: ReturnType<typeof shortGeometry>): [number, number] {
  return [
    Math.max(Math.ceil((g.pt + g.h) / g.sh), g.oh + Math.ceil(g.kh / g.sh) - 1),
    Math.max(Math.ceil((g.pl + g.w) / g.sw), g.ow + Math.ceil(g.kw / g.sw) - 1),
  ];
}

export function assertNHWC(dataFormat: string | undefined, name: string): void {
  if (dataFormat != null && dataFormat !== 'NHWC' && dataFormat !== 'channelsLast') {
    throw new GdpError('UNSUPPORTED_LAYER', `${name} on wasm supports NHWC only, got dataFormat '${dataFormat}'`);
  }
}

/** tfjs types kernel inputs as optional; fail clearly if one is missing. */
export function required(info: TensorInfo | undefined, name: string): TensorInfo {
  if (info == null) {
    throw new GdpError('INTERNAL', `missing kernel input '${name}'`);
  }
  return info;
}
