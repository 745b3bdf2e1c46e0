import { z } from 'zod';
import { GdpError } from '../errors.js';

/**
 * A tensor on the wire: raw little-endian bytes with dtype and shape, never a list of numbers (a 98 MiB gradient
 * as msgpack floats would be 5x larger and slow to walk).
 */
export const wireTensorSchema = z
  .object({
    dtype: z.enum(['float32', 'int32']),
    shape: z.array(z.number().int().nonnegative()).max(8),
    data: z.custom<Uint8Array>((v) => v instanceof Uint8Array, 'expected binary data'),
  })
  .refine((t) => t.data.byteLength === 4 * t.shape.reduce((a, b) => a * b, 1), {
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

/** Index of the first NaN or infinity, or -1. */
export function firstNonFinite(a: Float32Array): number {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return i;
  return -1;
}

export function assertFinite(a: Float32Array, what: string): void {
  const i = firstNonFinite(a);
  if (i >= 0) throw new GdpError('NON_FINITE', `${what}: value ${a[i]} at element ${i}`);
}
