/**
 * Hand-written wasm SIMD kernels that run on the tfjs wasm heap (the module
 * imports the backend's memory), for work XNNPACK has no operator for.
 * Every pointer argument is a byte offset into the heap; strides are in
 * bytes. Callers get `null` where the module cannot be used (no SIMD, or
 * the backend's memory is not reachable) and fall back to other paths.
 */
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

import { assemble, WasmFunction } from './assembler.js';

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

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** Counted loop over `body`: `counter` from `count` down to 1. */
export function countedLoop(label: string, counter: string, count: string, body: string): string {
  return `
    local.get ${count} local.set ${counter}
    block ${label}_done loop ${label}
      local.get ${counter} i32.eqz br_if ${label}_done
      ${body}
      local.get ${counter} i32.const 1 i32.sub local.set ${counter}
      br ${label}
    end end`;
}

export const advance = (p: string, by: string) => `local.get ${p} local.get ${by} i32.add local.set ${p}`;

/**
 * Loops over `$images` x `$rows` x `$cols` pixels of two operands `a` and `b`: pointer locals $a, $ar, $aq (image,
 * row, pixel) advanced by $aRow, $aCol, $aImage bytes, likewise for b; counters $n, $r, $c. `body` runs per pixel
 * with $aq and $bq at the pixel.
 */
export function pixelLoops(a: string, b: string, body: string): string {
  return countedLoop(
    '$image',
    '$n',
    '$images',
    `
    local.get $${a} local.set $${a}r
    local.get $${b} local.set $${b}r
    ${countedLoop(
      '$row',
      '$r',
      '$rows',
      `
      local.get $${a}r local.set $${a}q
      local.get $${b}r local.set $${b}q
      ${countedLoop(
        '$col',
        '$c',
        '$cols',
        `
        ${body}
        ${advance(`$${a}q`, `$${a}Col`)}
        ${advance(`$${b}q`, `$${b}Col`)}`,
      )}
      ${advance(`$${a}r`, `$${a}Row`)}
      ${advance(`$${b}r`, `$${b}Row`)}`,
    )}
    ${advance(`$${a}`, `$${a}Image`)}
    ${advance(`$${b}`, `$${b}Image`)}`,
  );
}

/**
 * The outer-product tile kernel for `ct` x channels by `4 * ov` dy
 * channels: ct * ov float32x4 accumulators, x values splatted from memory.
 */
export function outerTile(ct: number, ov: number, name = `outerTile${ct}x${4 * ov}`): WasmFunction {
  const acc = (k: number, v: number) => `$a${k * ov + v}`;
  return {
    name,
    text: `
    (param $x0 i32) (param $dy0 i32) (param $w0 i32) (param $rows i32) (param $cols i32) (param $images i32)
    (param $xRow i32) (param $xCol i32) (param $xImage i32) (param $dyRow i32) (param $dyCol i32) (param $dyImage i32)
    (param $wRow i32) (param $cTiles i32) (param $oTiles i32)
    (local $x i32) (local $dy i32) (local $w i32) (local $ct i32) (local $ot i32) (local $xc i32) (local $wc i32)
    ${range(ct * ov)
      .map((i) => `(local $a${i} v128)`)
      .join(' ')}
    ${range(ov)
      .map((v) => `(local $d${v} v128)`)
      .join(' ')}
    (local $s v128)
    (local $n i32) (local $r i32) (local $c i32) (local $xr i32) (local $dyr i32) (local $xq i32) (local $dyq i32)
    (local $wq i32)
    ;; Every block of ct x channels by 4 * ov dy channels, each summed over the images, rows and columns.
    local.get $x0 local.set $xc
    local.get $w0 local.set $wc
    ${countedLoop(
      '$ctile',
      '$ct',
      '$cTiles',
      `
    local.get $wc local.set $w
    ${countedLoop(
      '$otile',
      '$ot',
      '$oTiles',
      `
    local.get $xc local.set $x
    local.get $dy0 local.set $dy
    local.get $w local.set $wq
    ${range(ct)
      .map(
        (k) => `
      ${range(ov)
        .map((v) => `local.get $wq v128.load offset=${16 * v} local.set ${acc(k, v)}`)
        .join(' ')}
      ${advance('$wq', '$wRow')}`,
      )
      .join('')}
    ${pixelLoops(
      'x',
      'dy',
      `
      ${range(ov)
        .map((v) => `local.get $dyq v128.load offset=${16 * v} local.set $d${v}`)
        .join(' ')}
      ${range(ct)
        .map(
          (k) => `
        local.get $xq v128.load32_splat offset=${4 * k} local.set $s
        ${range(ov)
          .map(
            (v) => `
        local.get ${acc(k, v)} local.get $s local.get $d${v} f32x4.mul f32x4.add local.set ${acc(k, v)}`,
          )
          .join('')}`,
        )
        .join('')}`,
    )}
    local.get $w local.set $wq
    ${range(ct)
      .map(
        (k) => `
      ${range(ov)
        .map((v) => `local.get $wq local.get ${acc(k, v)} v128.store offset=${16 * v}`)
        .join(' ')}
      ${advance('$wq', '$wRow')}`,
      )
      .join('')}
    local.get $dy0 i32.const ${16 * ov} i32.add local.set $dy0
    local.get $w i32.const ${16 * ov} i32.add local.set $w`,
    )}
    local.get $dy0 local.get $oTiles i32.const ${16 * ov} i32.mul i32.sub local.set $dy0
    local.get $xc i32.const ${4 * ct} i32.add local.set $xc
    local.get $wc local.get $wRow i32.const ${ct} i32.mul i32.add local.set $wc`,
    )}
  `,
  };
}

