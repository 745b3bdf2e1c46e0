import { readFile, writeFile } from 'node:fs/promises';
import { GdpError } from '../errors.js';

/** Parses a shape flag such as "8,3,32,32". */
export function parseShape(text: string, flag = '--shape'): number[] {
  const dims = text.split(',').map((d) => Number(d.trim()));
  if (!dims.length || dims.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new GdpError('BAD_FLAG', `${flag} must be positive integers separated by commas (e.g. 8,3,32,32), got '${text}'`);
  }
  return dims;
}

/** Reads raw float32 little-endian values and checks the byte count against the shape. */
export async function readF32(path: string, shape: readonly number[]): Promise<Float32Array> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch (e) {
    throw new GdpError('FILE_NOT_FOUND', `cannot read input file ${path}: ${(e as Error).message}`);
  }
  const count = shape.reduce((a, b) => a * b, 1);
  if (buf.byteLength !== count * 4) {
    throw new GdpError('BAD_INPUT', `${path} has ${buf.byteLength} bytes but shape [${shape}] of float32 needs ${count * 4}`);
  }
  const out = new Float32Array(count);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let i = 0; i < count; i++) out[i] = dv.getFloat32(i * 4, true);
  return out;
}

export async function writeF32(path: string, data: Float32Array): Promise<void> {
  const out = Buffer.alloc(data.length * 4);
  for (let i = 0; i < data.length; i++) out.writeFloatLE(data[i], i * 4);
  await writeFile(path, out);
}

/** NCHW (PyTorch's layout) to NHWC (gdp's activations). */
export function nchwToNhwc(x: Float32Array, [n, c, h, w]: readonly number[]): Float32Array {
  const out = new Float32Array(x.length);
  for (let b = 0; b < n; b++) for (let ch = 0; ch < c; ch++) for (let i = 0; i < h * w; i++) out[(b * h * w + i) * c + ch] = x[(b * c + ch) * h * w + i];
  return out;
}
