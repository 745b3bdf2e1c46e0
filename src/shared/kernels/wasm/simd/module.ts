/**
 * Hand-written wasm SIMD kernels that run on the tfjs wasm heap (the module
 * imports the backend's memory), for work XNNPACK has no operator for.
 * Every pointer argument is a byte offset into the heap; strides are in
 * bytes. Callers get `null` where the module cannot be used (no SIMD, or
 * the backend's memory is not reachable) and fall back to other paths.
 */
import type {BackendWasm} from '@tensorflow/tfjs-backend-wasm';

import {assemble, WasmFunction} from './assembler.js';

export interface SimdKernels {
  /**
   * Filter-gradient tile: for 4 input channels (x) and 8 output channels
   * (dy), adds sum over images, rows and columns of x[c] * dy[o] to the
   * 4x8 block at `w` (rows `wRow` bytes apart).
   */
  outerTile4x8(
      x: number, dy: number, w: number, rows: number, cols: number,
      images: number, xRow: number, xCol: number, xImage: number,
      dyRow: number, dyCol: number, dyImage: number, wRow: number): void;

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
  gradSumsCyclic(
      dy: number, x: number, n: number, mean: number, accDy: number, accDyXc: number, period: number): void;
  /** out = dy * a + x * b + c */
  affine2Cyclic(
      dy: number, x: number, n: number, a: number, b: number, c: number, out: number, period: number): void;
  /** out = y > 0 ? dy : 0 (elementwise, no period) */
  reluGrad(dy: number, y: number, n: number, out: number): void;
}

const range = (n: number) => Array.from({length: n}, (_, i) => i);

/** Counted loop over `body`: `counter` from `count` down to 1. */
function countedLoop(label: string, counter: string, count: string, body: string): string {
  return `
    local.get ${count} local.set ${counter}
    block ${label}_done loop ${label}
      local.get ${counter} i32.eqz br_if ${label}_done
      ${body}
      local.get ${counter} i32.const 1 i32.sub local.set ${counter}
      br ${label}
    end end`;
}

const advance = (p: string, by: string) => `local.get ${p} local.get ${by} i32.add local.set ${p}`;

const outerTile4x8: WasmFunction = {
  name: 'outerTile4x8',
  text: `
    (param $x i32) (param $dy i32) (param $w i32) (param $rows i32) (param $cols i32) (param $images i32)
    (param $xRow i32) (param $xCol i32) (param $xImage i32) (param $dyRow i32) (param $dyCol i32) (param $dyImage i32)
    (param $wRow i32)
    ${range(8).map(i => `(local $a${i} v128)`).join(' ')}
    (local $s v128) (local $d0 v128) (local $d1 v128)
    (local $n i32) (local $r i32) (local $c i32) (local $xr i32) (local $dr i32) (local $xq i32) (local $dq i32)
    (local $wq i32)
    local.get $w local.set $wq
    ${range(4).map(k => `
      local.get $wq v128.load local.set $a${2 * k}
      local.get $wq v128.load offset=16 local.set $a${2 * k + 1}
      ${advance('$wq', '$wRow')}`).join('')}
    ${countedLoop('$image', '$n', '$images', `
      local.get $x local.set $xr
      local.get $dy local.set $dr
      ${countedLoop('$row', '$r', '$rows', `
        local.get $xr local.set $xq
        local.get $dr local.set $dq
        ${countedLoop('$col', '$c', '$cols', `
          local.get $dq v128.load local.set $d0
          local.get $dq v128.load offset=16 local.set $d1
          ${range(4).map(k => `
            local.get $xq v128.load32_splat offset=${4 * k} local.set $s
            local.get $a${2 * k} local.get $s local.get $d0 f32x4.mul f32x4.add local.set $a${2 * k}
            local.get $a${2 * k + 1} local.get $s local.get $d1 f32x4.mul f32x4.add local.set $a${2 * k + 1}`).join('')}
          ${advance('$xq', '$xCol')}
          ${advance('$dq', '$dyCol')}`)}
        ${advance('$xr', '$xRow')}
        ${advance('$dr', '$dyRow')}`)}
      ${advance('$x', '$xImage')}
      ${advance('$dy', '$dyImage')}`)}
    local.get $w local.set $wq
    ${range(4).map(k => `
      local.get $wq local.get $a${2 * k} v128.store
      local.get $wq local.get $a${2 * k + 1} v128.store offset=16
      ${advance('$wq', '$wRow')}`).join('')}
  `,
};

/** The part of the WebAssembly JS API used here (the project's libs do not declare it). */
interface WasmApi {
  Memory: abstract new (...args: never[]) => object;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => {exports: object};
}
const WA = (globalThis as unknown as {WebAssembly?: WasmApi}).WebAssembly;

/**
 * A loop over `n` vectors with `$k` cycling through [0, period) in steps of
 * 16 bytes; `pointers` advance by 16 bytes per vector.
 */
