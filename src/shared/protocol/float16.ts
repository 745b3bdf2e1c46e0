/**
 * IEEE half-precision encoding of gradient buckets (`dist.grad_dtype: "float16"`), which halves what a worker
 * uploads. Each bucket carries a power-of-two scale chosen from its largest magnitude, so that gradient sums far
 * beyond half precision's range (65504) or far below it survive with half precision's relative rounding (2^-11)
 * instead of overflowing to infinity or vanishing; a power of two scales exactly.
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Half-precision bits of `v` (float32), rounded to nearest even; NaN and infinities are kept. */
export function toFloat16Bits(v: number): number {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  // Unbiased exponent e: half normals cover e in [-14, 15].
  const e = exp - 127;
  if (e > 15) return sign | 0x7c00;
  if (e >= -14) {
    // Normal: keep 10 mantissa bits, round the 13 dropped ones to nearest even (a carry may bump the exponent).
    let h = ((e + 15) << 10) | (mant >>> 13);
    const rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++;
    return sign | h;
  }
  if (e < -25) return sign;
  // Subnormal: h * 2^-24 with h = significand * 2^(e + 1), the -e - 1 dropped bits rounded to nearest even (a
  // carry to 1024 is the smallest normal, as it should be).
  const full = mant | 0x800000;
  const s = -e - 1;
  let h = full >>> s;
  const rest = full & ((1 << s) - 1);
  const half = 1 << (s - 1);
  if (rest > half || (rest === half && h & 1)) h++;
  return sign | h;
}

/** float32 values of all 65536 half-precision bit patterns. */
let table: Float32Array | undefined;
export function float16Table(): Float32Array {
  if (table) return table;
  table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    table[h] = exp === 0 ? sign * mant * 2 ** -24 : exp === 31 ? (mant ? NaN : sign * Infinity) : sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  return table;
}

/**
 * The scale exponent for a bucket whose largest magnitude is `maxAbs`: values / 2^s land in [2^14, 2^15) at the
 * top, well inside half precision's range. 0 for an all-zero or non-finite bucket (non-finite values then travel
 * as half-precision NaN or infinity, and the receiver rejects them).
 */
export function scaleExponent(maxAbs: number): number {
  if (!(maxAbs > 0) || !Number.isFinite(maxAbs)) return 0;
  return Math.floor(Math.log2(maxAbs)) - 14;
}

let scratch = new Float32Array(0);

/**
 * Encodes `src` divided by 2^scale into half-precision bits in `dst` (same length): toFloat16Bits inlined over
 * the bits of a scaled copy, since a gradient upload encodes every value of every step.
 */
export function encodeFloat16(src: Float32Array, dst: Uint16Array, scale: number): void {
  const n = src.length;
  if (scratch.length < n) scratch = new Float32Array(n);
  const k = 2 ** -scale;
  for (let i = 0; i < n; i++) scratch[i] = src[i] * k;
  const bits = new Uint32Array(scratch.buffer, 0, n);
  for (let i = 0; i < n; i++) {
    const x = bits[i];
    const exp = (x >>> 23) & 0xff;
    if (exp >= 113 && exp <= 142) {
      // Half normal (unbiased exponent -14..15), the common case.
      const sign = (x >>> 16) & 0x8000;
      let h = ((exp - 112) << 10) | ((x >>> 13) & 0x3ff);
      const rest = x & 0x1fff;
      if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++;
      dst[i] = sign | h;
    } else {
      dst[i] = toFloat16Bits(scratch[i]);
    }
  }
}

/** Decodes half-precision bits times 2^scale into `dst` (float32). */
export function decodeFloat16(src: Uint16Array, dst: Float32Array, scale: number): void {
  const t = float16Table();
  const k = 2 ** scale;
  for (let i = 0; i < src.length; i++) dst[i] = t[src[i]] * k;
}
