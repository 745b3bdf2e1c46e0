import { z } from 'zod';
import { GdpError } from '../errors.js';
import { decodeFloat16, encodeFloat16, scaleExponent } from './float16.js';

/**
 * A tensor on the wire: raw little-endian bytes with dtype and shape, never a list of numbers (a 98 MiB gradient
 * as msgpack floats would be 5x larger and slow to walk).
 */
export const wireTensorSchema = z
  .object({
    /** float16 only for gradient buckets (dist.grad_dtype), see float16.ts. */
    dtype: z.enum(['float32', 'int32', 'float16']),
    shape: z.array(z.number().int().nonnegative()).max(8),
    data: z.custom<Uint8Array>((v) => v instanceof Uint8Array, 'expected binary data'),
    /** float16: the values are the half-precision numbers times 2^scale. */
    scale: z.number().int().min(-170).max(120).optional(),
  })
  .refine((t) => t.data.byteLength === (t.dtype === 'float16' ? 2 : 4) * t.shape.reduce((a, b) => a * b, 1), {
    message: 'byte length does not match dtype and shape',
  });
export type WireTensor = z.infer<typeof wireTensorSchema>;

export const namedTensorSchema = z.object({ name: z.string().min(1), tensor: wireTensorSchema });
export type NamedTensor = z.infer<typeof namedTensorSchema>;

function bytesOf(a: Float32Array | Int32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

export function toWire(a: Float32Array | Int32Array, shape: readonly number[] = [a.length]): WireTensor {
  return { dtype: a instanceof Float32Array ? 'float32' : 'int32', shape: [...shape], data: bytesOf(a) };
}

/** Copies wire bytes into an aligned array (decoded bytes may sit at any offset of a shared buffer). */
export function float32FromWire(t: WireTensor, what: string): Float32Array {
  if (t.dtype !== 'float32') throw new GdpError('BAD_MESSAGE', `${what}: expected float32, got ${t.dtype}`);
  const out = new Float32Array(t.data.byteLength / 4);
  new Uint8Array(out.buffer).set(t.data);
  return out;
}

export function int32FromWire(t: WireTensor, what: string): Int32Array {
  if (t.dtype !== 'int32') throw new GdpError('BAD_MESSAGE', `${what}: expected int32, got ${t.dtype}`);
  const out = new Int32Array(t.data.byteLength / 4);
  new Uint8Array(out.buffer).set(t.data);
  return out;
}

/**
 * Index of the first NaN or infinity, or -1. x * 0 is NaN exactly for non-finite x, so one summed pass answers
 * the common (all finite) case; only a bad vector is scanned element by element.
 */
export function firstNonFinite(a: Float32Array): number {
  let probe = 0;
  for (let i = 0; i < a.length; i++) probe += a[i] * 0;
  if (probe === 0) return -1;
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return i;
  return -1;
}

/**
 * Writes a float32 or float16 wire tensor's values into `out` at element `at` as float32, with one copy or
 * decoding pass straight into place (whatever the alignment of the bytes in the decoded frame). `dtype` is the
 * one the receiver expects. Returns the number of values.
 */
export function floatsIntoArray(t: WireTensor, dtype: 'float32' | 'float16', out: Float32Array, at: number, what: string): number {
  if (t.dtype !== dtype) throw new GdpError('BAD_MESSAGE', `${what}: expected ${dtype}, got ${t.dtype}`);
  const n = t.data.byteLength / (dtype === 'float16' ? 2 : 4);
  if (at + n > out.length) throw new GdpError('BAD_BUCKET', `${what}: ${n} values do not fit at ${at} of ${out.length}`);
  if (dtype === 'float32') {
    new Uint8Array(out.buffer, out.byteOffset + at * 4, n * 4).set(t.data);
  } else {
    // Odd offsets (possible in a decoded frame) need an aligned copy; a Buffer's slice() would be a view.
    let bits: Uint16Array;
    if (t.data.byteOffset % 2 === 0) {
      bits = new Uint16Array(t.data.buffer, t.data.byteOffset, n);
    } else {
      bits = new Uint16Array(n);
      new Uint8Array(bits.buffer).set(t.data);
    }
    decodeFloat16(bits, out.subarray(at, at + n), t.scale ?? 0);
  }
  return n;
}

/** A float32 vector as a float16 wire tensor with its bucket scale (a new buffer of half the size). */
export function toWireFloat16(a: Float32Array): WireTensor {
  let maxAbs = 0;
  for (let i = 0; i < a.length; i++) {
    const v = Math.abs(a[i]);
    // NaN makes the bucket's scale 0 and travels as NaN, for the receiver to reject.
    if (!(v <= maxAbs)) maxAbs = Number.isNaN(v) ? Infinity : v;
  }
  const scale = scaleExponent(maxAbs);
  const bits = new Uint16Array(a.length);
  encodeFloat16(a, bits, scale);
  return { dtype: 'float16', shape: [a.length], data: new Uint8Array(bits.buffer), scale };
}

export function assertFinite(a: Float32Array, what: string): void {
  const i = firstNonFinite(a);
  if (i >= 0) throw new GdpError('NON_FINITE', `${what}: value ${a[i]} at element ${i}`);
}

/** Named float32 values with their shape: a NamedTensor decoded. */
export interface NamedArray {
  name: string;
  shape: readonly number[];
  values: Float32Array;
}

/** Decodes named float32 tensors (copies); `what` names them in the BAD_MESSAGE error of a non-float32 one. */
export function namedArraysFromWire(tensors: readonly NamedTensor[], what: string): NamedArray[] {
  return tensors.map(({ name, tensor }) => ({ name, shape: tensor.shape, values: float32FromWire(tensor, `${what} '${name}'`) }));
}

/** Named float32 values as wire tensors (views, no copy). */
export function namedArraysToWire(arrays: readonly NamedArray[]): NamedTensor[] {
  return arrays.map(({ name, shape, values }) => ({ name, tensor: toWire(values, shape) }));
}
