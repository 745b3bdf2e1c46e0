import { GdpError } from '../errors.js';
import { frameSent } from '../protocol/codec.js';
import { firstNonFinite, floatsIntoArray, toWire, type WireTensor } from '../protocol/tensor.js';
import type { Transport } from '../protocol/transport.js';
import { MAX_FRAME_BYTES } from '../protocol/version.js';
import { asGdpError } from '../protocol/peer.js';
import { foldInPlace } from './ring_fold.js';
import { decodeRingMessage, encodeRingMessage, type RingMessageOf } from './ring_messages.js';
import { mod, receiveSchedule, segmentPieces, segmentRange, sentSegment, type RingPhase, type RingSlot } from './ring_schedule.js';

/**
 * A rank's two links in the ring, each a frame transport (ws between workers, or an in-memory pair in tests).
 * Chunks flow from a rank to the next one; `ring_ready` messages flow back.
 */
export interface RingLinks {
  /** To rank + 1: this rank sends chunks on it and receives its successor's `ring_ready`s. */
  next: Transport;
  /** From rank - 1: this rank receives chunks on it and sends `ring_ready`s. */
  prev: Transport;
}

export interface RingOptions {
  /** This rank, 0 <= rank < size: its place in the ring, which fixes the summation order. */
  rank: number;
  /** Ranks in the ring. */
  size: number;
  /**
   * Float32 elements per chunk frame at most (a segment travels in pieces of this size: pipelining); the ring cuts
   * pieces of RING_PIECE_ELEMS at most whatever this says.
   */
  bucketElems: number;
  /** An all-reduce not finished this long after it started fails with PEER_TIMEOUT (a stalled or lost peer). */
  timeoutMs: number;
}

/**
 * The largest piece, 1 MiB of float32 whatever the bucket size. A rank forwards a piece only once all of it arrived
 * (ws delivers whole frames) and was added, so a large piece idles the next link meanwhile, at every step: with
 * 16 MiB buckets a ResNet-50 segment at 8 ranks (12.8 MB) was one piece, and its link waited for each step's
 * whole receive, fold and encode. Small pieces keep every link busy, at some 75 frames per rank per all-reduce at
 * ResNet-50 size and 4 ranks.
 */
const RING_PIECE_ELEMS = 256 * 1024;

/** A chunk frame's bytes besides its values, at most (msgpack keys, op, step; the codec's framing). */
const CHUNK_OVERHEAD_BYTES = 1024;

interface Running {
  op: number;
  values: Float32Array;
  count: number;
  /** What the predecessor sends, in order; `received` of them have arrived. */
  schedule: RingSlot[];
  received: number;
  /** Pieces of `values` to send once the successor is ready, in order; `sent` of them are gone. */
  outbox: { phase: RingPhase; step: number; piece: number; range: [number, number] }[];
  sent: number;
  ready: boolean;
  timer?: NodeJS.Timeout;
  resolve: (v: Float32Array) => void;
  reject: (e: GdpError) => void;
}

/**
 * One rank's side of a ring all-reduce (reduce-scatter, then all-gather; ring_schedule.ts) over its two links.
 * `allreduce` turns each rank's `values` (a gradient SUM over its shard, the same length on every rank) into the
 * average (sum over ranks) / count, in place, with the same bits on every rank:
 *
 * - Summation order: segment s is summed as ((g_s + g_{s+1}) + g_{s+2}) + ... + g_{s+size-1} (ranks mod size), each
 *   addition rounded to float32, then divided once by `count` by its owner (rank s - 1) and rounded to float32:
 *   out = fround(fround(acc + g_last) / count). The order depends on (size, rank order) only, never on timing;
 *   the tests' reference `ringAverage` computes the same bits on one process.
 * - The all-gather copies the owners' results, so every rank ends with identical bits.
 * - Flow control: a rank sends chunks of all-reduce `op` only after its successor said `ring_ready` for that op,
 *   so nothing is buffered for an all-reduce not yet started; sends are views of `values` (the codec's encoding is
 *   the one copy), received pieces are added or copied straight into `values`.
 *
 * Every frame is checked: message type for its link, op id, phase, step and piece against the schedule, dtype,
 * length, finite values (of every sum too, which covers this rank's own values); the successor's element count and
 * sample count against ours. Any failure (a bad frame, a link closed, the timeout) fails the running all-reduce and
 * breaks the ring for good: both links are closed, so the neighbours fail at once too, and every later call rejects
 * with the same code. The caller re-forms the ring and redoes the step.
 *
 * A rank may succeed while another fails (it had every piece it needed before the failure reached it; its result
 * is right): a step is complete only when every rank's all-reduce succeeded, which the coordinator collects before
 * it commits the step. For the same reason close a ring only once every rank has finished: a rank's last chunks may
 * still sit in its socket buffer when its own all-reduce resolves.
 *
 * Error codes: BAD_MESSAGE (a frame that is not a ring message), PROTOCOL (a message out of place: wrong link, op,
 * phase, step or piece), BAD_BUCKET (wrong dtype or length), NON_FINITE, BAD_LAYOUT / BAD_ANSWER (the successor's
 * vector length / sample count differs), WORKER_LOST (a link closed), PEER_TIMEOUT, INTERNAL (caller misuse: a bug).
 */
