/**
 * Per-channel passes over NHWC float32 tensors on the wasm heap, for the
 * fused training kernels (batch norm, relu gradient): reductions to one
 * value per channel and maps with per-channel coefficients, each a single
 * pass of the SIMD kernels in simd/module.ts, or plain loops where those
 * are unavailable.
 *
 * The tensor is walked flat in float32x4 vectors; per-channel vectors are
 * tiled to lcm(C, 4) floats so that any channel count works. Reductions
 * add one block of vectors at a time into float32 partial sums and carry
 * the totals in float64, so rounding does not grow with the batch size.
 */
import { TensorInfo, util } from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

import { heapF32 } from './heap_layout.js';
import { Scratch } from './scratch.js';
import { SimdKernels, simdKernels } from './simd/module.js';
import { GdpError } from '../../errors.js';

const F = Float32Array.BYTES_PER_ELEMENT;
/** Vectors per reduction block (64 KiB of each input). */
const BLOCK_VECTORS = 4096;

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

export class ChannelPasses {
  readonly channels: number;
  readonly total: number;
  /** Floats per period of the tiled per-channel vectors: lcm(C, 4). */
  readonly period: number;
  /** Whole float32x4 vectors; the rest (total % 4 floats) is done in JS. */
  readonly vectors: number;
  readonly simd: SimdKernels | null;

  constructor(
    readonly s: Scratch,
    x: TensorInfo,
  ) {
    this.channels = x.shape[x.shape.length - 1];
    this.total = util.sizeFromShape(x.shape);
    this.period = (this.channels * 4) / gcd(this.channels, 4);
    this.vectors = Math.floor(this.total / 4);
    this.simd = options.useSimd ? simdKernels(s.backend) : null;
  }

  get backend(): BackendWasm {
    return this.s.backend;
  }

  /** The whole heap as floats; re-fetch after allocations (it may grow). */
  heap(): Float32Array {
    return (this.backend.wasm as unknown as { HEAPF32: Float32Array }).HEAPF32;
  }

  /** Float index of `info` on the heap. */
  at(info: TensorInfo): number {
    return this.ptr(info) / F;
  }

  /** Byte offset of `info` on the heap. */
  ptr(info: TensorInfo): number {
    return this.backend.getMemoryOffset(info.dataId);
  }

  /**
   * Byte offset of a heap vector of `period` floats holding `values` (one per channel) tiled to the period. Every
   * tiled vector and accumulator of one kernel call lives in one scratch arena (one allocation, not one each).
   */
  tile(values: ArrayLike<number>): number {
    const p = this.slot();
    const heap = this.heap();
    for (let j = 0, o = p / F; j < this.period; j++) heap[o + j] = values[j % this.channels];
    return p;
  }

  private arena: { base: number; used: number } | null = null;
  private static readonly ARENA_SLOTS = 8;

  /** Byte offset of a fresh (uninitialised) period-sized slot of the arena. */
  private slot(): number {
    if (this.arena == null) {
      const info = this.s.alloc([ChannelPasses.ARENA_SLOTS * this.period]);
      this.arena = { base: this.ptr(info), used: 0 };
    }
    if (this.arena.used === ChannelPasses.ARENA_SLOTS) throw new GdpError('INTERNAL', 'ChannelPasses: arena exhausted');
    return this.arena.base + this.arena.used++ * this.period * F;
  }

  /** A new [C] float32 tensor (the caller's output) holding `values`. */
  vector(values: ArrayLike<number>): TensorInfo {
    const out = this.backend.makeOutput([this.channels], 'float32');
    const { heap, offset } = heapF32(this.backend, out);
    for (let c = 0; c < this.channels; c++) heap[offset + c] = values[c];
    return out;
  }

  /** A [C] tensor's values. */
  read(info: TensorInfo): Float32Array {
    const { heap, offset } = heapF32(this.backend, info);
    return heap.slice(offset, offset + this.channels);
  }

  /**
   * `count` per-channel float64 sums. `simdBlock(v0, n, accs)` adds vectors
   * [v0, v0 + n) into the tiled float32 accumulators at byte offsets
   * `accs`; `scalar(i, c, sums)` adds float i (channel c) into the sums and
   * covers the tail, and everything when there is no SIMD.
   */
  reduce(
    count: number,
    simdBlock: (v0: number, n: number, accs: number[]) => void,
    scalar: (heap: Float32Array, i: number, c: number, sums: Float64Array[]) => void,
  ): Float64Array[] {
    const sums = Array.from({ length: count }, () => new Float64Array(this.channels));
    let done = 0;
    if (this.simd != null) {
      const periodVectors = this.period / 4;
      const block = periodVectors * Math.max(1, Math.floor(BLOCK_VECTORS / periodVectors));
      const accPtrs = Array.from({ length: count }, () => this.slot());
      for (let v0 = 0; v0 < this.vectors; v0 += block) {
        const n = Math.min(block, this.vectors - v0);
        const h = this.heap();
        for (const p of accPtrs) h.fill(0, p / F, p / F + this.period);
        simdBlock(v0, n, accPtrs);
        accPtrs.forEach((p, k) => {
          const sum = sums[k];
          for (let j = 0; j < this.period; j++) sum[j % this.channels] += h[p / F + j];
        });
      }
      done = this.vectors * 4;
    }
    const heap = this.heap();
    for (let i = done, c = done % this.channels; i < this.total; i++) {
      scalar(heap, i, c, sums);
      if (++c === this.channels) c = 0;
    }
    return sums;
  }

  /**
   * A map writing every float of a new tensor shaped like x:
   * `simdAll(n)` does the first n vectors, `scalar(heap, i, c)` one float
   * (the tail, or everything without SIMD).
   */
  map(out: TensorInfo, simdAll: (n: number) => void, scalar: (heap: Float32Array, i: number, c: number) => void): TensorInfo {
    let done = 0;
    if (this.simd != null) {
      simdAll(this.vectors);
      done = this.vectors * 4;
    }
    const heap = this.heap();
    for (let i = done, c = done % this.channels; i < this.total; i++) {
      scalar(heap, i, c);
      if (++c === this.channels) c = 0;
    }
    return out;
  }
}

/** Tests force the plain loops with useSimd = false. */
export const channelPassOptions = { useSimd: true };
const options = channelPassOptions;
