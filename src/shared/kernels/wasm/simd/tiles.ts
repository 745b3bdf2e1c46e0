/**
 * Generators of the convolution tile kernels (wasm text): the filter-gradient outer-product tiles and the
 * forward-convolution tiles. simd/module.ts assembles them against the backend's heap.
 */
import type { WasmFunction } from './assembler.js';
import { advance, advanceBy, countedLoop, loadVectors, pixelLoops, range, splatMulAdd, storeVectors } from './wasm_text.js';

/**
 * The outer-product tile kernel for `ct` x channels by `4 * ov` dy
 * channels: ct * ov float32x4 accumulators, x values splatted from memory.
 */
export function outerTile(ct: number, ov: number, name = `outerTile${ct}x${4 * ov}`): WasmFunction {
  const acc = (k: number, v: number) => `$a${k * ov + v}`;
  const accRow = (k: number) => range(ov).map((v) => acc(k, v));
  const ds = range(ov).map((v) => `$d${v}`);
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
      ${loadVectors('$wq', accRow(k))}
      ${advance('$wq', '$wRow')}`,
      )
      .join('')}
    ${pixelLoops(
      'x',
      'dy',
      `
      ${loadVectors('$dyq', ds)}
      ${range(ct)
        .map((k) => splatMulAdd('$xq', 4 * k, '$s', accRow(k), ds))
        .join('')}`,
    )}
    local.get $w local.set $wq
    ${range(ct)
      .map(
        (k) => `
      ${storeVectors('$wq', accRow(k))}
      ${advance('$wq', '$wRow')}`,
      )
      .join('')}
    ${advanceBy('$dy0', 16 * ov)}
    ${advanceBy('$w', 16 * ov)}`,
    )}
    local.get $dy0 local.get $oTiles i32.const ${16 * ov} i32.mul i32.sub local.set $dy0
    ${advanceBy('$xc', 4 * ct)}
    local.get $wc local.get $wRow i32.const ${ct} i32.mul i32.add local.set $wc`,
    )}
  `,
  };
}

/** The shape a convTile kernel is assembled for (all byte counts fixed in the code). */
export interface ConvTileShape {
  /** Bytes between the x values of two consecutive output pixels: stride * ci * 4. */
  pixelBytes: number;
  /** float32x4 vectors of output channels per block: 2 (8 channels) or 1 (4). */
  ov: 1 | 2;
  /** Output pixels per tile, 1 to 4 (more accumulators than 4 x 2 vectors ran slower under V8). */
  px?: number;
}

/**
 * Forward-convolution kernel over `rows` output rows (starts `xNext` and
 * `yNext` bytes apart), each `tiles` groups of `px` consecutive output pixels
 * by `oTiles` groups of 4 * ov output channels, summed over kh x kw taps and ci
 * channels of a padded NHWC input: px x values (one per pixel,
 * `pixelBytes` apart) are splatted
 * against 4 * ov filter values (ov = 2: blocks of 8 output channels; ov = 1:
 * blocks of 4, for the last channels when C is not a multiple of 8). Tiles of
 * fewer than 4 pixels cover the columns left over by 4-pixel tiles.
 * Writes y (no accumulate), so overlapping blocks may be recomputed.
 */
export function convTile(shape: ConvTileShape, name = 'conv'): WasmFunction {
  const { pixelBytes, ov, px = 4 } = shape;
  const acc = (k: number, v: number) => `$a${k * ov + v}`;
  const accRow = (k: number) => range(ov).map((v) => acc(k, v));
  const ds = range(ov).map((v) => `$d${v}`);
  // One filter row (one input channel of one tap): its vectors, then px splatted x values times them.
  const filterRow = () => `
            ${loadVectors('$wc', ds)}
            ${range(px)
              .map((k) => splatMulAdd('$xc', k * pixelBytes, '$s', accRow(k), ds))
              .join('')}`;
  return {
    name,
    text: `
    (param $x i32) (param $w i32) (param $y i32) (param $rows i32) (param $tiles i32) (param $oTiles i32)
    (param $kh i32) (param $kw i32) (param $ci i32) (param $xRow i32) (param $co4 i32)
    (param $xNext i32) (param $yNext i32)
    ${range(px * ov)
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
        ${range(px * ov)
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
            ${filterRow()}
            ${advanceBy('$xc', 4)}
            ${advance('$wc', '$co4')}`,
          )}
          ${advance('$xa', '$xRow')}
          ${advance('$wa', '$wRow')}`,
        )}
        local.get $yo local.set $yq
        ${range(px)
          .map(
            (k) => `
          ${storeVectors('$yq', accRow(k))}
          ${advance('$yq', '$co4')}`,
          )
          .join('')}
        ${advanceBy('$wo', 16 * ov)}
        ${advanceBy('$yo', 16 * ov)}`,
      )}
      ${advanceBy('$xt', px * pixelBytes)}
      local.get $yt local.get $co4 i32.const ${px} i32.mul i32.add local.set $yt`,
    )}
    ${advance('$x', '$xNext')}
    ${advance('$y', '$yNext')}`,
    )}
  `,
  };
}
