import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { GdpError } from '../errors.js';
import { findDuplicateKey } from './json_keys.js';

/** A float32 tensor as stored in a file: row-major values and shape. */
export interface HostTensor {
  shape: number[];
  data: Float32Array;
}

/** A tensor of a non-float dtype (integers, BOOL, C64), kept as its little-endian bytes: gdp's models hold none. */
export interface RawTensor {
  dtype: string;
  shape: number[];
  /** A view of the file's bytes, `count x itemSize` long. */
  bytes: Uint8Array;
}

export interface SafetensorsFile {
  /** Every floating-point tensor (F64, F32, F16, BF16, F8_*), converted to float32. */
  tensors: Map<string, HostTensor>;
  /** Every other tensor, unconverted: the loader ignores known ones by name (e.g. BN's `num_batches_tracked`). */
  other: Map<string, RawTensor>;
  metadata: Record<string, string>;
}

/** The reference implementation's limit on the JSON header (a guard against huge allocations). */
export const MAX_HEADER_BYTES = 100_000_000;

/** A minifloat's bit layout; `ieee`: the all-ones exponent is Inf/NaN (else only all-ones is NaN, as in e4m3fn). */
interface MiniFloat {
  exp: number;
  mant: number;
  bias: number;
  ieee: boolean;
}

function miniToF32(bits: number, f: MiniFloat): number {
  const sign = bits >> (f.exp + f.mant) ? -1 : 1;
  const e = (bits >> f.mant) & ((1 << f.exp) - 1);
  const m = bits & ((1 << f.mant) - 1);
  const eMax = (1 << f.exp) - 1;
  if (e === eMax && f.ieee) return m ? NaN : sign * Infinity;
  if (e === eMax && !f.ieee && m === (1 << f.mant) - 1) return NaN;
  if (e === 0) return sign * m * 2 ** (1 - f.bias - f.mant);
  return sign * (1 + m / 2 ** f.mant) * 2 ** (e - f.bias);
}

const F16: MiniFloat = { exp: 5, mant: 10, bias: 15, ieee: true };
const F8_E4M3: MiniFloat = { exp: 4, mant: 3, bias: 7, ieee: false };
const F8_E5M2: MiniFloat = { exp: 5, mant: 2, bias: 15, ieee: true };

type Reader = (dv: DataView, i: number) => number;

/**
 * Every dtype PyTorch's safetensors writer stores (`safetensors.torch`), with its item size in bytes and, for the
 * floating-point ones, how an item becomes float32 (F64 rounds to nearest; F8_E8M0 is a power-of-two scale).
 */
const DTYPES: Record<string, { size: number; read?: Reader }> = {
  F64: { size: 8, read: (dv, i) => dv.getFloat64(i * 8, true) },
  F32: { size: 4, read: (dv, i) => dv.getFloat32(i * 4, true) },
  F16: { size: 2, read: (dv, i) => miniToF32(dv.getUint16(i * 2, true), F16) },
  BF16: { size: 2, read: (dv, i) => new Float32Array(new Uint32Array([dv.getUint16(i * 2, true) << 16]).buffer)[0] },
  F8_E4M3: { size: 1, read: (dv, i) => miniToF32(dv.getUint8(i), F8_E4M3) },
  F8_E5M2: { size: 1, read: (dv, i) => miniToF32(dv.getUint8(i), F8_E5M2) },
  F8_E8M0: { size: 1, read: (dv, i) => (dv.getUint8(i) === 255 ? NaN : 2 ** (dv.getUint8(i) - 127)) },
  I64: { size: 8 },
  I32: { size: 4 },
  I16: { size: 2 },
  I8: { size: 1 },
  U64: { size: 8 },
  U32: { size: 4 },
  U16: { size: 2 },
  U8: { size: 1 },
  BOOL: { size: 1 },
  C64: { size: 8 },
};