export class RingAllReduce {
  private running?: Running;
  private lastOp = -1;
  /** The latest op the successor announced ready for (-1: none). */
  private successorReady = -1;
  private successorElems = 0;
  private successorCount = 0;
  private broken?: GdpError;
  /** Received values whose bytes are not 4-aligned in the decoded frame are copied here to be added. */
  private scratch?: Float32Array;

  constructor(
    private readonly links: RingLinks | null,
    readonly opts: RingOptions,
  ) {
    const { rank, size, bucketElems, timeoutMs } = opts;
    if (!Number.isInteger(size) || size < 1 || !Number.isInteger(rank) || rank < 0 || rank >= size) {
      throw new GdpError('INTERNAL', `ring rank ${rank} of ${size}: need integers 0 <= rank < size`);
    }
    if (!Number.isInteger(bucketElems) || bucketElems < 1 || bucketElems * 4 + CHUNK_OVERHEAD_BYTES > MAX_FRAME_BYTES) {
      throw new GdpError('INTERNAL', `ring bucketElems ${bucketElems}: need 1 to ${Math.floor((MAX_FRAME_BYTES - CHUNK_OVERHEAD_BYTES) / 4)}`);
    }
    if (!(timeoutMs > 0)) throw new GdpError('INTERNAL', `ring timeoutMs ${timeoutMs}: need a positive number`);
    if (size > 1 !== (links !== null)) throw new GdpError('INTERNAL', `a ring of ${size} needs ${size > 1 ? 'two links' : 'no links'}`);
    if (links) {
      links.next.onFrame((f) => this.guard(() => this.fromNext(f)));
      links.prev.onFrame((f) => this.guard(() => this.fromPrev(f)));
      links.next.onClose((reason, err) =>
        this.fail(err ?? new GdpError('WORKER_LOST', `${this.name}: the link to rank ${mod(rank + 1, size)} (${links.next.remote}) closed: ${reason}`)),
      );
      links.prev.onClose((reason, err) =>
        this.fail(err ?? new GdpError('WORKER_LOST', `${this.name}: the link from rank ${mod(rank - 1, size)} (${links.prev.remote}) closed: ${reason}`)),
      );
    }
  }

  /** Float32 elements per piece at most (RING_PIECE_ELEMS). */
  private get pieceElems(): number {
    return Math.min(this.opts.bucketElems, RING_PIECE_ELEMS);
  }

  private get name(): string {
    return `ring rank ${this.opts.rank} of ${this.opts.size}`;
  }

  /** The error that broke the ring, if any: a broken ring refuses every further all-reduce. */
  get failure(): GdpError | undefined {
    return this.broken;
  }

