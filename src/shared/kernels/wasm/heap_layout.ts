/**
 * Layout moves of NHWC tensors on the wasm heap by row-wise block copies (copyWithin), without the stock
 * Slice/Concat/Pad kernels' extra full copies: windows (pads and crops), stride phases and their interleaving,
 * channel padding.
 */
import { PadV2, TensorInfo } from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

import { Scratch } from './scratch.js';
import { GdpError } from '../../errors.js';

/**
 * A Float32Array over the whole wasm heap and the element offset of `info`
 * in it. Views must be re-fetched after any allocation (the heap may grow).
 */
export function heapF32(backend: BackendWasm, info: TensorInfo): { heap: Float32Array; offset: number } {
  if (info.dtype !== 'float32') {
    throw new GdpError('INTERNAL', `expected float32, got ${info.dtype}`);
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
