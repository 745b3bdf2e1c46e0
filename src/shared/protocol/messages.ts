import { z } from 'zod';
import { modelUpdateSchema } from './model_update.js';
import { namedTensorSchema, wireTensorSchema } from './tensor.js';

/**
 * Every message of the coordinator <-> worker protocol, defined once. Requests carry a `seq` that the answer
 * echoes. Large float vectors (gradients, parameters, model state) never travel inside a request: they travel as
 * `bucket` messages of bounded size, in index order, with a header message that gives their layout: `welcome` then
 * its `state` buckets, `average` then its `avg` buckets; a worker's `grad` buckets answer `compute` (whose layout
 * the coordinator knows) and are closed by `computed`. A step's averaged buckets stream out while other workers'
 * gradients still arrive, before the step is committed: replicas hold them and apply them only on `apply`.
 */
const seq = z.number().int().nonnegative();
/** Text from the other side that ends up in logs: bounded, no control characters (newlines only where allowed). */
const text = (max: number, lines = false) =>
  z
    .string()
    .max(max)
    .regex(lines ? /^[^\x00-\x09\x0b-\x1f\x7f]*$/ : /^[^\x00-\x1f\x7f]*$/, 'control characters are not allowed');
const code = z.string().regex(/^[A-Za-z0-9_]{1,64}$/, 'an error code is 1-64 letters, digits or underscores');
/** The first 16 hex digits of a SHA-256 (Replica.checksum). */
const checksum = z.string().regex(/^[0-9a-f]{16}$/, 'a checksum is 16 hex digits');
/** Worker ids name workers in logs and refusals. */
export const workerIdSchema = z.string().regex(/^[A-Za-z0-9._:@-]{1,128}$/, 'a worker id is 1-128 letters, digits or ._:@-');
const paramSet = z.enum(['all', 'gates', 'all_but_conv']);
/** What of a shard's result was not finite ('bn_stats': the running statistics its forward pass updated). */
const nonFiniteWhat = z.enum(['loss', 'gradient', 'bn_stats']);
export type NonFiniteWhat = z.infer<typeof nonFiniteWhat>;
/** Loss and accuracy sums over some samples (StepStats); also part of resume points. */
export const stepStatsSchema = z.object({
  lossSum: z.number(),
  correct1: z.number().int().nonnegative(),
  correct5: z.number().int().nonnegative(),
  count: z.number().int().nonnegative(),
});
const stats = stepStatsSchema;
const sgd = z.object({
  lr: z.number().nonnegative(),
  momentum: z.number().min(0).max(1),
  weightDecay: z.number().nonnegative(),
  nesterov: z.boolean(),
  gateL1: z.number().nonnegative().optional(),
  /** Replica.applyGradient's decayFrozen (gbn.tick_decay_frozen). */
  decayFrozen: z.boolean().optional(),
});
/** Names and shapes of a flat vector's parts, in order (a FlatLayout without offsets). */
/** A worker's ring listener as its peers dial it (RingEndpoint.url). */
const peerUrl = z
  .string()
  .max(300)
  .regex(/^wss?:\/\/[A-Za-z0-9.:\[\]-]+:\d{1,5}$/, 'a ring address is ws://HOST:PORT or wss://HOST:PORT');
/**
 * A worker's place in this step's ring all-reduce (src/shared/collective): the formation id (new at every
 * (re-)formation), its rank and the ring's size, its predecessor's address, the all-reduce id (the same on every
 * rank, increasing) and the step's sample count (the divisor of the average).
 */
const ringInfo = z.object({
  ring: z.number().int().nonnegative(),
  rank: z.number().int().nonnegative(),
  size: z.number().int().positive(),
  prev: peerUrl,
  op: z.number().int().nonnegative(),
  count: z.number().int().positive(),
});
const tensorList = z.array(z.object({ name: z.string().min(1), shape: z.array(z.number().int().nonnegative()) }));