/**
 * Forward-convolution kernel over `rows` output rows (starts `xNext` and
 * `yNext` bytes apart), each `tiles` groups of 4 consecutive output pixels
 * by `oTiles` groups of 8 output channels, summed over kh x kw taps and ci
 * channels of a padded NHWC input: 4 x values (one per pixel,
 * `pixelBytes` = stride * ci * 4 apart, fixed at assembly) are splatted
 * against 4 * ov filter values (ov = 2: blocks of 8 output channels; ov = 1:
 * blocks of 4, for the last channels when C is not a multiple of 8).
 * Writes y (no accumulate), so overlapping blocks may be recomputed.
 */
export function convTile(pixelBytes: number, ov = 2, name = `convTile_${pixelBytes}_${ov}`): WasmFunction {
  const acc = (k: number, v: number) => `$a${k * ov + v}`;
  return {
    name,
    text: `
    (param $x i32) (param $w i32) (param $y i32) (param $rows i32) (param $tiles i32) (param $oTiles i32)
    (param $kh i32) (param $kw i32) (param $ci i32) (param $xRow i32) (param $co4 i32)
    (param $xNext i32) (param $yNext i32)
    ${range(4 * ov)
      .map((i) => `(local $a${i} v128)`)
      .join(' ')}
    ${range(ov)
      .map((v) => `(local $d${v} v128)`)
      .join(' ')}
    (local $s v128) (local $zero v128)
    (local $t i32) (local $o i32) (local $a i32) (local $c i32) (local $r i32) (local $yt i32)
    (local $xt i32) (local $xa i32) (local $xc i32)
    (local $wo i32) (local $wa i32) (local $wc i32)
    (local $yo i32) (local $yq i32) (local $wRow i32) (local $kwci i32)
    local.get $kw local.get $ci i32.mul local.set $kwci
    ;; bytes between filter rows: kw * ci * co * 4
    local.get $kwci local.get $co4 i32.mul local.set $wRow
    ${countedLoop(
      '$orow',
      '$r',
      '$rows',
      `
    local.get $x local.set $xt
    local.get $y local.set $yt
    ${countedLoop(
      '$tile',
      '$t',
      '$tiles',
      `
      local.get $w local.set $wo
      local.get $yt local.set $yo
      ${countedLoop(
        '$och',
        '$o',
        '$oTiles',
        `
        ${range(4 * ov)
          .map((i) => `local.get $zero local.set $a${i}`)
          .join(' ')}
        local.get $xt local.set $xa
        local.get $wo local.set $wa
        ${countedLoop(
          '$krow',
          '$a',
          '$kh',
          `
          local.get $xa local.set $xc
          local.get $wa local.set $wc
          ;; Taps of one kernel row and their channels are contiguous in x and in w.
          ${countedLoop(
            '$chan',
            '$c',
            '$kwci',
            `
            ${range(ov)
              .map((v) => `local.get $wc v128.load offset=${16 * v} local.set $d${v}`)
              .join(' ')}
            ${range(4)
              .map(
                (k) => `
              local.get $xc v128.load32_splat offset=${k * pixelBytes} local.set $s
              ${range(ov)
                .map(
                  (v) => `
              local.get ${acc(k, v)} local.get $s local.get $d${v} f32x4.mul f32x4.add local.set ${acc(k, v)}`,
                )
                .join('')}`,
              )
              .join('')}
            local.get $xc i32.const 4 i32.add local.set $xc
            ${advance('$wc', '$co4')}`,
          )}
          ${advance('$xa', '$xRow')}
          ${advance('$wa', '$wRow')}`,
        )}
        local.get $yo local.set $yq
        ${range(4)
          .map(
            (k) => `
          ${range(ov)
            .map((v) => `local.get $yq local.get ${acc(k, v)} v128.store offset=${16 * v}`)
            .join(' ')}
          ${advance('$yq', '$co4')}`,
          )
          .join('')}
        local.get $wo i32.const ${16 * ov} i32.add local.set $wo
        local.get $yo i32.const ${16 * ov} i32.add local.set $yo`,
      )}
      local.get $xt i32.const ${4 * pixelBytes} i32.add local.set $xt
      local.get $yt local.get $co4 i32.const 2 i32.shl i32.add local.set $yt`,
    )}
    ${advance('$x', '$xNext')}
    ${advance('$y', '$yNext')}`,
    )}
  `,
  };
}

