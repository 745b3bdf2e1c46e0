/** Bumped whenever a message changes shape or meaning; a worker with another version is refused at hello. */
export const PROTOCOL_VERSION = 4;

const MIB = 1024 * 1024;

/**
 * Largest frame either side accepts (ws maxPayload). Buckets are at most 64 MiB (config dist.bucket_mib) and a
 * bucket frame adds a few hundred bytes of header, so 65 MiB bounds every frame the protocol produces.
 */
export const MAX_FRAME_BYTES = 65 * MIB;

/** Float32 elements per bucket for a config's `dist.bucket_mib`. */
export function bucketElements(bucketMib: number): number {
  return Math.max(1, Math.floor((bucketMib * MIB) / 4));
}
