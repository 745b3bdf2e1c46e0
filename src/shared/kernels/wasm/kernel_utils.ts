/**
 * Shared plumbing for the wasm training kernels: calling the wasm backend's
 * own kernels on TensorInfos, freeing intermediates, and block copies on the
 * wasm heap.
 */
import { backend_util, getKernel, KernelConfig, NamedAttrMap, NamedTensorInfoMap, PadV2, TensorInfo, util } from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

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
    throw new Error(`${name}: expected a single output`);
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
    throw new Error(`wasm kernel ${name} is not registered`);
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
 * Runs `f` with a fresh Scratch and frees every intermediate it tracked
 * afterwards, also when `f` throws; `f` returns the kernel output (released
 * from the scratch, or made outside it).
 */
export function withScratch<T>(backend: BackendWasm, f: (s: Scratch) => T): T {
  const s = new Scratch(backend);
  try {
    return f(s);
  } finally {
    s.dispose();
  }
}

/**
 * Tracks intermediate TensorInfos of one kernel invocation and frees them.
 * Usage: create, run kernels through it, `release` the result, then
 * `dispose` in a finally block.
 */
export class Scratch {
  private readonly infos: TensorInfo[] = [];
  private readonly subViews: TensorInfo[] = [];

  constructor(readonly backend: BackendWasm) {}

  keep<T extends TensorInfo>(info: T): T {
    this.infos.push(info);
    return info;
  }

  run(name: string, inputs: NamedTensorInfoMap, attrs: object = {}): TensorInfo {
    return this.keep(runKernel(name, this.backend, inputs, attrs));
  }

  /**
   * Reshaped view of `x` for use as a kernel input within this invocation:
   * same dataId, no refCount change, not tracked. Valid while `x` lives;
   * never return it as a kernel output (use the Reshape kernel for that).
   */
  view(x: TensorInfo, shape: number[]): TensorInfo {
    if (util.sizeFromShape(shape) !== util.sizeFromShape(x.shape)) {
      throw new Error(`view: cannot reshape [${x.shape}] to [${shape}]`);
    }
    return { dataId: x.dataId, shape, dtype: x.dtype };
  }

  /**
   * A float32 TensorInfo aliasing `size(shape)` elements of `base` starting
   * at element `offset`, so that native kernels can read a contiguous part of
   * a buffer without a copy. It is registered with the backend like a native
   * kernel output (makeOutput with a memory offset) and unregistered by
   * dropView/dispose without freeing the memory, which `base` owns. Use only
   * as a kernel input while `base` lives.
   */
  subView(base: TensorInfo, offset: number, shape: number[]): TensorInfo {
    const end = offset + util.sizeFromShape(shape);
    if (offset < 0 || end > util.sizeFromShape(base.shape) || base.dtype !== 'float32') {
      throw new Error(`subView [${offset}, ${end}) outside [${base.shape}]`);
    }
    const byteOffset = this.backend.getMemoryOffset(base.dataId) + offset * Float32Array.BYTES_PER_ELEMENT;
    const view = this.backend.makeOutput(shape, 'float32', byteOffset);
    this.subViews.push(view);
    return view;
  }

  /** Unregisters a subView (its memory belongs to the base tensor). */
  dropView(view: TensorInfo): void {
    const i = this.subViews.lastIndexOf(view);
    if (i < 0) {
      return;
    }
    this.subViews.splice(i, 1);
    const data = this.backend.dataIdMap.get(view.dataId);
    // Releases the id and any native state cached for it (e.g. XNNPACK
    // operators keyed by tensor id), but not the memory.
    this.backend.wasm.tfjs.disposeData(data.id);
    this.backend.dataIdMap.delete(view.dataId);
  }

  /** Allocates an uninitialised float32 tensor on the wasm heap. */
  alloc(shape: number[]): TensorInfo {
    return this.keep(this.backend.makeOutput(shape, 'float32'));
  }

  /** Stops tracking `info` (it becomes the caller's output). */
  release(info: TensorInfo): TensorInfo {
    const i = this.infos.lastIndexOf(info);
    if (i >= 0) {
      this.infos.splice(i, 1);
    }
    return info;
  }

  /**
   * Frees a tracked intermediate (or the one a view was made of) now, to
   * lower peak memory. Untracked infos (e.g. kernel inputs) are left alone.
   */
  free(info: TensorInfo): void {
    let i = this.infos.length - 1;
    while (i >= 0 && this.infos[i].dataId !== info.dataId) {
      i--;
    }
    if (i >= 0) {
      this.infos.splice(i, 1);
      this.backend.disposeData(info.dataId);
    }
  }

