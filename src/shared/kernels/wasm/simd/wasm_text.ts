/** Builders of wasm-text loops shared by the SIMD kernels' generators (simd/*.ts, the coordinator's fold). */

export const range = (n: number) => Array.from({ length: n }, (_, i) => i);

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

/** Adds the constant `bytes` to the i32 pointer local `p`. */
export const advanceBy = (p: string, bytes: number) => `local.get ${p} i32.const ${bytes} i32.add local.set ${p}`;

/** Advances each pointer local of `pointers` by one float32x4 vector (16 bytes). */
export const nextVectors = (pointers: readonly string[]) => pointers.map((p) => advanceBy(p, 16)).join(' ');

/**
 * Counted loop (`countedLoop`) over `count` float32x4 vectors: `body` runs with each pointer local of `pointers` at
 * the current vector, then every pointer advances 16 bytes.
 */
export function vectorLoop(label: string, counter: string, count: string, pointers: readonly string[], body: string): string {
  return countedLoop(
    label,
    counter,
    count,
    `
      ${body}
      ${nextVectors(pointers)}`,
  );
}

/** Loads the v128 locals `locals[v]` from 16 * v bytes past the pointer local `p` (a row of float32x4 values). */
export const loadVectors = (p: string, locals: readonly string[]) => locals.map((l, v) => `local.get ${p} v128.load offset=${16 * v} local.set ${l}`).join(' ');

/** Stores the v128 locals `locals[v]` at 16 * v bytes past the pointer local `p`. */
export const storeVectors = (p: string, locals: readonly string[]) =>
  locals.map((l, v) => `local.get ${p} local.get ${l} v128.store offset=${16 * v}`).join(' ');

/**
 * One row of an outer product: splats the f32 at `offset` bytes past the pointer local `p` into the v128 local `s`,
 * then `accs[v] += s * vs[v]` (f32x4.mul then f32x4.add: two roundings, as the scalar loops).
 */
export function splatMulAdd(p: string, offset: number, s: string, accs: readonly string[], vs: readonly string[]): string {
  return `
        local.get ${p} v128.load32_splat offset=${offset} local.set ${s}
        ${accs.map((a, v) => `local.get ${a} local.get ${s} local.get ${vs[v]} f32x4.mul f32x4.add local.set ${a}`).join('\n        ')}`;
}
