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