/**
 * A loop over `n` vectors with `$k` cycling through [0, period) in steps of
 * 16 bytes; `pointers` advance by 16 bytes per vector.
 */
function cyclicLoop(pointers: string[], body: string): string {
  return `
    i32.const 0 local.set $k
    ${countedLoop(
      '$v',
      '$i',
      '$n',
      `
      ${body}
      ${pointers.map((p) => `local.get ${p} i32.const 16 i32.add local.set ${p}`).join(' ')}
      local.get $k i32.const 16 i32.add local.tee $k local.get $period i32.eq
      if i32.const 0 local.set $k end`,
    )}`;
}

const at = (base: string) => `local.get ${base} local.get $k i32.add`;

const channelFunctions: WasmFunction[] = [
  {
    name: 'sumCyclic',
    text: `(param $x i32) (param $n i32) (param $acc i32) (param $period i32)
      (local $k i32) (local $i i32) (local $p i32)
      ${cyclicLoop(
        ['$x'],
        `
        ${at('$acc')} local.tee $p
        local.get $p v128.load local.get $x v128.load f32x4.add
        v128.store`,
      )}`,
  },
  {
    name: 'sqDevSumCyclic',
    text: `(param $x i32) (param $n i32) (param $mean i32) (param $acc i32) (param $period i32)
      (local $k i32) (local $i i32) (local $p i32) (local $d v128)
      ${cyclicLoop(
        ['$x'],
        `
        local.get $x v128.load ${at('$mean')} v128.load f32x4.sub local.set $d
        ${at('$acc')} local.tee $p
        local.get $p v128.load local.get $d local.get $d f32x4.mul f32x4.add
        v128.store`,
      )}`,
  },
  {
    name: 'affineCyclic',
    text: `(param $x i32) (param $n i32) (param $scale i32) (param $shift i32) (param $y i32) (param $period i32)
      (local $k i32) (local $i i32)
      ${cyclicLoop(
        ['$x', '$y'],
        `
        local.get $y
        local.get $x v128.load ${at('$scale')} v128.load f32x4.mul
        ${at('$shift')} v128.load f32x4.add
        v128.store`,
      )}`,
  },
  {
    name: 'gradSumsCyclic',
    text: `(param $dy i32) (param $x i32) (param $n i32) (param $mean i32) (param $accDy i32) (param $accDyXc i32)
      (param $period i32)
      (local $k i32) (local $i i32) (local $p i32) (local $g v128)
      ${cyclicLoop(
        ['$dy', '$x'],
        `
        local.get $dy v128.load local.set $g
        ${at('$accDy')} local.tee $p
        local.get $p v128.load local.get $g f32x4.add
        v128.store
        ${at('$accDyXc')} local.tee $p
        local.get $p v128.load
        local.get $x v128.load ${at('$mean')} v128.load f32x4.sub local.get $g f32x4.mul
        f32x4.add
        v128.store`,
      )}`,
  },
  {
    name: 'affine2Cyclic',
    text: `(param $dy i32) (param $x i32) (param $n i32) (param $a i32) (param $b i32) (param $c i32) (param $out i32)
      (param $period i32)
      (local $k i32) (local $i i32)
      ${cyclicLoop(
        ['$dy', '$x', '$out'],
        `
        local.get $out
        local.get $dy v128.load ${at('$a')} v128.load f32x4.mul
        local.get $x v128.load ${at('$b')} v128.load f32x4.mul
        f32x4.add
        ${at('$c')} v128.load f32x4.add
        v128.store`,
      )}`,
  },
  {
    name: 'reluGrad',
    text: `(param $dy i32) (param $y i32) (param $n i32) (param $out i32)
      (local $i i32) (local $zero v128)
      ${countedLoop(
        '$v',
        '$i',
        '$n',
        `
        local.get $out
        local.get $dy v128.load
        local.get $y v128.load local.get $zero f32x4.gt
        v128.and
        v128.store
        local.get $dy i32.const 16 i32.add local.set $dy
        local.get $y i32.const 16 i32.add local.set $y
        local.get $out i32.const 16 i32.add local.set $out`,
      )}`,
  },
  {
    name: 'clipGrad',
    text: `(param $dy i32) (param $x i32) (param $n i32) (param $lo f32) (param $hi f32) (param $loInclusive i32)
      (param $out i32)
      (local $i i32) (local $l v128) (local $h v128) (local $v v128)
      local.get $lo f32x4.splat local.set $l
      local.get $hi f32x4.splat local.set $h
      ${countedLoop(
        '$v',
        '$i',
        '$n',
        `
        local.get $x v128.load local.set $v
        local.get $out
        local.get $dy v128.load
        local.get $v local.get $h f32x4.le v128.and
        local.get $v local.get $l f32x4.ge local.get $v local.get $l f32x4.gt
        local.get $loInclusive select
        v128.and
        v128.store
        local.get $dy i32.const 16 i32.add local.set $dy
        local.get $x i32.const 16 i32.add local.set $x
        local.get $out i32.const 16 i32.add local.set $out`,
      )}`,
  },
];

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

const convInstances = new WeakMap<object, Map<number, ConvTileKernel>>();

/** The convTile kernel for (`pixelBytes`, `ov`) on `backend`'s heap (assembled once per pair), or null. */
export function convTileKernel(backend: BackendWasm, pixelBytes: number, ov: 1 | 2 = 2): ConvTileKernel | null {
  const memory = (backend.wasm as unknown as { asm?: { memory?: unknown } }).asm?.memory;
  if (simdKernels(backend) == null || WA == null || !(memory instanceof WA.Memory)) return null;
  let byBytes = convInstances.get(backend.wasm);
  if (byBytes == null) convInstances.set(backend.wasm, (byBytes = new Map()));
  const key = 2 * pixelBytes + ov - 1;
  let k = byBytes.get(key);
  if (k == null) {
    const module = new WA.Module(assemble([convTile(pixelBytes, ov, 'conv')]));
    k = (new WA.Instance(module, { env: { memory } }).exports as { conv: ConvTileKernel }).conv;
    byBytes.set(key, k);
  }
  return k;
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
    if (WA == null) throw new Error('no WebAssembly');
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
