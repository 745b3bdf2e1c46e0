/** Scratch tensors of one wasm kernel invocation: tracked, freed together, with zero-copy views and sub-views. */
import { NamedTensorInfoMap, TensorInfo, util } from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

import { runKernel } from './kernel_utils.js';
import { GdpError } from '../../errors.js';

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
      throw new GdpError('INTERNAL', `view: cannot reshape [${x.shape}] to [${shape}]`);
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
      throw new GdpError('INTERNAL', `subView [${offset}, ${end}) outside [${base.shape}]`);
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
