import { GdpError } from '../errors.js';
import type { Module } from '../nn/module.js';
import { registerUpdateHandler } from '../train/apply_update.js';
import { applyDecision, parseMaskDecision, type MaskDecision } from './decision.js';
import { bnAt } from './gates.js';
import { applyMelt, parseMeltRecord, type MeltRecord } from './melt.js';

/** Converts the listed BNs to GBNs. */
export type GateRecord = {
  kind: 'gate';
  layers: string[];
};

export type PruningRecord = GateRecord | MaskDecision | MeltRecord;

/**
 * Handler names of the pruning engine's model updates. They travel as the protocol's `custom` updates; this module
 * registers their handlers when loaded, and every process holding a replica loads it (the coordinator through its
 * stages, workers through their session), so each record replays identically everywhere.
 */
export const PRUNE_HANDLERS = { gate: 'gdp.prune.gate', mask: 'gdp.prune.mask', melt: 'gdp.prune.melt' } as const;

/** A pruning record wrapped as the protocol's `custom` model update (no tensors: records are plain data). */
export interface PruningUpdate {
  kind: 'custom';
  handler: (typeof PRUNE_HANDLERS)[keyof typeof PRUNE_HANDLERS];
  record: PruningRecord;
  tensors: [];
}

export function pruningUpdate(record: PruningRecord): PruningUpdate {
  return { kind: 'custom', handler: PRUNE_HANDLERS[record.kind], record, tensors: [] };
}

function applyGate(model: Module, record: unknown): void {
  const r = record as Partial<GateRecord>;
  if (r?.kind !== 'gate' || !Array.isArray(r.layers) || !r.layers.every((l) => typeof l === 'string')) {
    throw new GdpError('BAD_UPDATE', 'gate record must be {kind: "gate", layers: string[]}');
  }
  const bns = r.layers.map((p) => bnAt(model, p, 'gate record'));
  for (const bn of bns) bn.addGate();
}

/** Handlers by name, with the protocol's `UpdateHandler` shape (model, record, tensors). */
export const PRUNING_UPDATE_HANDLERS: Record<PruningUpdate['handler'], (model: Module, record: unknown) => void> = {
  [PRUNE_HANDLERS.gate]: applyGate,
  [PRUNE_HANDLERS.mask]: (model, record) => applyDecision(model, parseMaskDecision(record)),
  [PRUNE_HANDLERS.melt]: (model, record) => applyMelt(model, parseMeltRecord(record)),
};

for (const [name, fn] of Object.entries(PRUNING_UPDATE_HANDLERS)) registerUpdateHandler(name, (model, record) => fn(model, record));
