import { z } from 'zod';
import { GdpError } from '../errors.js';
import { trace } from '../graph/trace.js';
import { BatchNorm2d, Conv2d, DepthwiseConv2d, Linear } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import { aliveChannels, batchNorms } from './gates.js';
import { channelStructure, type ChannelGroup, type ChannelStructure } from './groups.js';

/** The layers one group's surgery touches, and the width they must have before it. */
export type MeltGroupLayers = {
  width: number;
  bns: string[];
  producers: string[];
  consumers: string[];
  /** Depthwise convolutions on the group (absent: none). */
  depthwise?: string[];
  /** [offset, area] of consumers that read more than the group or read it flattened (see `ConsumerSlice`). */
  slices?: Record<string, [number, number]>;
};

/**
 * A melt as replayable data: which BNs fold their gates (all gated ones), and per group the channel indices
 * kept. Applying it to any replica of the same masked model gives the same physically smaller model.
 */
export type MeltRecord = {
  kind: 'melt';
  ungate: string[];
  groups: Record<string, number[]>;
  layers: Record<string, MeltGroupLayers>;
};

const meltRecordSchema = z
  .object({
    kind: z.literal('melt'),
    ungate: z.array(z.string()),
    groups: z.record(z.string(), z.array(z.number().int().nonnegative()).min(1)),
    layers: z.record(
      z.string(),
      z
        .object({
          width: z.number().int().positive(),
          bns: z.array(z.string()),
          producers: z.array(z.string()),
          consumers: z.array(z.string()),
          depthwise: z.array(z.string()).optional(),
          slices: z.record(z.string(), z.tuple([z.number().int().nonnegative(), z.number().int().positive()])).optional(),
        })
        .strict(),
    ),
  })
  .strict();

/** The melt of the model's current masks: every prunable group keeps its alive channels. */
export function planMelt(model: Module, s: ChannelStructure): MeltRecord {
  const bns = batchNorms(model);
  const ungate = [...bns].filter(([, bn]) => bn.gated).map(([p]) => p);
  const record: MeltRecord = { kind: 'melt', ungate, groups: {}, layers: {} };
  for (const g of s.groups) {
    if (!g.prunable || !bns.get(g.bns[0])?.gated) continue;
    const keep = aliveChannels(model, g);
    if (keep.length === g.width) continue;
    if (keep.length === 0) throw new GdpError('EMPTY_GROUP', `group '${g.id}' has every channel masked: melting would cut the network`);
    record.groups[g.id] = keep;
    record.layers[g.id] = meltLayers(g);
  }
  return record;
}

/** The layers a melt of group `g` touches, as the record carries them. */
function meltLayers(g: ChannelGroup): MeltGroupLayers {
  const layers: MeltGroupLayers = { width: g.width, bns: [...g.bns], producers: [...g.producers], consumers: [...g.consumers] };
  if (g.depthwise.length) layers.depthwise = [...g.depthwise];
  const sliced = Object.entries(g.slices);
  if (sliced.length) layers.slices = Object.fromEntries(sliced.map(([p, sl]) => [p, [sl.offset, sl.area]]));
  return layers;
}

/**
 * The melt that narrows a full-width model to the widths of a pruned file: every prunable group whose producers
 * are narrower in `widths` keeps its first channels. Which channels are kept does not matter to a caller that then
 * overwrites every parameter and buffer with the file's (a run starting from `pruned.safetensors`); the record makes
 * every replica build the same shapes. No BN is ungated. Returns undefined when no group is narrower.
 * `widths`: [in, out] by layer path, as `layerWidths` gives them. The caller checks that the result has the file's
 * widths everywhere (a non-prunable layer that differs is not a pruned form of the model).
 * @throws GdpError SHAPE_MISMATCH naming a group whose producers disagree on its width, or that is narrower than
 *   the model but cannot be pruned.
 */
export function planNarrowing(s: ChannelStructure, widths: Readonly<Record<string, readonly [number, number]>>, source: string): MeltRecord | undefined {
  const record: MeltRecord = { kind: 'melt', ungate: [], groups: {}, layers: {} };
  for (const g of s.groups) {
    const outs = new Set(g.producers.map((p) => widths[p]?.[1] ?? g.width));
    if (outs.size > 1)
      throw new GdpError('SHAPE_MISMATCH', `${source}: the producers of channel group '${g.id}' (${g.producers.join(', ')}) have different widths`);
    const [w] = outs;
    if (w === undefined || w === g.width) continue;
    if (w > g.width || !g.prunable) {
      const why = w > g.width ? `wider than the model's ${g.width}` : `not prunable (${g.blockReason ?? 'fixed width'})`;
      throw new GdpError('SHAPE_MISMATCH', `${source}: channel group '${g.id}' has ${w} channels, ${why}: not a pruned form of the model`);
    }
    record.groups[g.id] = Array.from({ length: w }, (_, i) => i);
    record.layers[g.id] = meltLayers(g);
  }
  return Object.keys(record.groups).length ? record : undefined;
}