export const messageSchema = z.discriminatedUnion('type', [
  // --- handshake (worker speaks first) ---
  z.object({
    type: z.literal('hello'),
    protocol: z.number().int(),
    workerId: workerIdSchema,
    backend: text(200),
    gpu: z.number().int().nonnegative().nullable(),
    host: text(255),
    pid: z.number().int(),
  }),
  /**
   * Accepts a worker. The model is rebuilt from `config` (architecture, seed), `updates` replayed in order, then
   * every slot and momentum buffer overwritten from the `state` buckets that follow (`slots` then `momentum`).
   */
  z.object({
    type: z.literal('welcome'),
    protocol: z.number().int(),
    config: z.record(z.string(), z.unknown()),
    updates: z.array(modelUpdateSchema),
    slots: tensorList,
    momentum: tensorList,
    bucketElems: z.number().int().positive(),
  }),
  z.object({ type: z.literal('refuse'), code, reason: text(10000, true) }),
  /**
   * The worker holds the welcome's state; `checksum` is over every slot (parameters and buffers). `data` describes
   * the dataset it loaded, which must be the coordinator's (dataFingerprint). `ring`: its ring listener's address,
   * when the run's dist.allreduce may use the ring and the worker listens.
   */
  z.object({ type: z.literal('ready'), checksum, data: z.string().max(200), ring: peerUrl.optional() }),
  z.object({ type: z.literal('heartbeat'), t: z.number() }),

  // --- bulk data ---
  z.object({
    type: z.literal('bucket'),
    stream: z.enum(['state', 'grad', 'avg']),
    seq,
    index: z.number().int().nonnegative(),
    data: wireTensorSchema,
  }),

  // --- a data-parallel step ---
  /**
   * Compute the gradient SUM of `set` over these training samples; answer with `grad` buckets then `computed`. With
   * `ring`: all-reduce it with the other ranks instead and keep the average; rank 0 answers with the average in `avg`
   * buckets then `computed`, the others with `computed` alone; a failed ring is answered by `ring_failed`.
   */
  z.object({ type: z.literal('compute'), seq, set: paramSet, indices: wireTensorSchema, seed: z.number().int(), ring: ringInfo.optional() }),
  z.object({ type: z.literal('computed'), seq, stats }),
  /**
   * Answers 'compute' or 'evaluate' instead of its result when the shard's loss sum, gradient sum or (training) the
   * BN running statistics it updated hold NaN or infinity: nothing non-finite is ever sent (no 'grad' buckets
   * precede it).
   */
  z.object({ type: z.literal('non_finite'), seq, what: nonFiniteWhat }),
  /**
   * Answers a request this worker cannot carry out for a reason that would not change on a retry (e.g.
   * BATCH_TOO_LARGE: the shard does not fit its backend's memory). Its state is unchanged; the connection stays open.
   */
  z.object({ type: z.literal('failed'), seq, code, message: text(10000, true) }),
  /**
   * The averaged gradient of `set` for step `seq` (the compute request's number for a worker that computed) follows
   * in `avg` buckets; held until the `apply` of the same number, dropped by any other message (the step is redone).
   */
  z.object({ type: z.literal('average'), seq, set: paramSet }),
  /**
   * Commits step `seq`: apply the averaged gradient its `avg` buckets brought, with these SGD options; with `held`,
   * apply the average this worker holds from the ring all-reduce of compute request `seq` (no 'average' preceded it).
   */
  z.object({ type: z.literal('apply'), seq, set: paramSet, sgd, held: z.boolean().optional() }),
  /** The ring all-reduce of compute request `seq` failed here (a peer lost, a bad frame): the step is redone. */
  z.object({ type: z.literal('ring_failed'), seq, code, message: text(10000, true) }),

  // --- checks, evaluation, BatchNorm statistics, model updates ---
  z.object({ type: z.literal('checksum_request'), seq }),
  z.object({ type: z.literal('checksum'), seq, checksum }),
  /** Eval-mode loss and accuracy over these test samples, in batches of `batchSize`. */
  z.object({ type: z.literal('evaluate'), seq, indices: wireTensorSchema, batchSize: z.number().int().positive() }),
  z.object({ type: z.literal('evaluated'), seq, stats }),
  z.object({ type: z.literal('bn_request'), seq }),
  /** Running statistics and the training samples seen since the last synchronisation (the averaging weight). */
  z.object({ type: z.literal('bn_stats'), seq, samples: z.number().int().nonnegative(), tensors: z.array(namedTensorSchema) }),
  z.object({ type: z.literal('set_buffers'), seq, tensors: z.array(namedTensorSchema) }),
  z.object({ type: z.literal('model_update'), seq, update: modelUpdateSchema }),
  /** Answer to set_buffers and model_update: the full-state checksum after applying. */
  z.object({ type: z.literal('ack'), seq, checksum }),

  // --- ending ---
  z.object({ type: z.literal('error'), code, message: text(10000, true) }),
  z.object({ type: z.literal('shutdown'), reason: text(10000, true) }),
]);

export type Message = z.infer<typeof messageSchema>;
export type MessageType = Message['type'];
export type MessageOf<T extends MessageType> = Extract<Message, { type: T }>;