interface Entry {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

function checkEntry(name: string, raw: unknown, bad: (m: string) => GdpError): Entry {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad(`tensor '${name}': its header entry is not an object`);
  const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  const dtype = String(e.dtype);
  if (typeof e.dtype !== 'string' || !Object.hasOwn(DTYPES, dtype)) {
    throw bad(
      `tensor '${name}': unknown dtype ${JSON.stringify(e.dtype)} (known: ${Object.keys(DTYPES).join(', ')}; packed sub-byte types such as F4 are not read)`,
    );
  }
  const info = DTYPES[dtype];
  if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0))
    throw bad(`tensor '${name}': shape ${JSON.stringify(e.shape)} is not a list of non-negative integers`);
  const shape = e.shape as number[];
  const off = e.data_offsets;
  if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d) && d >= 0) || off[0] > off[1]) {
    throw bad(`tensor '${name}': data_offsets ${JSON.stringify(off)} must be [begin, end] with 0 <= begin <= end`);
  }
  const bytes = shape.reduce((a, d) => a * d, info.size);
  if (!Number.isSafeInteger(bytes) || off[1] - off[0] !== bytes) {
    throw bad(`tensor '${name}': data_offsets [${off}] hold ${off[1] - off[0]} bytes, but shape [${shape}] of ${dtype} takes ${bytes}`);
  }
  return { name, dtype, shape, begin: off[0], end: off[1] };
}

/** The byte buffer must be covered exactly: tensors in offset order, each starting where the previous ended. */
function checkCoverage(entries: Entry[], dataLen: number, bad: (m: string) => GdpError): void {
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  let prev = '';
  for (const e of sorted) {
    if (e.begin > at) throw bad(`tensor '${e.name}' begins at byte ${e.begin} of the data, ${prev ? `but ${prev} ends at ${at}` : 'not at 0'}: a gap`);
    if (e.begin < at) throw bad(`tensor '${e.name}' [${e.begin}, ${e.end}] overlaps ${prev}, which ends at ${at}`);
    if (e.end > dataLen) throw bad(`tensor '${e.name}' ends at byte ${e.end}, past the ${dataLen} data bytes (truncated?)`);
    at = e.end;
    prev = `tensor '${e.name}'`;
  }
  if (at !== dataLen) throw bad(`the data holds ${dataLen} bytes but the tensors cover ${at}: ${dataLen - at} bytes trailing`);
}

/**
 * The header of a safetensors file of `fileBytes` bytes whose first bytes (at least the header) are `buf`: its
 * length `n`, metadata and tensor entries, checked by parseSafetensors' header rules.
 */
