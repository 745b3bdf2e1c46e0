import { GdpError } from '../errors.js';

/** A float32 tensor as stored in a file: row-major values and shape. */
export interface HostTensor {
  shape: number[];
  data: Float32Array;
}

export interface SafetensorsFile {
  tensors: Map<string, HostTensor>;
  metadata: Record<string, string>;
}

const MAX_HEADER = 100 * 1024 * 1024;

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/**
 * Parses a safetensors buffer (8-byte little-endian header length, JSON header, data). F32 is read as is; F16,
 * BF16 and F64 are widened/narrowed to float32. Every offset and size is checked against the buffer.
 */
export function parseSafetensors(buf: Uint8Array, source = 'safetensors'): SafetensorsFile {
  const bad = (msg: string) => new GdpError('BAD_SAFETENSORS', `${source}: ${msg}`);
  if (buf.byteLength < 8) throw bad(`file is ${buf.byteLength} bytes, shorter than the 8-byte header length`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = Number(dv.getBigUint64(0, true));
  if (n > MAX_HEADER || 8 + n > buf.byteLength) throw bad(`header length ${n} exceeds the file (${buf.byteLength} bytes): truncated?`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder().decode(buf.subarray(8, 8 + n)));
  } catch (e) {
    throw bad(`header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw bad('header is not a JSON object');
  const dataStart = 8 + n;
  const dataLen = buf.byteLength - dataStart;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, HostTensor>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null) throw bad('__metadata__ must be an object of strings');
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== 'string') throw bad(`__metadata__.${k} must be a string`);
        metadata[k] = v;
      }
      continue;
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isInteger(d) && d >= 0)) throw bad(`tensor '${name}': bad shape`);
    if (!Array.isArray(e.data_offsets) || e.data_offsets.length !== 2) throw bad(`tensor '${name}': bad data_offsets`);
    const [begin, end] = e.data_offsets as number[];
    const shape = e.shape as number[];
    const count = shape.reduce((a, b) => a * b, 1);
    const itemSize = { F32: 4, F16: 2, BF16: 2, F64: 8 }[String(e.dtype)];
    if (!itemSize) throw bad(`tensor '${name}': unsupported dtype ${String(e.dtype)} (F32, F16, BF16, F64 are read)`);
    if (!Number.isInteger(begin) || !Number.isInteger(end) || begin < 0 || end > dataLen || end - begin !== count * itemSize) {
      throw bad(`tensor '${name}': data_offsets [${begin}, ${end}] do not fit shape [${shape}] of ${e.dtype} in ${dataLen} data bytes (truncated?)`);
    }
    const bytes = buf.slice(dataStart + begin, dataStart + end);
    const bdv = new DataView(bytes.buffer);
    const data = new Float32Array(count);
    for (let i = 0; i < count; i++) {
      switch (e.dtype) {
        case 'F32':
          data[i] = bdv.getFloat32(i * 4, true);
          break;
        case 'F64':
          data[i] = bdv.getFloat64(i * 8, true);
          break;
        case 'F16':
          data[i] = f16ToF32(bdv.getUint16(i * 2, true));
          break;
        default:
          data[i] = new Float32Array(new Uint32Array([bdv.getUint16(i * 2, true) << 16]).buffer)[0];
      }
    }
    tensors.set(name, { shape, data });
  }
  return { tensors, metadata };
}

/** Serialises float32 tensors (in the given order) with string metadata. */
export function serializeSafetensors(tensors: Map<string, HostTensor>, metadata: Record<string, string> = {}): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let off = 0;
  for (const [name, t] of tensors) {
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count !== t.data.length) throw new GdpError('BAD_TENSOR', `tensor '${name}': shape [${t.shape}] does not match ${t.data.length} values`);
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [off, off + count * 4] };
    off += count * 4;
  }
  let json = JSON.stringify(header);
  // The data section is 8-byte aligned, as the reference writer does.
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const hb = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + hb.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
  out.set(hb, 8);
  let p = 8 + hb.length;
  for (const t of tensors.values()) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), p);
    p += t.data.byteLength;
  }
  return out;
}
