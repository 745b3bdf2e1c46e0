import { readFileSync } from 'node:fs';
import { GdpError } from '../shared/errors.js';
import { parseSafetensors, type HostTensor } from '../shared/io/safetensors.js';
import type { DashboardEvent } from './events.js';

/** One conv or linear layer: its output channels, and those alive (a GBN mask after it may zero some). */
export interface LayerWidth {
  path: string;
  out: number;
  alive: number;
}

/**
 * Output widths of the conv (weight of rank 4, [out, in, kh, kw]) and linear (rank 2, [out, in]) layers of a
 * PyTorch-named state dict, in the dict's order. A gated checkpoint (the paper's GBN form, `<bn>.bn_mask` of shape
 * [1, C, 1, 1]) counts the channels whose mask is non-zero: PyTorch's state-dict order puts a conv's BatchNorm after
 * it, before the next conv, so a mask belongs to the last conv seen.
 */
export function stateDictWidths(tensors: ReadonlyMap<string, HostTensor>): LayerWidth[] {
  const out: LayerWidth[] = [];
  for (const [name, t] of tensors) {
    if (name.endsWith('.bn_mask')) {
      const last = out[out.length - 1];
      if (last && t.data.length === last.out) last.alive = t.data.reduce((a, v) => a + (v !== 0 ? 1 : 0), 0);
      continue;
    }
    if (!name.endsWith('.weight') || (t.shape.length !== 4 && t.shape.length !== 2)) continue;
    out.push({ path: name.slice(0, -'.weight'.length), out: t.shape[0], alive: t.shape[0] });
  }
  return out;
}

/**
 * The layer widths of a safetensors file (gdp checkpoint or PyTorch state dict), and whether it is gated (masked).
 * @throws GdpError BAD_SAFETENSORS for a file that is not one, FILE_NOT_FOUND when it cannot be read.
 */
export function fileWidths(path: string): { layers: LayerWidth[]; gated: boolean; metadata: Record<string, string> } {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (err) {
    throw new GdpError('FILE_NOT_FOUND', `cannot read ${path}: ${(err as Error).message}`);
  }
  const f = parseSafetensors(buf, path);
  return { layers: stateDictWidths(f.tensors), gated: [...f.tensors.keys()].some((n) => n.endsWith('.bn_mask')), metadata: f.metadata };
}

/**
 * The dashboard's `widths` event: `current` layer by layer beside `baseline` (matched by path; a layer the baseline
 * lacks shows its own width as baseline). `form` says whether `current` counts alive channels of a masked network
 * or the widths of a melted one.
 */
export function widthsEvent(
  baseline: readonly LayerWidth[],
  current: readonly LayerWidth[],
  form: 'baseline' | 'masked' | 'melted',
  t = Date.now(),
): DashboardEvent {
  const base = new Map(baseline.map((l) => [l.path, l.out]));
  return { type: 'widths', t, form, layers: current.map((l) => ({ path: l.path, baseline: base.get(l.path) ?? l.out, current: l.alive })) };
}
