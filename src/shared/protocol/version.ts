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

/** Buckets a gradient travels in at least, unless they would be smaller than MIN_SPLIT_ELEMS (exchangeBucketElements). */
const MIN_EXCHANGE_BUCKETS = 8;
/** The smallest bucket exchangeBucketElements makes (64 KiB of float32): below it, per-message costs would dominate. */
const MIN_SPLIT_ELEMS = 16 * 1024;

/**
 * Float32 elements per bucket of the star's exchange (the welcome's bucketElems) for a model of `modelElems`
 * parameters: `dist.bucket_mib`'s worth, but at most 1/MIN_EXCHANGE_BUCKETS of the model (never under 64 KiB), so a
 * small model's gradient travels as several buckets too and the exchange pipelines: the coordinator averages and
 * sends bucket k back while bucket k+1 is still arriving (as DDP launches a bucket's all-reduce once it is ready).
 * For ResNet-20 (272,186 values, 1.09 MB) that is 8 buckets instead of 1. float32 bits do not depend on the bucket
 * size (each element is summed alone); float16 buckets carry a scale each, so their rounding does.
 */
export function exchangeBucketElements(bucketMib: number, modelElems: number): number {
  return Math.min(bucketElements(bucketMib), Math.max(MIN_SPLIT_ELEMS, Math.ceil(modelElems / MIN_EXCHANGE_BUCKETS)));
}
