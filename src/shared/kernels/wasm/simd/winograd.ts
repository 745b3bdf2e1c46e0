/**
 * Generators of the Winograd F(2x2, 3x3) kernels (wasm text), after Lavin & Gray 2016, "Fast Algorithms for
 * Convolutional Neural Networks" (section 4.1, eq. 7): a 2x2 output tile of a stride-1 3x3 convolution is
 * A^T [(G g G^T) . (B^T d B)] A, with d the 4x4 input tile, g the 3x3 filter and . the elementwise product, so
 * 16 multiplications per input/output channel pair instead of 36. Summed over the input channels, the 16
 * elementwise products are 16 matrix products ([tiles, ci] x [ci, co]). The transforms work on float32x4 vectors of
 * channels, the products on 4-tile x 8-channel blocks.
 *
 * Layouts (all float32, channels innermost like NHWC):
 * - g: the filter [3, 3, ci, co] (tfjs' HWIO);
 * - U: the transformed filter [16, ci, co], plane xi = 4 i + j holding (G g G^T)[i][j];
 * - V: transformed input tiles [16, tiles, ci] of a block of tiles, plane xi holding (B^T d B)[i][j];
 * - M: the products [16, tiles, co], same planes;
 * - y: NHWC output rows.
 * A channel count C >= 4 that is not a multiple of 4 is covered by ceil(C / 4) vectors, the last starting at C - 4
 * (it overlaps the one before; both write the same values, the transforms being per channel).
 * Every sum is written out in a fixed order, so results do not depend on blocking or call order.
 */
import type { WasmFunction } from './assembler.js';
import { countedLoop, range } from './wasm_text.js';

/** The channel counts a module is generated for (byte offsets are constants in the code). */
export interface WinogradShape {
  /** Input channels, >= 4. */
  ci: number;
  /** Output channels, >= 4. */
  co: number;
}

const v128Locals = (names: string[]) => names.map((n) => `(local ${n} v128)`).join(' ');
export const names = (prefix: string, n: number) => range(n).map((i) => `${prefix}${i}`);
export const set = (out: string, expr: string) => `${expr} local.set ${out}`;
export const get = (...xs: string[]) => xs.map((x) => `local.get ${x}`).join(' ');

/** `p += by` for a pointer local and a constant byte count. */
const bump = ([p, by]: [string, number]) => `local.get ${p} i32.const ${by} i32.add local.set ${p}`;

/** countedLoop over `body`, then the pointer locals `bumps` advanced by their byte counts, each iteration. */
const steppingLoop = (label: string, counter: string, count: string, body: string, bumps: Array<[string, number]>) =>
  countedLoop(label, counter, count, `${body}\n      ${bumps.map(bump).join('\n      ')}`);

/** A 1-D transform in wasm text: its inputs and outputs are v128 locals. */
export type Transform1D = (ins: string[], outs: string[]) => string;

/** G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]: a, ((a + b) + c) / 2, ((a - b) + c) / 2, c (exact halvings). */
const gTimes: Transform1D = ([a, b, c], [o0, o1, o2, o3]) => `
      ${set(o0, get(a))}
      ${set(o1, `${get(a, b)} f32x4.add ${get(c)} f32x4.add ${get('$half')} f32x4.mul`)}
      ${set(o2, `${get(a, b)} f32x4.sub ${get(c)} f32x4.add ${get('$half')} f32x4.mul`)}
      ${set(o3, get(c))}`;

/** B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]: a - c, b + c, c - b, b - e. */
const bTimes: Transform1D = ([a, b, c, e], [o0, o1, o2, o3]) => `
      ${set(o0, `${get(a, c)} f32x4.sub`)} ${set(o1, `${get(b, c)} f32x4.add`)}
      ${set(o2, `${get(c, b)} f32x4.sub`)} ${set(o3, `${get(b, e)} f32x4.sub`)}`;

