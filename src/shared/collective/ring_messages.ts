import { z } from 'zod';
import { decodeFrame, encodeFrame } from '../protocol/codec.js';
import { wireTensorSchema } from '../protocol/tensor.js';

/**
 * Bumped whenever a ring message changes shape or meaning. Separate from the coordinator's PROTOCOL_VERSION: the
 * two protocols share the codec and transports but no message type, so a ring link refuses coordinator messages
 * and the coordinator's port refuses ring messages (each decodes with its own union). Version 2: pieces of at most
 * RING_PIECE_ELEMS (ring_allreduce.ts), a different schedule for the same buckets.
 */
export const RING_PROTOCOL_VERSION = 2;

const int = z.number().int().nonnegative();

/**
 * The worker-to-worker messages of the ring all-reduce. On a link, the dialing rank k sends `ring_hello` and
 * `ring_ready`s; the listening rank k - 1 answers `ring_accept` and sends `ring_chunk`s.
 */
export const ringMessageSchema = z.discriminatedUnion('type', [
  /** Rank `rank` of the ring `ring` (a formation id given by the coordinator), `size` ranks, dials rank - 1. */
  z.object({ type: z.literal('ring_hello'), protocol: z.number().int(), ring: int, rank: int, size: z.number().int().positive() }),
  /** The listener took the link into ring `ring` as its predecessor's. */
  z.object({ type: z.literal('ring_accept'), ring: int }),
  /**
   * The receiver has started all-reduce `op` over `elems` values averaged over `count` samples: its predecessor may
   * send that op's chunks. No chunk is sent before it, so a receiver never holds chunks of an all-reduce it has not
   * started. `elems` and `count` let the predecessor check that both agree.
   */
  z.object({ type: z.literal('ring_ready'), op: int, elems: int, count: z.number().positive() }),
  /** One piece of all-reduce `op`: its place in the schedule (ring_schedule.ts) and its float32 values. */
  z.object({
    type: z.literal('ring_chunk'),
    op: int,
    phase: z.enum(['reduce_scatter', 'all_gather']),
    step: int,
    piece: int,
    data: wireTensorSchema,
  }),
]);

export type RingMessage = z.infer<typeof ringMessageSchema>;
export type RingMessageOf<T extends RingMessage['type']> = Extract<RingMessage, { type: T }>;

/** One ring message as a frame (FRAME_TOO_LARGE over the frame limit). */
export function encodeRingMessage(msg: RingMessage): Uint8Array {
  return encodeFrame(msg);
}

/** Decodes and validates a frame from a ring link; anything else (a coordinator message too) is BAD_MESSAGE. */
export function decodeRingMessage(frame: Uint8Array): RingMessage {
  return decodeFrame(ringMessageSchema, frame);
}
