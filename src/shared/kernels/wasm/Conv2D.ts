/**
 * Conv2D for the wasm backend: stride-1 3x3 NHWC convolutions with at least 4
 * input and output channels run as Winograd F(2x2, 3x3) (Conv2DWinograd.ts).
 * Other stride-1 NHWC convolutions with more than one
 * tap and at least 4 output channels run on a hand-written SIMD kernel
 * (simd/module.ts convTile) over a padded copy of x; on ResNet's 3x3 layers
 * it gave XNNPACK's results bit for bit and is 10-25% faster. Everything
 * else (strides, 1x1, dilations, fewer than 4 output channels or output
 * columns) goes to the stock kernel. Conv2DBackpropInput's stride-1 phase
 * convolutions come through here too.
 */
import { backend_util, Conv2D, Conv2DAttrs, Conv2DInputs, KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';

import { windowNHWC } from './heap_layout.js';
import { required, runStockKernel, shortGeometry, stockKernelSetup, WasmKernelArgs } from './kernel_utils.js';
import { conv2DWinograd, winogradApplies } from './Conv2DWinograd.js';
import { withScratch } from './scratch.js';
import { convTileKernel, outputChannelBlocks } from './simd/module.js';

type Shape4 = [number, number, number, number];

export function conv2D(args: WasmKernelArgs<Conv2DInputs, Conv2DAttrs>): TensorInfo {
  const { inputs, backend, attrs } = args;
  const x = required(inputs.x, 'x');
  const filter = required(inputs.filter, 'filter');
  const { strides, pad, dataFormat, dilations, dimRoundingMode } = attrs;
  const nhwc = dataFormat == null || dataFormat === 'NHWC';
  const info = nhwc
    ? backend_util.computeConv2DInfo(x.shape as Shape4, filter.shape as Shape4, strides, dilations, pad, dimRoundingMode, false, 'channelsLast')
    : null;
  const g = info == null ? null : shortGeometry(info);
  const simd = g != null && conv2DOptions.simd && info!.dilationHeight === 1 && info!.dilationWidth === 1 && x.dtype === 'float32';
  if (simd && g != null && conv2DOptions.winograd && winogradApplies(g)) {
    const y = conv2DWinograd(backend, x, filter, g);
    if (y != null) return y;
  }
  if (!simd || g == null || g.sh !== 1 || g.sw !== 1 || g.kh * g.kw === 1 || g.co < 4 || g.ow < 4) {
    return runStockKernel(Conv2D, backend, inputs, attrs);
  }
  const { n, c: ci, oh, ow, co, kh, kw, pt, pl } = g;
  const F = Float32Array.BYTES_PER_ELEMENT;
  const kernel = (ov: 1 | 2, px = 4) => convTileKernel(backend, { pixelBytes: ci * F, ov, px });
  const wide = kernel(2),
    narrow = kernel(1);
  // The columns left over by 4-pixel tiles: a tile of that many pixels, or (remainderTiles off) the last 4 pixels
  // again, overlapping the tile before (overlapping tiles write the same values).
  const rest = ow % 4;
  const restKernels = rest > 0 && conv2DOptions.remainderTiles ? { 2: kernel(2, rest), 1: kernel(1, rest) } : null;
  if (wide == null || narrow == null || (restKernels != null && (restKernels[1] == null || restKernels[2] == null))) {
    return runStockKernel(Conv2D, backend, inputs, attrs);
  }
  const blocks = outputChannelBlocks(co);
  return withScratch(backend, (s) => {
    const hp = oh + kh - 1,
      wp = ow + kw - 1;
    const xp = windowNHWC(s, x, -pt, hp, -pl, wp);
    const y = backend.makeOutput([n, oh, ow, co], 'float32');
    const xb = backend.getMemoryOffset(xp.dataId);
    const wb = backend.getMemoryOffset(filter.dataId);
    const yb = backend.getMemoryOffset(y.dataId);
    const xRow = wp * ci * F,
      co4 = co * F;
    const tiles = Math.floor(ow / 4);
    for (let b = 0; b < n; b++) {
      const x0 = xb + b * hp * xRow,
        y0 = yb + b * oh * ow * co4;
      for (const [ov, o0, oTiles] of blocks) {
        const tileKernel = ov === 2 ? wide : narrow;
        tileKernel(x0, wb + o0 * F, y0 + o0 * F, oh, tiles, oTiles, kh, kw, ci, xRow, co4, xRow, ow * co4);
        if (restKernels != null) {
          restKernels[ov]!(x0 + 4 * tiles * ci * F, wb + o0 * F, y0 + (4 * tiles * co + o0) * F, oh, 1, oTiles, kh, kw, ci, xRow, co4, xRow, ow * co4);
        } else if (rest !== 0) {
          tileKernel(x0 + (ow - 4) * ci * F, wb + o0 * F, y0 + ((ow - 4) * co + o0) * F, oh, 1, oTiles, kh, kw, ci, xRow, co4, xRow, ow * co4);
        }
      }
    }
    return y;
  });
}

/**
 * Tests and benchmarks switch the SIMD path off to compare with the stock kernel, `winograd` off to run stride-1 3x3
 * convolutions on the direct tiles (different rounding, same sums), and `remainderTiles` off to
 * compute the columns left over by 4-pixel tiles with an overlapping 4-pixel tile (the kernel before) instead of a
 * 1-3 pixel one; both give the same bits.
 */
export const conv2DOptions = { simd: true, remainderTiles: true, winograd: true };

export const conv2DConfig: KernelConfig = {
  kernelName: Conv2D,
  backendName: 'wasm',
  setupFunc: stockKernelSetup(Conv2D),
  // The registry's KernelFunc takes an untyped backend; ours needs wasm's.
  kernelFunc: conv2D as unknown as KernelFunc,
};