  /**
   * Replaces `values` (float32, the same length on every rank) by (sum over ranks of values) / count, in place, and
   * resolves with it; every rank gets identical bits. `op` identifies this all-reduce (e.g. the step's request
   * seq): the same on every rank, strictly increasing from one call to the next. `count` (the samples of the whole
   * step) must be the same on every rank. One all-reduce at a time; `values` must not be touched until it settles.
   * On rejection (the codes in the class comment) `values` holds partial sums: redo the step.
   */
  allreduce(op: number, values: Float32Array, count: number): Promise<Float32Array> {
    if (this.broken) return Promise.reject(new GdpError(this.broken.code, `${this.name} is broken (re-form the ring): ${this.broken.message}`));
    if (this.running) return Promise.reject(new GdpError('INTERNAL', `${this.name}: all-reduce ${op} started while ${this.running.op} runs`));
    if (!Number.isSafeInteger(op) || op <= this.lastOp) {
      return Promise.reject(new GdpError('INTERNAL', `${this.name}: all-reduce id ${op} must be an integer above the last one (${this.lastOp})`));
    }
    if (!(count > 0) || !Number.isFinite(count)) return Promise.reject(new GdpError('INTERNAL', `${this.name}: sample count ${count} must be positive`));
    this.lastOp = op;
    // `values` themselves are not scanned here (a full pass over a 100 MB gradient): every sum this rank makes is
    // checked after the addition, and its segment sent raw is checked by the successor's sum.
    const { rank, size } = this.opts;
    const pieceElems = this.pieceElems;
    if (size === 1) {
      for (let i = 0; i < values.length; i++) values[i] = values[i] / count;
      return Promise.resolve(values);
    }
    return new Promise<Float32Array>((resolve, reject) => {
      const first = segmentRange(values.length, size, sentSegment('reduce_scatter', rank, 0, size));
      const run: Running = {
        op,
        values,
        count,
        schedule: receiveSchedule(values.length, size, rank, pieceElems),
        received: 0,
        outbox: segmentPieces(first, pieceElems).map((range, piece) => ({ phase: 'reduce_scatter', step: 0, piece, range })),
        sent: 0,
        ready: false,
        resolve,
        reject,
      };
      this.running = run;
      run.timer = setTimeout(
        () => this.fail(new GdpError('PEER_TIMEOUT', `${this.name}: all-reduce ${op} not done after ${this.opts.timeoutMs} ms (a peer stalled)`)),
        this.opts.timeoutMs,
      );
      this.guard(() => {
        this.links!.prev.send(encodeRingMessage({ type: 'ring_ready', op, elems: values.length, count }));
        if (this.successorReady > op)
          throw new GdpError('PROTOCOL', `${this.name}: the successor is at all-reduce ${this.successorReady}, this rank starts ${op}`);
        if (this.successorReady === op) this.successorStarted(run);
        this.progress(run);
      });
    });
  }

  /** Closes both links; a running all-reduce fails with WORKER_LOST. */
  close(reason = 'ring closed'): void {
    this.fail(new GdpError('WORKER_LOST', `${this.name}: ${reason}`));
  }

