import { Packr } from 'msgpackr';
import { z } from 'zod';
import { GdpError } from '../errors.js';
import { messageSchema, type Message } from './messages.js';
import { MAX_FRAME_BYTES } from './version.js';

// Plain msgpack (no msgpackr record extension), so any msgpack implementation can read the frames.
const packr = new Packr({ useRecords: false, mapsAsObjects: true });

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
 * Encodes any message of a gdp protocol (the coordinator's, the ring's) into one frame; refuses frames over
 * MAX_FRAME_BYTES with FRAME_TOO_LARGE.
 */
export function encodeFrame(msg: { type: string }): Uint8Array {
  const frame = packr.pack(msg);
  if (frame.byteLength > MAX_FRAME_BYTES) {
    throw new GdpError('FRAME_TOO_LARGE', `'${msg.type}' message is ${frame.byteLength} bytes, over the ${MAX_FRAME_BYTES}-byte frame limit`);
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
