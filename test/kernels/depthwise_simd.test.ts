/** The depthwise SIMD micro-kernels (tap and gather, every channel-block width) at edge sizes against a scalar loop. */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { heapF32 } from '../../src/shared/kernels/wasm/heap_layout.js';
import { DEPTHWISE_BLOCK_VECTORS, depthwiseGatherKernels, depthwiseTapKernels, forChannelBlocks } from '../../src/shared/kernels/wasm/simd/depthwise.js';
import { assertClose, randomArray, tf, useWasm } from './helpers.js';

before(useWasm);

describe('depthwise SIMD kernels at edge sizes vs a scalar loop', () => {
  /**
   * Runs one kernel over a synthetic layout: `images` x `rows` x `cols` pixels of `vectors` channel vectors, in
   * pixels of `pitch` floats (wider than the channels walked, unaligned), a and b with distinct row, column and
   * image strides; for the gather kernel, `taps` table entries at distinct offsets into a and w. Returns the
   * kernel's output (w for the filter tap, b for the gather) and the scalar loop's.
   */
  function kernelCase(
    kind: 'filterTap' | 'inputGather' | 'inputGatherUnrolled',
    vectors: number,
    rows: number,
    cols: number,
    images: number,
    taps: number,
    seed: number,
  ) {
    const backend = tf.backend() as BackendWasm;
    const kernels = depthwiseTapKernels(backend);
    assert.ok(kernels, 'wasm SIMD kernels are available in this runtime');
    const pitch = 4 * vectors + 3;
    const aCol = 2 * pitch,
      aRow = (2 * cols + 1) * pitch,
      aImage = (rows + 1) * aRow;
    const bCol = pitch,
      bRow = (cols + 2) * pitch,
      bImage = (rows + 2) * bRow;
    // Gather taps read a at pixel offsets 0, 1, 2, ... pitches (past the walked pixels: a has slack for them).
    const aLen = images * aImage + (taps + 1) * pitch,
      bLen = images * bImage + 4,
      wLen = Math.max(1, taps) * pitch;
    const buf = backend.makeOutput([aLen + bLen + wLen + 2 * taps + 8], 'float32');
    try {
      const { heap, offset } = heapF32(backend, buf);
      const aOff = offset + 1,
        bOff = offset + aLen + 2,
        wOff = offset + aLen + bLen + 3,
        tOff = wOff + wLen + 1;
      heap.set(randomArray(aLen + bLen + wLen, seed), offset);
      const table = Array.from({ length: taps }, (_, t) => [4 * t * pitch, 4 * (wOff + t * pitch)]).flat();
      new Int32Array(heap.buffer, 4 * tOff, 2 * taps).set(table);
      const want = kind === 'filterTap' ? heap.slice(wOff, wOff + 4 * vectors) : heap.slice(bOff, bOff + bLen - 4);
      for (let n = 0; n < images; n++) {
        for (let r = 0; r < rows; r++) {
          for (let q = 0; q < cols; q++) {
            const ap = aOff + n * aImage + r * aRow + q * aCol,
              bp = n * bImage + r * bRow + q * bCol;
            for (let k = 0; k < 4 * vectors; k++) {
              if (kind === 'filterTap') {
                want[k] += heap[ap + k] * heap[bOff + bp + k];
                continue;
              }
              let sum = 0;
              for (let t = 0; t < taps; t++) sum += heap[ap + t * pitch + k] * heap[wOff + t * pitch + k];
              want[bp + k] = sum;
            }
          }
        }
      }
      const F = 4;
      if (kind === 'filterTap') {
        forChannelBlocks(kernels.filterTap, vectors, (kernel, v0, blocks) =>
          kernel(
            (aOff + 4 * v0) * F,
            (bOff + 4 * v0) * F,
            (wOff + 4 * v0) * F,
            rows,
            cols,
            images,
            aRow * F,
            aCol * F,
            aImage * F,
            bRow * F,
            bCol * F,
            bImage * F,
            blocks,
          ),
        );
      } else {
        const gather = kind === 'inputGather' ? kernels.inputGather : depthwiseGatherKernels(backend, taps);
        assert.ok(gather);
        forChannelBlocks(gather, vectors, (kernel, v0, blocks) =>
          kernel(
            (aOff + 4 * v0) * F,
            (bOff + 4 * v0) * F,
            16 * v0,
            rows,
            cols,
            images,
            aRow * F,
            aCol * F,
            aImage * F,
            bRow * F,
            bCol * F,
            bImage * F,
            blocks,
            tOff * F,
            taps,
          ),
        );
      }
      const h = heapF32(backend, buf).heap;
      const got = kind === 'filterTap' ? h.slice(wOff, wOff + 4 * vectors) : h.slice(bOff, bOff + bLen - 4);
      return { got, want };
    } finally {
      backend.disposeData(buf.dataId);
    }
  }

  for (const kind of ['filterTap', 'inputGather', 'inputGatherUnrolled'] as const) {
    it(`${kind}: 1..9 vectors (blocks of ${DEPTHWISE_BLOCK_VECTORS.join(', ')}), 0 to 3 images, rows, columns`, () => {
      let seed = 3000;
      for (const vectors of [1, 2, 3, 4, 5, 6, 7, 9]) {
        for (const [rows, cols, images] of [
          [1, 1, 1],
          [1, 3, 2],
          [3, 1, 1],
          [2, 5, 3],
          [0, 4, 1],
          [2, 2, 0],
        ]) {
          for (const taps of kind === 'filterTap' ? [1] : kind === 'inputGather' ? [0, 1, 4, 11] : [1, 2, 3, 9]) {
            const { got, want } = kernelCase(kind, vectors, rows, cols, images, taps, seed++);
            assertClose(got, want, 1e-6, `${kind} ${vectors} vectors ${rows}x${cols}x${images}, ${taps} taps`);
          }
        }
      }
    });
  }
});
