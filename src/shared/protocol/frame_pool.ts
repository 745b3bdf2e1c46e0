/**
 * Buffers for large frames (gradient buckets), reused once every transport a frame was sent on has written it.
 * A fresh 16 MiB buffer costs its page faults on first write and external-memory GCs (a memcpy into a fresh buffer
 * took 3-4x the CPU time of one into a reused buffer on the 2-core bench machine), and a step sends one per bucket.
 *
 * A frame goes back with `give` only when nothing reads it any more (Transport.send's `sent` callback); a frame
 * never given back is simply collected. Frames sent to several peers are counted (EncodedMessage, codec.ts).
 */
export class FramePool {
  /** Free buffers; each was allocated with a capacity that is a multiple of GRAIN. */
  private readonly free: ArrayBuffer[] = [];
  private freeBytes = 0;
  /** Buffers handed out and not given back: only these are taken back, each once. */
  private readonly out = new WeakSet<ArrayBuffer>();

  /** Allocation granularity: frames of one bucket size differ by a few header bytes and share a size class. */
  static readonly GRAIN = 64 * 1024;

  constructor(
    /** Free buffers kept at most (bytes); beyond, a buffer given back is left to the garbage collector. */
    readonly maxFreeBytes: number,
  ) {}

  /** A Buffer of exactly `size` bytes at offset 0 of its own memory: a free buffer of its size class, or a new one. */
  take(size: number): Buffer {
    const capacity = Math.ceil(Math.max(size, 1) / FramePool.GRAIN) * FramePool.GRAIN;
    const i = this.free.findIndex((b) => b.byteLength === capacity);
    let memory: ArrayBuffer;
    if (i >= 0) {
      memory = this.free.splice(i, 1)[0];
      this.freeBytes -= capacity;
    } else {
      memory = Buffer.allocUnsafeSlow(capacity).buffer as ArrayBuffer;
    }
    this.out.add(memory);
    return Buffer.from(memory, 0, size);
  }

  /**
   * Takes back a frame from `take` that nothing reads any more; anything else (another allocation, a frame already
   * given back) is ignored, so a frame can never be handed out twice.
   */
  give(frame: Uint8Array): void {
    const memory = frame.buffer as ArrayBuffer;
    if (frame.byteOffset !== 0 || !this.out.has(memory)) return;
    this.out.delete(memory);
    if (this.freeBytes + memory.byteLength > this.maxFreeBytes) return;
    this.free.push(memory);
    this.freeBytes += memory.byteLength;
  }

  /** Bytes held in free buffers. */
  get held(): number {
    return this.freeBytes;
  }
}