function cyclicLoop(pointers: string[], body: string): string {
  return `
    i32.const 0 local.set $k
    ${countedLoop('$v', '$i', '$n', `
      ${body}
      ${pointers.map(p => `local.get ${p} i32.const 16 i32.add local.set ${p}`).join(' ')}
      local.get $k i32.const 16 i32.add local.tee $k local.get $period i32.eq
      if i32.const 0 local.set $k end`)}`;
}

const at = (base: string) => `local.get ${base} local.get $k i32.add`;

const channelFunctions: WasmFunction[] = [
  {
    name: 'sumCyclic',
    text: `(param $x i32) (param $n i32) (param $acc i32) (param $period i32)
      (local $k i32) (local $i i32) (local $p i32)
      ${cyclicLoop(['$x'], `
        ${at('$acc')} local.tee $p
        local.get $p v128.load local.get $x v128.load f32x4.add
        v128.store`)}`,
  },
  {
    name: 'sqDevSumCyclic',
    text: `(param $x i32) (param $n i32) (param $mean i32) (param $acc i32) (param $period i32)
      (local $k i32) (local $i i32) (local $p i32) (local $d v128)
      ${cyclicLoop(['$x'], `
        local.get $x v128.load ${at('$mean')} v128.load f32x4.sub local.set $d
        ${at('$acc')} local.tee $p
        local.get $p v128.load local.get $d local.get $d f32x4.mul f32x4.add
        v128.store`)}`,
  },
  {
    name: 'affineCyclic',
    text: `(param $x i32) (param $n i32) (param $scale i32) (param $shift i32) (param $y i32) (param $period i32)
      (local $k i32) (local $i i32)
      ${cyclicLoop(['$x', '$y'], `
        local.get $y
        local.get $x v128.load ${at('$scale')} v128.load f32x4.mul
        ${at('$shift')} v128.load f32x4.add
        v128.store`)}`,
  },
  {
    name: 'gradSumsCyclic',
    text: `(param $dy i32) (param $x i32) (param $n i32) (param $mean i32) (param $accDy i32) (param $accDyXc i32)
      (param $period i32)
      (local $k i32) (local $i i32) (local $p i32) (local $g v128)
      ${cyclicLoop(['$dy', '$x'], `
        local.get $dy v128.load local.set $g
        ${at('$accDy')} local.tee $p
        local.get $p v128.load local.get $g f32x4.add
        v128.store
        ${at('$accDyXc')} local.tee $p
        local.get $p v128.load
        local.get $x v128.load ${at('$mean')} v128.load f32x4.sub local.get $g f32x4.mul
        f32x4.add
        v128.store`)}`,
  },
  {
    name: 'affine2Cyclic',
    text: `(param $dy i32) (param $x i32) (param $n i32) (param $a i32) (param $b i32) (param $c i32) (param $out i32)
      (param $period i32)
      (local $k i32) (local $i i32)
      ${cyclicLoop(['$dy', '$x', '$out'], `
        local.get $out
        local.get $dy v128.load ${at('$a')} v128.load f32x4.mul
        local.get $x v128.load ${at('$b')} v128.load f32x4.mul
        f32x4.add
        ${at('$c')} v128.load f32x4.add
        v128.store`)}`,
  },
  {
    name: 'reluGrad',
    text: `(param $dy i32) (param $y i32) (param $n i32) (param $out i32)
      (local $i i32) (local $zero v128)
      ${countedLoop('$v', '$i', '$n', `
        local.get $out
        local.get $dy v128.load
        local.get $y v128.load local.get $zero f32x4.gt
        v128.and
        v128.store
        local.get $dy i32.const 16 i32.add local.set $dy
        local.get $y i32.const 16 i32.add local.set $y
        local.get $out i32.const 16 i32.add local.set $out`)}`,
  },
];

let compiled: object|null|undefined;
const instances = new WeakMap<object, SimdKernels|null>();

/** The kernels bound to `backend`'s heap, or null when unavailable. */
export function simdKernels(backend: BackendWasm): SimdKernels|null {
  const wasm = backend.wasm as unknown as {asm?: {memory?: unknown}};
  const cached = instances.get(wasm);
  if (cached !== undefined) return cached;
  let kernels: SimdKernels|null = null;
  const memory = wasm.asm?.memory;
  try {
    if (WA == null) throw new Error('no WebAssembly');
    if (compiled === undefined) compiled = new WA.Module(assemble([outerTile4x8, ...channelFunctions]));
    if (compiled != null && memory instanceof WA.Memory) {
      const instance = new WA.Instance(compiled, {env: {memory}});
      kernels = instance.exports as unknown as SimdKernels;
    }
  } catch {
    // No wasm SIMD in this runtime: the callers' portable paths run instead.
    compiled = null;
  }
  instances.set(wasm, kernels);
  return kernels;
}