  dispose(): void {
    for (const view of this.subViews.slice()) {
      this.dropView(view);
    }
    for (const info of this.infos) {
      this.backend.disposeData(info.dataId);
    }
    this.infos.length = 0;
  }
}

/**
 * A Float32Array over the whole wasm heap and the element offset of `info`
 * in it. Views must be re-fetched after any allocation (the heap may grow).
 */
export function heapF32(backend: BackendWasm, info: TensorInfo): { heap: Float32Array; offset: number } {
  if (info.dtype !== 'float32') {
    throw new Error(`expected float32, got ${info.dtype}`);
  }
  const view = backend.typedArrayFromHeap(info) as Float32Array;
  return {
    heap: new Float32Array(view.buffer),
    offset: view.byteOffset / Float32Array.BYTES_PER_ELEMENT,
  };
}

/**
 * Copies `rows` contiguous runs of `len` floats from `src` to `dst` on the
 * heap (row r: src[srcStart + r*srcStride ..] -> dst[dstStart + r*dstStride
 * ..]). Each run is one memmove (copyWithin), so this is a loop over rows,
 * not elements; the stock Slice/Concat kernels do the same per row but first
 * copy the whole input out of the heap.
 */
export function copyRuns(
  backend: BackendWasm,
  src: TensorInfo,
  srcStart: number,
  srcStride: number,
  dst: TensorInfo,
  dstStart: number,
  dstStride: number,
  len: number,
  rows: number,
): void {
  if (len <= 0 || rows <= 0) {
    return;
  }
  const s = heapF32(backend, src);
  const d = heapF32(backend, dst);
  const heap = d.heap;
  let so = s.offset + srcStart;
  let dOff = d.offset + dstStart;
  if (srcStride === len && dstStride === len) {
    heap.copyWithin(dOff, so, so + len * rows);
    return;
  }
  for (let r = 0; r < rows; r++) {
    heap.copyWithin(dOff, so, so + len);
    so += srcStride;
    dOff += dstStride;
  }
}

/** Fills `rows` runs of `len` floats of `dst` with `value`. */
export function fillRuns(backend: BackendWasm, dst: TensorInfo, dstStart: number, dstStride: number, len: number, rows: number, value = 0): void {
  if (len <= 0 || rows <= 0) {
    return;
  }
  const d = heapF32(backend, dst);
  let o = d.offset + dstStart;
  if (dstStride === len) {
    d.heap.fill(value, o, o + len * rows);
    return;
  }
  for (let r = 0; r < rows; r++) {
    d.heap.fill(value, o, o + len);
    o += dstStride;
  }
}

/**
 * Spatial window of an NHWC tensor: output[n, i, j, :] = x[n, h0 + i,
 * w0 + j, :] where in range, 0 elsewhere. h0/w0 may be negative and the
 * window may extend past the input (padded with `padValue`), so this covers
 * both crops and pads. Returns `x` itself (untracked) when the window is the
 * identity.
 */
export function windowNHWC(s: Scratch, x: TensorInfo, h0: number, outH: number, w0: number, outW: number, padValue = 0): TensorInfo {
  const [n, h, w, c] = x.shape;
  if (h0 === 0 && w0 === 0 && outH === h && outW === w) {
    return x;
  }
  const hLo = Math.max(0, -h0),
    hHi = Math.min(outH, h - h0);
  const wLo = Math.max(0, -w0),
    wHi = Math.min(outW, w - w0);
  if (h0 <= 0 && w0 <= 0 && outH - h + h0 >= 0 && outW - w + w0 >= 0) {
    // Pure padding: PadV2 on the [N, H, W*C] view is a fast native kernel.
    const padded = s.run(
      PadV2,
      { x: s.view(x, [n, h, w * c]) },
      {
        paddings: [
          [0, 0],
          [-h0, outH - h + h0],
          [-w0 * c, (outW - w + w0) * c],
        ],
        constantValue: padValue,
      },
    );
    return s.view(padded, [n, outH, outW, c]);
  }
  const out = s.alloc([n, outH, outW, c]);
  const outRow = outW * c;
  if (hLo >= hHi || wLo >= wHi) {
    fillRuns(s.backend, out, 0, 0, n * outH * outRow, 1, padValue);
    return out;
  }
  for (let b = 0; b < n; b++) {
    const base = b * outH * outRow;
    // Zero rows above/below the copied band, and the left/right margins.
    fillRuns(s.backend, out, base, 0, hLo * outRow, 1, padValue);
    fillRuns(s.backend, out, base + hHi * outRow, 0, (outH - hHi) * outRow, 1, padValue);
    if (wLo > 0) {
      fillRuns(s.backend, out, base + hLo * outRow, outRow, wLo * c, hHi - hLo, padValue);
    }
    if (wHi < outW) {
      fillRuns(s.backend, out, base + hLo * outRow + wHi * c, outRow, (outW - wHi) * c, hHi - hLo, padValue);
    }
    copyRuns(s.backend, x, ((b * h + h0 + hLo) * w + w0 + wLo) * c, w * c, out, base + hLo * outRow + wLo * c, outRow, (wHi - wLo) * c, hHi - hLo);
  }
  return out;
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
    throw new Error(`${name} on wasm supports NHWC only, got dataFormat '${dataFormat}'`);
  }
}

