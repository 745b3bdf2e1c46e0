/**
 * SIMD kernels of the depthwise convolution gradients (channel multiplier 1, NHWC), walking `images` x `rows` x
 * `cols` pixels of two tensors with independent byte strides, vectorised over the channels (the innermost NHWC
 * axis) in blocks of `nv` float32x4 vectors: the filter gradient one tap at a time, the input gradient one stride
 * phase of dx at a time. Pointers and strides are bytes on the wasm heap; channel blocks are 16 * nv bytes apart
 * in every operand.
 */
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

import { WasmFunction } from './assembler.js';
import { heapModule } from './module.js';
import { countedLoop, pixelLoops, range } from './wasm_text.js';

/** Vectors per channel block the kernels are assembled for; a channel count is covered by blocks of 4, 2, 1. */
export const DEPTHWISE_BLOCK_VECTORS = [4, 2, 1] as const;
export type BlockVectors = (typeof DEPTHWISE_BLOCK_VECTORS)[number];

/**
 * Filter tap: for each of `blocks` channel blocks, w[c] += sum over the pixels of a[c] * b[c] (a, b: x and dy at
 * the tap's offsets).
 */
export type DepthwiseTapKernel = (
  a: number,
  b: number,
  w: number,
  rows: number,
  cols: number,
  images: number,
  aRow: number,
  aCol: number,
  aImage: number,
  bRow: number,
  bCol: number,
  bImage: number,
  blocks: number,
) => void;

/** The gather kernel: a tap kernel's arguments, then the tap table's byte offset and its number of entries. */
export type DepthwiseGatherKernel = (...args: [...Parameters<DepthwiseTapKernel>, table: number, taps: number]) => void;

export interface DepthwiseTapKernels {
  filterTap: Record<BlockVectors, DepthwiseTapKernel>;
  inputGather: Record<BlockVectors, DepthwiseGatherKernel>;
}

/**
 * The pixel walk shared by the kernels; `pre`/`body`/`post` run per block, per pixel, after a block; `extra`
 * declares further parameters (after $blocks) and locals.
 */
function tapWalk(name: string, nv: number, pre: string, body: string, post: string, extra = ''): WasmFunction {
  return {
    name,
    text: `
    (param $a0 i32) (param $b0 i32) (param $w i32) (param $rows i32) (param $cols i32) (param $images i32)
    (param $aRow i32) (param $aCol i32) (param $aImage i32) (param $bRow i32) (param $bCol i32) (param $bImage i32)
    (param $blocks i32) ${extra}
    (local $k i32) (local $n i32) (local $r i32) (local $c i32)
    (local $a i32) (local $b i32) (local $ar i32) (local $br i32) (local $aq i32) (local $bq i32)
    ${range(nv)
      .map((v) => `(local $v${v} v128)`)
      .join(' ')}
    ${countedLoop(
      '$block',
      '$k',
      '$blocks',
      `
      ${pre}
      local.get $a0 local.set $a
      local.get $b0 local.set $b
      ${pixelLoops('a', 'b', body)}
      ${post}
      local.get $a0 i32.const ${16 * nv} i32.add local.set $a0
      local.get $b0 i32.const ${16 * nv} i32.add local.set $b0
      local.get $w i32.const ${16 * nv} i32.add local.set $w`,
    )}
    `,
  };
}

/** The filter tap kernel: nv accumulators in registers, loaded from and stored back to w. */
export function filterTap(nv: number, name = `dwFilterTap${nv}`): WasmFunction {
  const vs = range(nv);
  return tapWalk(
    name,
    nv,
    vs.map((v) => `local.get $w v128.load offset=${16 * v} local.set $v${v}`).join(' '),
    vs
      .map(
        (v) => `
        local.get $v${v}
        local.get $aq v128.load offset=${16 * v} local.get $bq v128.load offset=${16 * v} f32x4.mul
        f32x4.add local.set $v${v}`,
      )
      .join(''),
    vs.map((v) => `local.get $w local.get $v${v} v128.store offset=${16 * v}`).join(' '),
  );
}

/**
 * The gather kernel of the input gradient: for each pixel of b (one stride phase of dx), the sum over `taps`
 * entries of a table (pairs of i32: byte offset from the pixel's a pointer into padded dy, byte offset of the
 * tap's filter vector) of dy * w, stored (not added) into b; `$w` carries the channel block's byte offset into
 * the filter. Every dx pixel is written once, and a phase without taps gets zeros.
 */