/** A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]: (a + b) + c, (b - c) - e. */
const aTimes: Transform1D = ([a, b, c, e], [o0, o1]) => `
      ${set(o0, `${get(a, b)} f32x4.add ${get(c)} f32x4.add`)} ${set(o1, `${get(b, c)} f32x4.sub ${get(e)} f32x4.sub`)}`;

/**
 * Y = T X T^T for an n x n matrix X (locals x, row-major) and a transform t of n values to m: t on every column of X
 * into tmp ([m, n]), then on the first `rowsOut` rows of tmp into y ([rowsOut, m]).
 */
export function transform2D(t: Transform1D, n: number, m: number, x: string[], tmp: string[], y: string[], rowsOut = m): string {
  const columns = range(n).map((j) =>
    t(
      range(n).map((r) => x[r * n + j]),
      range(m).map((i) => tmp[i * n + j]),
    ),
  );
  const rows = range(rowsOut).map((i) =>
    t(
      range(n).map((b) => tmp[i * n + b]),
      range(m).map((j) => y[i * m + j]),
    ),
  );
  return [...columns, ...rows].join('');
}

/**
 * Loop over the float32x4 vectors of `channels` channels: `body` runs with `$off` = byte offset of the vector
 * (16 k, the last one clamped to 4 (channels - 4)); uses locals $k, $off and $vectors.
 */
function channelVectors(channels: number, body: string): string {
  const last = 4 * (channels - 4);
  return `
    i32.const ${Math.ceil(channels / 4)} local.set $vectors
    i32.const 0 local.set $off
    ${countedLoop(
      '$vec',
      '$k',
      '$vectors',
      `
      i32.const ${last} local.get $off local.get $off i32.const ${last} i32.gt_s select local.set $off
      ${body}
      local.get $off i32.const 16 i32.add local.set $off`,
    )}`;
}

/** 16 v128 loads or stores of the locals `values` at `$ptr`, `$ptr + plane`, ..., with $ptr = base + $off. */
export function planes(op: 'load' | 'store', base: string, plane: string, values: string[]): string {
  const access = (v: string) => (op === 'load' ? `local.get $ptr v128.load local.set ${v}` : `local.get $ptr local.get ${v} v128.store`);
  return `local.get ${base} local.get $off i32.add local.set $ptr
      ${values.map((v) => `${access(v)} local.get $ptr local.get ${plane} i32.add local.set $ptr`).join(' ')}`;
}

/**
 * A function over `$tiles` tiles along one tile row: params (from, to, $tiles, rowBytes, planeBytes), the `body` per
 * tile and channel vector (`channels` channels), then `from` and `to` advanced by fromStep and toStep bytes.
 */
export function tileRowFunction(name: string, params: string[], channels: number, steps: [number, number], v128: string[], body: string): WasmFunction {
  const [from, to] = params;
  return {
    name,
    text: `
    ${params.map((p) => `(param ${p} i32)`).join(' ')}
    (local $n i32) (local $k i32) (local $off i32) (local $vectors i32) (local $ptr i32) (local $p i32)
    ${v128Locals(v128)}
    ${steppingLoop('$tile', '$n', '$tiles', channelVectors(channels, body), [
      [from, steps[0]],
      [to, steps[1]],
    ])}
  `,
  };
}

/**
 * A function `name(from, to)` over the [planes, ci, co] filter-shaped arrays `from` (inCount planes) and `to`
 * (outCount planes), planes ci * co * 4 bytes apart: for every (input channel, output channel vector), the
 * 2-D transform t (n x n values to m x m) of the inCount values into the outCount values. Locals: $half = 0.5 splatted,
 * and the v128 locals `scratch` for t.
 */
