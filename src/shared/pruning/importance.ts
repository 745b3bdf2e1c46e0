import { GdpError } from '../errors.js';
import { Conv2d } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import type { Rng } from '../rng.js';
import type { FlatLayout } from '../train/replica.js';
import type { ChannelGroup } from './groups.js';

/** Per-BN gate scores, by BN module path. */
export type BnScores = Map<string, Float64Array>;

/**
 * Accumulates the Gate Decorator's Taylor score over the steps of a Tick: per gate, sum over steps of
 * |g * dL/dg|, with g the value the gradient was computed at and dL/dg the gradient averaged over the global
 * batch (what the paper's hook sees on one GPU with the whole batch).
 */
export class GateScoreAccumulator {
  private readonly scores: BnScores = new Map();
  steps = 0;
  constructor(readonly layout: FlatLayout) {
    for (let i = 0; i < layout.names.length; i++) {
      const name = layout.names[i];
      if (!name.endsWith('.g')) throw new GdpError('BAD_LAYOUT', `gate score layout holds '${name}', which is not a gate`);
      this.scores.set(name.slice(0, -2), new Float64Array(sizeOf(layout.shapes[i])));
    }
  }
  /** `gates` and `avgGrad` are flat vectors in `layout`. */
  add(gates: Float32Array, avgGrad: Float32Array): void {
    if (gates.length !== this.layout.size || avgGrad.length !== this.layout.size) {
      throw new GdpError('BAD_LAYOUT', `gate scores: got ${gates.length} gates and ${avgGrad.length} gradients, layout has ${this.layout.size}`);
    }
    this.layout.names.forEach((name, i) => {
      const s = this.scores.get(name.slice(0, -2))!;
      const o = this.layout.offsets[i];
      for (let c = 0; c < s.length; c++) s[c] += Math.abs(gates[o + c] * avgGrad[o + c]);
    });
    this.steps++;
  }
  perBn(): BnScores {
    return this.scores;
  }
  /** The sums so far as plain data (a resume point); JSON keeps float64 values exactly. */
  state(): GateScoreState {
    return { steps: this.steps, scores: Object.fromEntries([...this.scores].map(([bn, s]) => [bn, Array.from(s)])) };
  }
  /** Continues from `state()` of an accumulator over the same layout. */
  restore(s: GateScoreState): void {
    const names = Object.keys(s.scores);
    if (names.length !== this.scores.size) throw new GdpError('BAD_STATE', `gate scores: saved for ${names.length} BNs, the layout has ${this.scores.size}`);
    for (const [bn, v] of Object.entries(s.scores)) {
      const mine = this.scores.get(bn);
      if (!mine || mine.length !== v.length) throw new GdpError('BAD_STATE', `gate scores: saved '${bn}' (${v.length} channels) does not fit the layout`);
      mine.set(v);
    }
    this.steps = s.steps;
  }
}

export interface GateScoreState {
  steps: number;
  /** Per BN path, the score of each channel. */
  scores: Record<string, number[]>;
}

function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** `gate`: the group's score is the sum of its member BNs' accumulated scores (the paper sums per group id). */
export function gateImportance(g: ChannelGroup, scores: BnScores): Float64Array {
  const out = new Float64Array(g.width);
  for (const p of g.bns) {
    const s = scores.get(p);
    if (!s) throw new GdpError('MISSING_SCORE', `group '${g.id}': no gate score for BN '${p}'`);
    if (s.length !== g.width) throw new GdpError('SHAPE_MISMATCH', `group '${g.id}': BN '${p}' has ${s.length} scores, group width ${g.width}`);
    for (let c = 0; c < out.length; c++) out[c] += s[c];
  }
  return out;
}

/** `l1`: per channel, the L1 norm of the filters producing it (summed over the group's producers). */
export function l1Importance(g: ChannelGroup, model: Module): Float64Array {
  const convs = new Map<string, Module>(model.namedModules());
  const out = new Float64Array(g.width);
  for (const p of g.producers) {
    const conv = convs.get(p);
    if (!(conv instanceof Conv2d)) throw new GdpError('UNKNOWN_LAYER', `group '${g.id}': '${p}' is not a Conv2d`);
    const w = conv.weight.value.dataSync(); // HWIO: the output channel is the fastest axis
    for (let i = 0; i < w.length; i++) out[i % g.width] += Math.abs(w[i]);
  }
  return out;
}

/** `random`: uniform scores from a seeded generator (a baseline criterion). */
export function randomImportance(g: ChannelGroup, rng: Rng): Float64Array {
  const out = new Float64Array(g.width);
  for (let c = 0; c < out.length; c++) out[c] = rng.next();
  return out;
}
