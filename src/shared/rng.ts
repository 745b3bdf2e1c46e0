import { z } from 'zod';
import { GdpError } from './errors.js';

/**
 * Seeded PRNG (sfc32) with serialisable state, so that shuffles, augmentation and weight init are reproducible
 * across processes and resumable from a checkpoint.
 */
export class Rng {
  private s: Uint32Array;
  constructor(seed: number | readonly number[]) {
    if (typeof seed === 'number') {
      // splitmix32 spreads a small integer seed over the 128-bit state.
      let z = seed >>> 0;
      const next = () => {
        z = (z + 0x9e3779b9) >>> 0;
        let t = z;
        t = Math.imul(t ^ (t >>> 16), 0x21f0aaad);
        t = Math.imul(t ^ (t >>> 15), 0x735a2d97);
        return (t ^ (t >>> 15)) >>> 0;
      };
      this.s = Uint32Array.of(next(), next(), next(), next());
      for (let i = 0; i < 12; i++) this.nextU32();
    } else {
      if (seed.length !== 4) throw new GdpError('INTERNAL', `an Rng state has 4 words, got ${seed.length} (states are checked by rngStateSchema when read)`);
      this.s = Uint32Array.from(seed);
    }
  }
  state(): number[] {
    return Array.from(this.s);
  }
  nextU32(): number {
    const s = this.s;
    const t = (((s[0] + s[1]) >>> 0) + s[3]) >>> 0;
    s[3] = (s[3] + 1) >>> 0;
    s[0] = s[1] ^ (s[1] >>> 9);
    s[1] = (s[2] + (s[2] << 3)) >>> 0;
    s[2] = ((s[2] << 21) | (s[2] >>> 11)) >>> 0;
    s[2] = (s[2] + t) >>> 0;
    return t;
  }
  /** Uniform in [0, 1). */
  next(): number {
    return this.nextU32() / 4294967296;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  normal(): number {
    const u = 1 - this.next();
    const v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  /** Fisher-Yates shuffle in place. */
  shuffle<T>(a: T[] | Int32Array | Uint32Array): void {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = a[i];
      a[i] = a[j];
      a[j] = t;
    }
  }
}

/** The state of an Rng (`Rng.state()`): four 32-bit words, as resume points store it. */
export const rngStateSchema = z.array(z.number().int().nonnegative().max(0xffffffff)).length(4);