export function filterPlanesFunction(name: string, { ci, co }: WinogradShape, t: Transform1D, n: number, m: number, scratch: string[] = []): WasmFunction {
  const plane = ci * co * 4;
  const ins = names('$i', n * n),
    tmp = names('$r', m * n),
    outs = names('$o', m * m);
  return {
    name,
    text: `
    (param $from i32) (param $to i32)
    (local $c i32) (local $k i32) (local $off i32) (local $vectors i32) (local $cis i32) (local $p i32)
    ${v128Locals([...ins, ...tmp, ...outs, '$half', ...scratch])}
    f32.const 0.5 f32x4.splat local.set $half
    i32.const ${ci} local.set $cis
    ${steppingLoop(
      '$cin',
      '$c',
      '$cis',
      channelVectors(
        co,
        `
      local.get $from local.get $off i32.add local.set $p
      ${ins.map((v, i) => `local.get $p v128.load offset=${i * plane} local.set ${v}`).join(' ')}
      ${transform2D(t, n, m, ins, tmp, outs)}
      local.get $to local.get $off i32.add local.set $p
      ${outs.map((v, i) => `local.get $p local.get ${v} v128.store offset=${i * plane}`).join(' ')}`,
      ),
      [
        ['$from', co * 4],
        ['$to', co * 4],
      ],
    )}
  `,
  };
}

/**
 * `input(x, v, tiles, xRow, vPlane)`: V = B^T d B for `tiles` tiles along one tile row. x: the padded input at the
 * tile row's top-left pixel (tiles start 2 pixels apart, rows xRow bytes apart); v: tile 0 of plane 0 in V (planes
 * vPlane bytes apart).
 */
function inputTransform({ ci }: WinogradShape): WasmFunction {
  const px = ci * 4;
  const d = names('$d', 16),
    tmp = names('$t', 16);
  const body = `
      local.get $x local.get $off i32.add local.set $p
      ${range(4)
        .map(
          (i) =>
            `${d
              .slice(4 * i, 4 * i + 4)
              .map((v, j) => `local.get $p v128.load offset=${j * px} local.set ${v}`)
              .join(' ')} ${get('$p', '$xRow')} i32.add local.set $p`,
        )
        .join('\n      ')}
      ${transform2D(bTimes, 4, 4, d, tmp, d)}
      ${planes('store', '$v', '$vPlane', d)}`;
  return tileRowFunction('input', ['$x', '$v', '$tiles', '$xRow', '$vPlane'], ci, [2 * px, px], [...d, ...tmp], body);
}

/**
 * `output{rows}x{cols}(m, y, tiles, yRow, mPlane)`: Y = A^T m A for `tiles` tiles along one tile row, writing the
 * first `rows` x `cols` pixels of each 2x2 output tile (1 for the last tile row or column of an odd output height or
 * width). m: tile 0 of plane 0 in M (planes mPlane bytes apart); y: the output at the tile row's top-left pixel (rows
 * yRow bytes apart).
 */
function outputTransform({ co }: WinogradShape, rows: 1 | 2, cols: 1 | 2): WasmFunction {
  const px = co * 4;
  const m = names('$m', 16),
    tmp = names('$s', 8),
    o = names('$o', 4);
  const body = `
      ${planes('load', '$m', '$mPlane', m)}
      ${transform2D(aTimes, 4, 2, m, tmp, o, rows)}
      local.get $y local.get $off i32.add local.set $p
      ${range(rows)
        .map(
          (i) =>
            `${range(cols)
              .map((j) => `local.get $p local.get ${o[2 * i + j]} v128.store offset=${j * px}`)
              .join(' ')} ${get('$p', '$yRow')} i32.add local.set $p`,
        )
        .join('\n      ')}`;
  return tileRowFunction(`output${rows}x${cols}`, ['$m', '$y', '$tiles', '$yRow', '$mPlane'], co, [px, 2 * px], [...m, ...tmp, ...o], body);
}

/**
 * `products(v, u, m, quads, vPlane, mPlane)`: M[xi] = V[xi] U[xi] for the 16 planes xi, each [4 quads, ci] x
 * [ci, co], summed over the input channels in order. v, m: plane 0 of V and M (planes vPlane and mPlane bytes
 * apart); u: U. Blocks of 4 tiles by 8 output channels (then 4, the last block ending at co and overlapping the one
 * before when co is not a multiple of 8) keep 8 (4) float32x4 accumulators; tile values are splatted, U rows loaded.
 * One channel per loop iteration: unrolling it by 2 or 4 (constant offsets) ran at 0.6-0.7x the speed under V8.
 */