/** tfjs types kernel inputs as optional; fail clearly if one is missing. */
export function required(info: TensorInfo | undefined, name: string): TensorInfo {
  if (info == null) {
    throw new Error(`missing kernel input '${name}'`);
  }
  return info;
}

/**
 * Stride phase (bh, bw) of an NHWC tensor whose height and width are
 * multiples of the strides: out[n, i, j, :] = x[n, sh*i + bh, sw*j + bw, :].
 * Returns `x` itself for unit strides.
 */
export function phaseNHWC(s: Scratch, x: TensorInfo, sh: number, sw: number, bh: number, bw: number): TensorInfo {
  if (sh === 1 && sw === 1) {
    return x;
  }
  const [n, h, w, c] = x.shape;
  const hq = h / sh,
    wq = w / sw;
  const out = s.alloc([n, hq, wq, c]);
  const inRow = w * c,
    outRow = wq * c;
  if (sw === 1) {
    copyRuns(s.backend, x, bh * inRow, sh * inRow, out, 0, outRow, outRow, n * hq);
    return out;
  }
  for (let r = 0; r < n * hq; r++) {
    copyRuns(s.backend, x, (r * sh + bh) * inRow + bw * c, sw * c, out, r * outRow, c, c, wq);
  }
  return out;
}

/**
 * Inverse of phaseNHWC plus a crop: out[n, i, j, :] =
 * phases[bh][bw][n, (i + top) div sh, (j + left) div sw, :] with
 * bh = (i + top) mod sh, bw = (j + left) mod sw; a null phase is zero.
 */
export function interleavePhasesNHWC(s: Scratch, phases: Array<Array<TensorInfo | null>>, outShape: number[], top: number, left: number): TensorInfo {
  const [n, h, w, c] = outShape;
  const sh = phases.length,
    sw = phases[0].length;
  const out = s.alloc(outShape);
  for (let bh = 0; bh < sh; bh++) {
    const i0 = (((bh - top) % sh) + sh) % sh;
    for (let bw = 0; bw < sw; bw++) {
      const j0 = (((bw - left) % sw) + sw) % sw;
      if (i0 >= h || j0 >= w) {
        continue;
      }
      const rows = Math.ceil((h - i0) / sh);
      const cols = Math.ceil((w - j0) / sw);
      const phase = phases[bh][bw];
      for (let b = 0; b < n; b++) {
        for (let r = 0; r < rows; r++) {
          const i = i0 + r * sh;
          const dst = ((b * h + i) * w + j0) * c;
          if (phase == null) {
            fillRuns(s.backend, out, dst, sw * c, c, cols);
            continue;
          }
          const [, hq, wq] = phase.shape;
          const src = ((b * hq + (i + top - bh) / sh) * wq + (j0 + left - bw) / sw) * c;
          copyRuns(s.backend, phase, src, c, out, dst, sw * c, c, cols);
        }
      }
    }
  }
  return out;
}

/** x [.., c] with its channels zero-padded to `to` (x itself if c === to). */
export function padChannels(s: Scratch, x: TensorInfo, to: number): TensorInfo {
  const c = x.shape[x.shape.length - 1];
  if (c === to) {
    return x;
  }
  const rows = x.shape.reduce((p, d) => p * d, 1) / c;
  return s.run(
    PadV2,
    { x: s.view(x, [rows, c]) },
    {
      paddings: [
        [0, 0],
        [0, to - c],
      ],
      constantValue: 0,
    },
  );
}