function parseHeader(buf: Uint8Array, fileBytes: number, bad: (m: string) => GdpError): { n: number; metadata: Record<string, string>; entries: Entry[] } {
  if (fileBytes < 8) throw bad(`file is ${fileBytes} bytes, shorter than the 8-byte header length`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n64 = dv.getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_BYTES) || 8 + Number(n64) > fileBytes) {
    // A JSON file (e.g. a TF.js model.json given where a weights file is wanted) reads as a huge header length.
    if (/^\s*[[{]/.test(new TextDecoder().decode(buf.subarray(0, 8)))) {
      throw bad('this is a JSON file, not safetensors (a TF.js model.json? `gdp-model import` reads those)');
    }
    if (n64 > BigInt(MAX_HEADER_BYTES)) throw bad(`header length ${n64} exceeds the format's limit of ${MAX_HEADER_BYTES} bytes`);
    throw bad(`header length ${n64} exceeds the file (${fileBytes} bytes): truncated?`);
  }
  const n = Number(n64);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(8, 8 + n));
  } catch {
    throw bad('header is not valid UTF-8');
  }
  if (!text.startsWith('{')) throw bad(`header must start with '{', starts with ${JSON.stringify(text.slice(0, 8))}`);
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    throw bad(`header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw bad('header is not a JSON object');
  const dup = findDuplicateKey(text);
  if (dup) throw bad(`header has key ${JSON.stringify(dup.key)} twice${dup.path.length ? ` in ${dup.path.join('.')}` : ''}`);

  const metadata: Record<string, string> = {};
  const entries: Entry[] = [];
  for (const [name, raw] of Object.entries(header)) {
    if (name !== '__metadata__') {
      entries.push(checkEntry(name, raw, bad));
      continue;
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad('__metadata__ must be an object of strings');
    for (const [k, v] of Object.entries(raw)) {
      if (typeof v !== 'string') throw bad(`__metadata__.${k} must be a string, got ${JSON.stringify(v)}`);
      metadata[k] = v;
    }
  }
  return { n, metadata, entries };
}

/**
 * The `__metadata__` of a safetensors file of `fileBytes` bytes from its first bytes `head` (at least 8, and the
 * header when its length is within the limit), so that a caller reads the header alone, not the tensors. The header
 * is checked as parseSafetensors checks it; the data is not.
 * @throws GdpError BAD_SAFETENSORS naming `source` and the rule broken.
 */
function parseSafetensorsMetadata(head: Uint8Array, fileBytes: number, source = 'safetensors'): Record<string, string> {
  return parseHeader(head, fileBytes, (msg) => new GdpError('BAD_SAFETENSORS', `${source}: ${msg}`)).metadata;
}

/**
 * The `__metadata__` of safetensors file `path`, reading its header alone: what a file is (a model, a resume point)
 * is known without reading its tensors.
 * @throws GdpError BAD_SAFETENSORS naming `path` and the rule its header breaks; the file system's errors (ENOENT...)
 *   as Node throws them.
 */
export function readSafetensorsMetadata(path: string): Record<string, string> {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const length = Buffer.alloc(8);
    readSync(fd, length, 0, 8, 0);
    const n = size >= 8 ? length.readBigUint64LE(0) : 0n;
    // A length past the limit is refused from the first 8 bytes, without allocating it.
    const head = Buffer.alloc(n > BigInt(MAX_HEADER_BYTES) ? 8 : Math.min(size, 8 + Number(n)));
    readSync(fd, head, 0, head.length, 0);
    return parseSafetensorsMetadata(head, size, path);
  } finally {
    closeSync(fd);
  }
}

/**
 * Parses a safetensors buffer by the format's rules (the `safetensors` README): an 8-byte little-endian header
 * length of at most MAX_HEADER_BYTES; a UTF-8 JSON object header (starting with '{', no key twice at any depth)
 * mapping names to `{dtype, shape, data_offsets}` plus an optional `__metadata__` of string values; offsets
 * [begin, end) relative to the data buffer, `end - begin` = item size x shape product, covering the buffer exactly
 * (no gap, no overlap, nothing trailing). Floating-point tensors come back as float32, the others as raw bytes.
 * @throws GdpError BAD_SAFETENSORS naming `source` and the rule broken.
 */
export function parseSafetensors(buf: Uint8Array, source = 'safetensors'): SafetensorsFile {
  const bad = (msg: string) => new GdpError('BAD_SAFETENSORS', `${source}: ${msg}`);
  const { n, metadata, entries } = parseHeader(buf, buf.byteLength, bad);
  const dataStart = 8 + n;
  checkCoverage(entries, buf.byteLength - dataStart, bad);

  const tensors = new Map<string, HostTensor>();
  const other = new Map<string, RawTensor>();
  for (const e of entries) {
    // A view, not `buf.slice(...).buffer`: a Node Buffer's slice shares (and `.buffer` exposes) the whole pool.
    const bytes = buf.subarray(dataStart + e.begin, dataStart + e.end);
    const read = DTYPES[e.dtype].read;
    if (!read) {
      other.set(e.name, { dtype: e.dtype, shape: e.shape, bytes });
      continue;
    }
    const bdv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const data = new Float32Array(bytes.byteLength / DTYPES[e.dtype].size);
    for (let i = 0; i < data.length; i++) data[i] = read(bdv, i);
    tensors.set(e.name, { shape: e.shape, data });
  }
  return { tensors, other, metadata };
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
