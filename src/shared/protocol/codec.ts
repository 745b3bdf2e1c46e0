import { Packr } from 'msgpackr';
import { z } from 'zod';
import { GdpError } from '../errors.js';
import { messageSchema, type Message, type MessageType } from './messages.js';
import { FramePool } from './frame_pool.js';
import { MAX_FRAME_BYTES } from './version.js';

// Plain msgpack (no msgpackr record extension), so any msgpack implementation can read the frames.
const packr = new Packr({ useRecords: false, mapsAsObjects: true });

/**
 * Frames of large tensors come from here (FramePool): up to 256 MiB of free buffers are kept, some 16 buckets of the
 * default 16 MiB, so that a step's frames in flight find buffers again at the next step.
 */
const framePool = new FramePool(256 * 1024 * 1024);

/**
 * Tells the codec that a frame from encodeMessage or encodeFrame is no longer read by anyone (the transport wrote
 * it), so its buffer may serve a later frame. Only the frame's sole holder may call it; other frames are ignored.
 */
export function frameSent(frame: Uint8Array): void {
  framePool.give(frame);
}

function describe(err: z.ZodError): string {
  return err.issues
    .slice(0, 5)
    .map((i) => `${i.path.length ? i.path.join('.') : '(message)'}: ${i.message}`)
    .join('; ');
}

/** Encodes a message into one frame; refuses frames over the limit (a sender bug: big data goes in buckets). */
export function encodeMessage(msg: Message): Uint8Array {
  return encodeFrame(msg);
}

/**
 * A message encoded once, to be sent as the same bytes to several peers (a step's averaged buckets to every
 * replica): one encoding and one copy of the tensor bytes whatever the number of receivers. The frame is never
 * written to while sends of it are under way; once the encoder is `done` with it and every send ended, a large
 * frame's buffer is reused (frame_pool.ts).
 */
export class EncodedMessage {
  /** Sends under way, plus one for the encoder until `done`. */
  private holds = 1;

  constructor(
    readonly type: MessageType,
    readonly frame: Uint8Array,
  ) {}

  /** A send of the frame begins; call what it returns when the transport no longer reads the frame. */
  sending(): () => void {
    this.holds++;
    let ended = false;
    return () => {
      if (!ended) {
        ended = true;
        this.release();
      }
    };
  }

  /** The encoder sends it no more (call once). */
  done(): void {
    this.release();
  }

  private release(): void {
    if (--this.holds === 0) framePool.give(this.frame);
  }
}

/** Encodes `msg` once for several receivers (EncodedMessage); throws FRAME_TOO_LARGE as encodeMessage does. */
export function encodeOnce(msg: Message): EncodedMessage {
  return new EncodedMessage(msg.type, encodeFrame(msg));
}

/**
 * Encodes any message of a gdp protocol (the coordinator's, the ring's) into one frame; refuses frames over
 * MAX_FRAME_BYTES with FRAME_TOO_LARGE. A message carrying a tensor of LARGE_TENSOR_BYTES or more at its top level
 * (a bucket, a ring chunk) is written by packWithTensors: the same bytes, with the tensor copied once into a frame of
 * exactly its size, in a buffer of the frame pool (given back with frameSent once it was sent).
 */
export function encodeFrame(msg: { type: string }): Uint8Array {
  const frame = hasLargeTensor(msg) ? packWithTensors(msg) : packr.pack(msg);
  if (frame.byteLength > MAX_FRAME_BYTES) {
    throw new GdpError('FRAME_TOO_LARGE', `'${msg.type}' message is ${frame.byteLength} bytes, over the ${MAX_FRAME_BYTES}-byte frame limit`);
  }
  return frame;
}

/**
 * Byte arrays from this size on are copied straight into a frame of exactly the message's size. msgpackr grows its output buffer by
 * doubling and copies the unused tail of the old one as well, so a 16 MiB bucket cost a 32 MiB allocation and two
 * 16 MiB copies (the profile of the exchange bench: a quarter of the coordinator's busy time).
 */
const LARGE_TENSOR_BYTES = 64 * 1024;

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

function hasLargeTensor(msg: object): boolean {
  for (const v of Object.values(msg)) if (isPlainObject(v) && v.data instanceof Uint8Array && v.data.byteLength >= LARGE_TENSOR_BYTES) return true;
  return false;
}

/** msgpack headers as msgpackr writes them: objects always as map 16 (or map 32), byte arrays as bin 8/16/32. */
function mapHeader(n: number): Uint8Array {
  return n < 0x10000 ? Uint8Array.of(0xde, n >> 8, n & 0xff) : Uint8Array.of(0xdf, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}
function binHeader(n: number): Uint8Array {
  if (n < 0x100) return Uint8Array.of(0xc4, n);
  if (n < 0x10000) return Uint8Array.of(0xc5, n >> 8, n & 0xff);
  return Uint8Array.of(0xc6, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

/** The msgpack parts of a map, its byte-array values (at most one level down) kept as they are, not copied. */
function mapParts(obj: Record<string, unknown>, depth: number, out: Uint8Array[]): void {
  const keys = Object.keys(obj);
  out.push(mapHeader(keys.length));
  for (const k of keys) {
    const v = obj[k];
    out.push(packr.pack(k));
    if (v instanceof Uint8Array) out.push(binHeader(v.byteLength), v);
    else if (depth > 0 && isPlainObject(v)) mapParts(v, depth - 1, out);
    else out.push(packr.pack(v));
  }
}

/** The frame packr.pack(msg) would give, assembled from its parts in a frame-pool buffer (one copy of each part). */
function packWithTensors(msg: object): Uint8Array {
  const parts: Uint8Array[] = [];
  mapParts(msg as Record<string, unknown>, 1, parts);
  let size = 0;
  for (const p of parts) size += p.byteLength;
  const frame = framePool.take(size);
  let at = 0;
  for (const p of parts) {
    frame.set(p, at);
    at += p.byteLength;
  }
  return frame;
}

/** Decodes and validates one frame. Every failure is a GdpError('BAD_MESSAGE') saying what is wrong. */
export function decodeMessage(frame: Uint8Array): Message {
  return decodeFrame(messageSchema, frame);
}

/**
 * Decodes one frame and validates it against `schema` (a protocol's message union: each protocol accepts its own
 * messages only). Every failure is a GdpError('BAD_MESSAGE') saying what is wrong.
 */
export function decodeFrame<T>(schema: z.ZodType<T>, frame: Uint8Array): T {
  if (frame.byteLength > MAX_FRAME_BYTES) throw new GdpError('BAD_MESSAGE', `frame of ${frame.byteLength} bytes is over the limit`);
  let raw: unknown;
  try {
    raw = packr.unpack(frame);
  } catch (err) {
    throw new GdpError('BAD_MESSAGE', `frame of ${frame.byteLength} bytes is not msgpack: ${(err as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new GdpError('BAD_MESSAGE', 'frame is not a msgpack map');
  const r = schema.safeParse(raw);
  if (!r.success) {
    // The type is the sender's text: shortened and printable before it reaches a log.
    const type = String((raw as { type?: unknown }).type)
      .slice(0, 40)
      .replace(/[^\x20-\x7e]/g, '?');
    throw new GdpError('BAD_MESSAGE', `invalid '${type}' message: ${describe(r.error)}`);
  }
  return r.data;
}