function modulesByPath(model: Module): Map<string, Module> {
  return new Map(model.namedModules());
}

/** A consumer's input width: Conv2d input channels or Linear input features. */
function inputWidth(m: Conv2d | Linear): number {
  return m instanceof Conv2d ? m.inChannels : m.inFeatures;
}

/**
 * Replays a melt: every listed BN folds g*mask into weight and bias (`removeGate`), then each group's masked
 * channels are cut from its producers' outputs, its BNs and depthwise convolutions, and its consumers' inputs (at
 * their slices: every cut of one consumer is gathered first and made at once, so offsets stay those of the
 * unmelted input). All widths are checked before anything changes, so a record that does not fit the model leaves
 * it untouched. Throws BAD_MELT naming the group and layer that do not fit.
 */
export function applyMelt(model: Module, data: MeltRecord): void {
  const r = parseMeltRecord(data);
  const mods = modulesByPath(model);
  const need = <T>(p: string, cls: new (...a: never[]) => T, what: string, id: string): T => {
    const m = mods.get(p);
    if (!(m instanceof cls)) throw new GdpError('BAD_MELT', `melt record, group '${id}': '${p}' is not a ${what} in this model`);
    return m;
  };
  const surgery: (() => void)[] = [];
  // Per consumer, the input features to remove, from every group it reads.
  const cuts = new Map<Conv2d | Linear, Set<number>>();
  for (const [id, keep] of Object.entries(r.groups)) {
    const l = r.layers[id];
    if (!l) throw new GdpError('BAD_MELT', `melt record: group '${id}' has no layers`);
    const bad = keep.find((c, i) => c >= l.width || (i > 0 && c <= keep[i - 1]));
    if (bad !== undefined) throw new GdpError('BAD_MELT', `melt record, group '${id}': kept channels must be ascending and below ${l.width} (saw ${bad})`);
    const width = (p: string, w: number) => {
      if (w !== l.width) throw new GdpError('BAD_MELT', `melt record, group '${id}': '${p}' has width ${w}, the record ${l.width}`);
    };
    for (const p of l.producers) {
      const c = need(p, Conv2d, 'Conv2d', id);
      width(p, c.outChannels);
      surgery.push(() => c.keepOutputChannels(keep));
    }
    for (const p of l.bns) {
      const bn = need(p, BatchNorm2d, 'BatchNorm2d', id);
      width(p, bn.channels);
      surgery.push(() => bn.keepChannels(keep));
    }
    for (const p of l.depthwise ?? []) {
      const dw = need(p, DepthwiseConv2d, 'DepthwiseConv2d', id);
      width(p, dw.channels);
      surgery.push(() => dw.keepChannels(keep));
    }
    const kept = new Set(keep);
    for (const p of l.consumers) {
      const m = mods.get(p);
      if (!(m instanceof Conv2d) && !(m instanceof Linear))
        throw new GdpError('BAD_MELT', `melt record, group '${id}': '${p}' is not a Conv2d or Linear in this model`);
      const slice = l.slices?.[p];
      const [offset, area] = slice ?? [0, 1];
      if (!slice) width(p, inputWidth(m));
      else if (offset + l.width * area > inputWidth(m)) {
        throw new GdpError('BAD_MELT', `melt record, group '${id}': '${p}' has ${inputWidth(m)} inputs, the record reads ${l.width}x${area} from ${offset}`);
      }
      const cut = cuts.get(m) ?? new Set<number>();
      cuts.set(m, cut);
      for (let c = 0; c < l.width; c++) if (!kept.has(c)) for (let k = 0; k < area; k++) cut.add(offset + c * area + k);
    }
  }
  for (const [m, cut] of cuts) {
    const keep: number[] = [];
    for (let i = 0; i < inputWidth(m); i++) if (!cut.has(i)) keep.push(i);
    surgery.push(() => m.keepInputChannels(keep));
  }
  const bns = r.ungate.map((p) => need(p, BatchNorm2d, 'BatchNorm2d', '(ungate)'));
  // Folding first: a masked channel's weight and bias become exactly 0, so cutting it changes no output.
  for (const bn of bns) bn.removeGate();
  for (const f of surgery) f();
}

/** Melts the model's masks into a smaller plain network; returns the record that replays the same melt elsewhere. */
export function melt(model: Module, inputShape: readonly number[]): MeltRecord {
  const record = planMelt(model, channelStructure(model, inputShape));
  applyMelt(model, record);
  trace(model, inputShape);
  return record;
}

/** Validates a melt record that arrived as untyped data. */
export function parseMeltRecord(data: unknown, source = 'melt record'): MeltRecord {
  const r = meltRecordSchema.safeParse(data);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new GdpError('BAD_MELT', `${source}: ${i.path.join('.') || '(root)'}: ${i.message}`);
  }
  return r.data;
}