export function inputGather(nv: number, name = `dwInputGather${nv}`): WasmFunction {
  const vs = range(nv);
  return tapWalk(
    name,
    nv,
    '',
    `
        ${vs.map((v) => `local.get $zero local.set $v${v}`).join(' ')}
        local.get $table local.set $t
        ${countedLoop(
          '$tap',
          '$ti',
          '$taps',
          `
          local.get $aq local.get $t i32.load i32.add local.set $p
          local.get $t i32.load offset=4 local.get $w i32.add local.set $wp
          ${vs
            .map(
              (v) => `
          local.get $v${v}
          local.get $p v128.load offset=${16 * v} local.get $wp v128.load offset=${16 * v} f32x4.mul
          f32x4.add local.set $v${v}`,
            )
            .join('')}
          local.get $t i32.const 8 i32.add local.set $t`,
        )}
        ${vs.map((v) => `local.get $bq local.get $v${v} v128.store offset=${16 * v}`).join(' ')}`,
    '',
    '(param $table i32) (param $taps i32) (local $t i32) (local $ti i32) (local $p i32) (local $wp i32) (local $zero v128)',
  );
}

/**
 * The gather kernel for exactly `taps` table entries, unrolled: the entries are read into locals once per channel
 * block, so a pixel costs only its loads and products (the table loop costs as much again at the 1 to 4 taps of
 * a stride-2 phase). Same arguments; `$taps` is ignored.
 */
export function inputGatherUnrolled(nv: number, taps: number, name = `dwInputGather${nv}x${taps}`): WasmFunction {
  const vs = range(nv),
    ts = range(taps);
  return tapWalk(
    name,
    nv,
    ts
      .map(
        (t) => `
        local.get $table i32.load offset=${8 * t} local.set $o${t}
        local.get $table i32.load offset=${8 * t + 4} local.get $w i32.add local.set $f${t}`,
      )
      .join(''),
    `${ts
      .map(
        (t) => `
        local.get $aq local.get $o${t} i32.add local.set $p
        ${vs
          .map(
            (v) => `
        local.get $p v128.load offset=${16 * v} local.get $f${t} v128.load offset=${16 * v} f32x4.mul
        ${t === 0 ? '' : `local.get $v${v} f32x4.add`} local.set $v${v}`,
          )
          .join('')}`,
      )
      .join('')}
        ${vs.map((v) => `local.get $bq local.get $v${v} v128.store offset=${16 * v}`).join(' ')}`,
    '',
    `(param $table i32) (param $taps i32) (local $p i32)
      ${ts.map((t) => `(local $o${t} i32) (local $f${t} i32)`).join(' ')}`,
  );
}

/** Tap counts up to which the gather kernel is unrolled (a 3x3 filter at stride 1 has 9). */
export const MAX_UNROLLED_TAPS = 9;

/**
 * The gather kernels for `taps` table entries bound to `backend`'s heap (unrolled up to MAX_UNROLLED_TAPS, each
 * count assembled on first use), or null without wasm SIMD.
 */
export function depthwiseGatherKernels(backend: BackendWasm, taps: number): Record<BlockVectors, DepthwiseGatherKernel> | null {
  if (taps > MAX_UNROLLED_TAPS || taps === 0) return depthwiseTapKernels(backend)?.inputGather ?? null;
  const exports = heapModule<Record<string, DepthwiseGatherKernel>>(backend, `depthwiseGather${taps}`, () =>
    DEPTHWISE_BLOCK_VECTORS.map((nv) => inputGatherUnrolled(nv, taps)),
  );
  if (exports == null) return null;
  return Object.fromEntries(DEPTHWISE_BLOCK_VECTORS.map((nv) => [nv, exports[`dwInputGather${nv}x${taps}`]])) as Record<BlockVectors, DepthwiseGatherKernel>;
}

/** The tap kernels bound to `backend`'s heap, or null without wasm SIMD. */
export function depthwiseTapKernels(backend: BackendWasm): DepthwiseTapKernels | null {
  const exports = heapModule<Record<string, unknown>>(backend, 'depthwise', () => DEPTHWISE_BLOCK_VECTORS.flatMap((nv) => [filterTap(nv), inputGather(nv)]));
  if (exports == null) return null;
  const pick = <K>(prefix: string) => Object.fromEntries(DEPTHWISE_BLOCK_VECTORS.map((nv) => [nv, exports[`${prefix}${nv}`]])) as Record<BlockVectors, K>;
  return {
    filterTap: pick<DepthwiseTapKernel>('dwFilterTap'),
    inputGather: pick<DepthwiseGatherKernel>('dwInputGather'),
  };
}

/**
 * Runs `kernel` over `vectors` float32x4 channel vectors in blocks of 4, 2 and 1 vectors (`call(kernel, first
 * vector, blocks)`), so any multiple of 4 channels is covered with the widest blocks first.
 */
export function forChannelBlocks<K>(kernels: Record<BlockVectors, K>, vectors: number, call: (kernel: K, v0: number, blocks: number) => void): void {
  let v0 = 0;
  for (const nv of DEPTHWISE_BLOCK_VECTORS) {
    const blocks = Math.floor((vectors - v0) / nv);
    if (blocks > 0) call(kernels[nv], v0, blocks);
    v0 += blocks * nv;
  }
}