function products({ ci, co }: WinogradShape): WasmFunction {
  const px = ci * 4,
    row = co * 4;
  // One block of 4 tiles by 4 * ov channels at output channel byte offset o4 (relative to $uq, $mq).
  const block = (ov: number, o4: number) => {
    const acc = (t: number, w: number) => `$a${t * 2 + w}`;
    const accs = range(4).flatMap((t) => range(ov).map((w) => [t, w, acc(t, w)] as const));
    const multiplyAdd = `
          ${range(ov)
            .map((w) => `local.get $uc v128.load offset=${o4 + 16 * w} local.set $w${w}`)
            .join(' ')}
          ${range(4)
            .map(
              (t) => `local.get $vc v128.load32_splat offset=${t * px} local.set $s
          ${accs
            .filter(([tt]) => tt === t)
            .map(([, w, a]) => set(a, `${get(a, '$s', `$w${w}`)} f32x4.mul f32x4.add`))
            .join(' ')}`,
            )
            .join('\n          ')}`;
    return `
        ${accs.map(([, , a]) => set(a, get('$zero'))).join(' ')}
        local.get $vq local.set $vc
        local.get $uq local.set $uc
        ${steppingLoop('$chan', '$c', '$cis', multiplyAdd, [
          ['$vc', 4],
          ['$uc', row],
        ])}
        ${accs.map(([t, w, a]) => `local.get $mq local.get ${a} v128.store offset=${t * row + o4 + 16 * w}`).join(' ')}`;
  };
  const eights = Math.floor(co / 8);
  const fourBlocks: number[] = [];
  for (let o = 8 * eights; o < co; o += 4) fourBlocks.push(4 * Math.min(o, co - 4));
  const quad = `
        local.get $u local.set $uq
        local.get $mo local.set $mq
        ${steppingLoop('$eight', '$e', '$eights', block(2, 0), [
          ['$uq', 32],
          ['$mq', 32],
        ])}
        local.get $u local.set $uq
        local.get $mo local.set $mq
        ${fourBlocks.map((o4) => block(1, o4)).join('')}
        local.get $vq i32.const ${4 * px} i32.add local.set $vq
        local.get $mo i32.const ${4 * row} i32.add local.set $mo`;
  const plane = `
      local.get $v local.set $vq
      local.get $m local.set $mo
      ${countedLoop('$quad', '$q', '$quads', quad)}
      ${get('$v', '$vPlane')} i32.add local.set $v
      ${get('$m', '$mPlane')} i32.add local.set $m
      local.get $u i32.const ${ci * row} i32.add local.set $u`;
  return {
    name: 'products',
    text: `
    (param $v i32) (param $u i32) (param $m i32) (param $quads i32) (param $vPlane i32) (param $mPlane i32)
    (local $xi i32) (local $planes i32) (local $q i32) (local $e i32) (local $eights i32) (local $c i32) (local $cis i32)
    (local $vq i32) (local $mq i32) (local $uq i32) (local $vc i32) (local $uc i32) (local $mo i32)
    ${v128Locals([...names('$a', 8), '$w0', '$w1', '$s', '$zero'])}
    i32.const 16 local.set $planes
    i32.const ${eights} local.set $eights
    i32.const ${ci} local.set $cis
    ${countedLoop('$plane', '$xi', '$planes', plane)}
  `,
  };
}

/** The forward functions of one (ci, co) module: filter, input, products, output1x1, output1x2, output2x1, output2x2. */
export function winogradFunctions(shape: WinogradShape): WasmFunction[] {
  return [
    filterPlanesFunction('filter', shape, gTimes, 3, 4),
    inputTransform(shape),
    products(shape),
    ...([1, 2] as const).flatMap((rows) => ([1, 2] as const).map((cols) => outputTransform(shape, rows, cols))),
  ];
}