  private guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.fail(asGdpError(err));
    }
  }

  /** `ring_ready` from the successor, the only message that link carries this way. */
  private fromNext(frame: Uint8Array): void {
    if (this.broken) return;
    const m = decodeRingMessage(frame);
    if (m.type !== 'ring_ready') throw new GdpError('PROTOCOL', `${this.name}: '${m.type}' from the successor, expected ring_ready`);
    const run = this.running;
    if (m.op <= this.successorReady) throw new GdpError('PROTOCOL', `${this.name}: ring_ready for all-reduce ${m.op} after ${this.successorReady}`);
    // A successor ahead of us may only be at the op after ours once it has taken ours (it cannot finish ours alone).
    if (run && !run.ready && m.op !== run.op)
      throw new GdpError('PROTOCOL', `${this.name}: the successor is ready for all-reduce ${m.op}, this rank runs ${run.op}`);
    this.successorReady = m.op;
    this.successorElems = m.elems;
    this.successorCount = m.count;
    if (run?.op === m.op) {
      this.successorStarted(run);
      this.progress(run);
    }
  }

  private successorStarted(run: Running): void {
    if (this.successorElems !== run.values.length) {
      throw new GdpError('BAD_LAYOUT', `${this.name}: all-reduce ${run.op} over ${run.values.length} values here, ${this.successorElems} on the successor`);
    }
    if (this.successorCount !== run.count) {
      throw new GdpError('BAD_ANSWER', `${this.name}: all-reduce ${run.op} averages over ${run.count} samples here, ${this.successorCount} on the successor`);
    }
    run.ready = true;
  }

  /** Chunks from the predecessor, the only message that link carries this way. */
  private fromPrev(frame: Uint8Array): void {
    if (this.broken) return;
    const m = decodeRingMessage(frame);
    if (m.type !== 'ring_chunk') throw new GdpError('PROTOCOL', `${this.name}: '${m.type}' from the predecessor, expected ring_chunk`);
    const run = this.running;
    if (!run || m.op !== run.op) throw new GdpError('PROTOCOL', `${this.name}: a chunk of all-reduce ${m.op}, ${run ? `running ${run.op}` : 'none running'}`);
    const slot = run.schedule[run.received];
    if (!slot) throw new GdpError('PROTOCOL', `${this.name}: all-reduce ${m.op}: a chunk after all ${run.schedule.length} arrived`);
    if (m.phase !== slot.phase || m.step !== slot.step || m.piece !== slot.piece) {
      throw new GdpError(
        'PROTOCOL',
        `${this.name}: all-reduce ${m.op}: got ${m.phase} step ${m.step} piece ${m.piece}, expected ${slot.phase} step ${slot.step} piece ${slot.piece}`,
      );
    }
    this.take(run, slot, m);
    run.received++;
    this.progress(run);
  }

  /** Adds (reduce-scatter) or copies (all-gather) one received piece into place and queues what it lets us send. */
  private take(run: Running, slot: RingSlot, m: RingMessageOf<'ring_chunk'>): void {
    const [start, end] = slot.range;
    const what = `${this.name}: all-reduce ${run.op} ${slot.phase} step ${slot.step} piece ${slot.piece}`;
    if (m.data.dtype !== 'float32') throw new GdpError('BAD_BUCKET', `${what} is ${m.data.dtype}, expected float32`);
    const n = m.data.shape.reduce((a, b) => a * b, 1);
    if (n !== end - start) throw new GdpError('BAD_BUCKET', `${what} has ${n} values, the schedule expects ${end - start}`);
    const last = this.opts.size - 2;
    if (slot.phase === 'all_gather') {
      floatsIntoArray(m.data, 'float32', run.values, start, what);
      checkFinite(run.values.subarray(start, end), `${what} holds`);
      if (slot.step < last) run.outbox.push({ phase: 'all_gather', step: slot.step + 1, piece: slot.piece, range: slot.range });
      return;
    }
    // The received partial sum plus our term (float addition commutes, so the operand order is moot); the owner
    // then divides once. A non-finite term (received or ours) or an overflow shows in the fold's probe.
    const owner = slot.step === last;
    const probe = foldInPlace(run.values, start, this.floatsOf(m.data, n), owner ? run.count : 1);
    if (probe !== 0) checkFinite(run.values.subarray(start, end), `${what}: ${owner ? 'the average' : "the sum with this rank's values"} holds`);
    run.outbox.push(owner ? { phase: 'all_gather', step: 0, piece: slot.piece, range: slot.range } : { ...slot, step: slot.step + 1 });
  }

  /** The wire values as a Float32Array: a view when aligned, else a copy in the scratch buffer. */
  private floatsOf(t: WireTensor, n: number): Float32Array {
    if (t.data.byteOffset % 4 === 0) return new Float32Array(t.data.buffer, t.data.byteOffset, n);
    if (!this.scratch || this.scratch.length < n) this.scratch = new Float32Array(this.pieceElems);
    const out = this.scratch.subarray(0, n);
    new Uint8Array(out.buffer, out.byteOffset, n * 4).set(t.data);
    return out;
  }

  /** Sends what the successor may take, and settles the all-reduce once everything was received and sent. */
  private progress(run: Running): void {
    if (this.running !== run) return;
    if (run.ready) {
      for (; run.sent < run.outbox.length; run.sent++) {
        const { phase, step, piece, range } = run.outbox[run.sent];
        const frame = encodeRingMessage({ type: 'ring_chunk', op: run.op, phase, step, piece, data: toWire(run.values.subarray(range[0], range[1])) });
        // Once written, the frame's buffer serves a later chunk (frame_pool.ts): the frames were never given back, so
        // every chunk took a fresh buffer (page faults, and external memory that brings V8's major GCs sooner).
        this.links!.next.send(frame, () => frameSent(frame));
      }
      run.outbox.length = 0;
      run.sent = 0;
    }
    if (run.ready && run.received === run.schedule.length) {
      clearTimeout(run.timer);
      this.running = undefined;
      run.resolve(run.values);
    }
  }

  private fail(err: GdpError): void {
    if (this.broken) return;
    this.broken = err;
    const run = this.running;
    this.running = undefined;
    if (run) {
      clearTimeout(run.timer);
      run.reject(err);
    }
    // Closing both links makes both neighbours fail at once, and so on around the ring: no rank waits for its timeout.
    const reason = `${err.code}: ${err.message}`;
    this.links?.next.close(reason);
    this.links?.prev.close(reason);
  }
}

/**
 * NON_FINITE if `v` holds a NaN or an infinity. x * 0 is NaN exactly for non-finite x; four independent sums
 * keep the pass at memory speed (one sum is a chain of dependent additions, several times slower on 100 MB).
 */
function checkFinite(v: Float32Array, what: string): void {
  let p0 = 0;
  let p1 = 0;
  let p2 = 0;
  let p3 = 0;
  const n4 = v.length - (v.length % 4);
  for (let i = 0; i < n4; i += 4) {
    p0 += v[i] * 0;
    p1 += v[i + 1] * 0;
    p2 += v[i + 2] * 0;
    p3 += v[i + 3] * 0;
  }
  for (let i = n4; i < v.length; i++) p0 += v[i] * 0;
  if (p0 + p1 + p2 + p3 === 0) return;
  const bad = firstNonFinite(v);
  throw new GdpError('NON_FINITE', `${what} ${v[bad]} at element ${bad} of the piece`);
}
