import { z } from 'zod';
import { GdpError } from '../errors.js';
import { Rng, rngStateSchema } from '../rng.js';

/** A BatchSampler's position: the Rng before the current permutation was drawn, whether it was, and the cursor. */
export const samplerStateSchema = z.object({ rng: rngStateSchema, drawn: z.boolean(), cursor: z.number().int().nonnegative() });
export type SamplerState = z.infer<typeof samplerStateSchema>;

/**
 * Global batches as index lists (sample indices 0..size-1, `batchSize` per batch, the last of a permutation
 * shorter) over a seeded permutation that is redrawn whenever it runs out; with `shuffle` false (the paper's
 * `data.shuffle: false`) the permutation is the identity and the Rng is not drawn from. Throws BAD_CONFIG for an
 * empty data set or batch, BAD_STATE for a saved state whose cursor is past its permutation.
 */
export class BatchSampler {
  private order = new Int32Array(0);
  private cursor = 0;
  private readonly rng: Rng;
  /** The Rng's state before `order` was drawn: a permutation is saved as the state that draws it. */
  private drawnFrom?: number[];
  constructor(
    readonly size: number,
    readonly batchSize: number,
    from: number | SamplerState,
    readonly shuffle = true,
  ) {
    if (size < 1 || batchSize < 1) throw new GdpError('BAD_CONFIG', `cannot sample batches of ${batchSize} from ${size} samples`);
    if (typeof from === 'number') this.rng = new Rng(from);
    else {
      this.rng = new Rng(from.rng);
      if (from.drawn) {
        this.draw();
        if (from.cursor > this.order.length) throw new GdpError('BAD_STATE', `sampler cursor ${from.cursor} is past its ${this.order.length} samples`);
        this.cursor = from.cursor;
      }
    }
  }
  private draw(): void {
    this.drawnFrom = this.rng.state();
    this.order = Int32Array.from({ length: this.size }, (_, i) => i);
    if (this.shuffle) this.rng.shuffle(this.order);
    this.cursor = 0;
  }
  next(): Int32Array {
    if (this.cursor >= this.order.length) this.draw();
    const b = this.order.slice(this.cursor, this.cursor + this.batchSize);
    this.cursor += b.length;
    return b;
  }
  /** Starts a fresh permutation: the next `stepsPerEpoch` batches are one epoch. */
  restart(): void {
    this.cursor = this.order.length;
  }
  get stepsPerEpoch(): number {
    return Math.ceil(this.size / this.batchSize);
  }
  state(): SamplerState {
    return this.drawnFrom ? { rng: this.drawnFrom, drawn: true, cursor: this.cursor } : { rng: this.rng.state(), drawn: false, cursor: 0 };
  }
}
