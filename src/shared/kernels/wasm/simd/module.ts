/**
 * Hand-written wasm SIMD kernels that run on the tfjs wasm heap (the module
 * imports the backend's memory), for work XNNPACK has no operator for.
 * Every pointer argument is a byte offset into the heap; strides are in
 * bytes. Callers get `null` where the module cannot be used (no SIMD, or
 * the backend's memory is not reachable) and fall back to other paths.
 */
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

import { assemble, WasmFunction } from './assembler.js';
import { channelFunctions } from './channel.js';
import { convTile, ConvTileShape, outerTile } from './tiles.js';
import { GdpError } from '../../../errors.js';

export interface SimdKernels {
  /**
   * Filter-gradient blocks: for each of cTiles x oTiles blocks of 4 input
   * channels (x, 16 bytes apart) by 8 output channels (dy, 32 bytes apart),
   * adds the sum over images, rows and columns of x[c] * dy[o] to the 4x8
   * block of w (rows `wRow` bytes apart).
   */
  outerTile4x8(
    x: number,
    dy: number,
    w: number,
    rows: number,
    cols: number,
    images: number,
    xRow: number,
    xCol: number,
    xImage: number,
    dyRow: number,
    dyCol: number,
    dyImage: number,
    wRow: number,
    cTiles: number,
    oTiles: number,
  ): void;

  /*
   * Channel kernels over `n` float32x4 vectors of an NHWC tensor viewed
   * flat. Per-channel vectors (acc, mean, scale, ...) are tiled to a period
   * of `period` bytes (lcm(C, 4) floats), which vector i uses at offset
   * (16 i) mod period; callers start at a multiple of the period.
   */
  /** acc += x */
  sumCyclic(x: number, n: number, acc: number, period: number): void;
  /** acc += (x - mean)^2 */
  sqDevSumCyclic(x: number, n: number, mean: number, acc: number, period: number): void;
  /** y = x * scale + shift */
  affineCyclic(x: number, n: number, scale: number, shift: number, y: number, period: number): void;
  /** accDy += dy; accDyXc += dy * (x - mean) */
  gradSumsCyclic(dy: number, x: number, n: number, mean: number, accDy: number, accDyXc: number, period: number): void;
  /** out = dy * a + x * b + c */
  affine2Cyclic(dy: number, x: number, n: number, a: number, b: number, c: number, out: number, period: number): void;
  /** out = y > 0 ? dy : 0 (elementwise, no period) */
  reluGrad(dy: number, y: number, n: number, out: number): void;
  /** out = (x > lo, or x >= lo when loInclusive is 1) and x <= hi ? dy : 0 (elementwise, no period) */
  clipGrad(dy: number, x: number, n: number, lo: number, hi: number, loInclusive: number, out: number): void;
}

/** The part of the WebAssembly JS API used here (the project's libs do not declare it). */
interface WasmApi {
  Memory: abstract new (...args: never[]) => object;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: object };
}
const WA = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;

let compiled: object | null | undefined;
const instances = new WeakMap<object, SimdKernels | null>();

export type ConvTileKernel = (
  x: number,
  w: number,
  y: number,
  rows: number,
  tiles: number,
  oTiles: number,
  kh: number,
  kw: number,
  ci: number,
  xRow: number,
  co4: number,
  xNext: number,
  yNext: number,
) => void;

const convInstances = new WeakMap<object, Map<string, ConvTileKernel>>();

/** The convTile kernel for `shape` on `backend`'s heap (assembled once per shape), or null. */
export function convTileKernel(backend: BackendWasm, shape: ConvTileShape): ConvTileKernel | null {
  const memory = (backend.wasm as unknown as { asm?: { memory?: unknown } }).asm?.memory;
  if (simdKernels(backend) == null || WA == null || !(memory instanceof WA.Memory)) return null;
  let byShape = convInstances.get(backend.wasm);
  if (byShape == null) convInstances.set(backend.wasm, (byShape = new Map()));
  const { pixelBytes, ov, px = 4 } = shape;
  const key = `${pixelBytes},${ov},${px}`;
  let k = byShape.get(key);
  if (k == null) {
    const module = new WA.Module(assemble([convTile(shape, 'conv')]));
    k = (new WA.Instance(module, { env: { memory } }).exports as { conv: ConvTileKernel }).conv;
    byShape.set(key, k);
  }
  return k;
}

/**
 * Blocks of output channels for the convTile kernels, as [ov, first channel, block count]: blocks of 8 channels,
 * then blocks of 4 for the rest, the last one ending at co (it may overlap the one before; overlapping blocks write
 * the same values). co must be >= 4.
 */
export function outputChannelBlocks(co: number): Array<[1 | 2, number, number]> {
  const blocks: Array<[1 | 2, number, number]> = [];
  const eights = Math.floor(co / 8);
  if (eights > 0) blocks.push([2, 0, eights]);
  for (let o = 8 * eights; o < co; o += 4) blocks.push([1, Math.min(o, co - 4), 1]);
  return blocks;
}

const extraInstances = new WeakMap<object, Map<string, object | null>>();

/**
 * The exports of a module of `functions` (assembled once per `key` and backend) bound to `backend`'s heap, or null
 * when wasm SIMD or the heap is unavailable (then `simdKernels` is null too).
 */
export function heapModule<T>(backend: BackendWasm, key: string, functions: () => WasmFunction[]): T | null {
  const memory = (backend.wasm as unknown as { asm?: { memory?: unknown } }).asm?.memory;
  if (simdKernels(backend) == null || WA == null || !(memory instanceof WA.Memory)) return null;
  let byKey = extraInstances.get(backend.wasm);
  if (byKey == null) extraInstances.set(backend.wasm, (byKey = new Map()));
  let exports = byKey.get(key);
  if (exports === undefined) {
    exports = new WA.Instance(new WA.Module(assemble(functions())), { env: { memory } }).exports;
    byKey.set(key, exports);
  }
  return exports as T | null;
}

/** The kernels bound to `backend`'s heap, or null when unavailable. */
export function simdKernels(backend: BackendWasm): SimdKernels | null {
  const wasm = backend.wasm as unknown as { asm?: { memory?: unknown } };
  const cached = instances.get(wasm);
  if (cached !== undefined) return cached;
  let kernels: SimdKernels | null = null;
  const memory = wasm.asm?.memory;
  try {
    if (WA == null) throw new GdpError('INTERNAL', 'no WebAssembly');
    if (compiled === undefined) compiled = new WA.Module(assemble([outerTile(4, 2), ...channelFunctions]));
    if (compiled != null && memory instanceof WA.Memory) {
      const instance = new WA.Instance(compiled, { env: { memory } });
      kernels = instance.exports as unknown as SimdKernels;
    }
  } catch {
    // No wasm SIMD in this runtime: the callers' portable paths run instead.
    compiled = null;
  }
  instances.set(wasm, kernels);
  return kernels;
}
