import { z } from 'zod';
import { GdpError } from '../errors.js';
import { namedTensorSchema } from './tensor.js';

/**
 * A model update is replayable data: the coordinator broadcasts it, every replica (the coordinator's own too)
 * applies it with identical results (src/shared/train/apply_update.ts), and a worker joining later replays the
 * whole log. Built-in kinds cover the Gate Decorator's needs; `custom` carries whatever record the pruning engine
 * defines to a registered handler. This file is the wire form only.
 */
const jsonSchema = z.json();
export type JsonValue = z.infer<typeof jsonSchema>;

export const modelUpdateSchema = z.discriminatedUnion('kind', [
  /** Sets the `bn_mask` of gated BNs, by module path. */
  z.object({ kind: z.literal('mask'), masks: z.array(namedTensorSchema) }),
  /** Converts the named BNs to GBNs (BatchNorm2d.addGate). */
  z.object({ kind: z.literal('gate'), layers: z.array(z.string()) }),
  /** Folds gates into the named BNs (BatchNorm2d.removeGate, the paper's melt). */
  z.object({ kind: z.literal('ungate'), layers: z.array(z.string()) }),
  /** Drops SGD momentum everywhere (the paper builds a fresh optimizer per stage). */
  z.object({ kind: z.literal('reset_momentum') }),
  /** An architecture change or anything else the pruning engine defines: a handler name, a JSON record, tensors. */
  z.object({ kind: z.literal('custom'), handler: z.string().min(1), record: jsonSchema, tensors: z.array(namedTensorSchema) }),
]);
export type ModelUpdate = z.infer<typeof modelUpdateSchema>;

/** The update log as JSON text (binary tensor data as base64), e.g. for safetensors metadata. */
export function encodeUpdateLog(updates: readonly ModelUpdate[]): string {
  return JSON.stringify(updates, (_k, v: unknown) => (v instanceof Uint8Array ? { base64: Buffer.from(v).toString('base64') } : v));
}

/** Reads back what encodeUpdateLog wrote, validated like updates from the network. */
export function decodeUpdateLog(text: string, source: string): ModelUpdate[] {
  let raw: unknown;
  try {
    raw = JSON.parse(text, (_k, v: unknown) => {
      const b = v as { base64?: unknown } | null;
      return typeof b === 'object' && b !== null && typeof b.base64 === 'string' && Object.keys(b).length === 1
        ? new Uint8Array(Buffer.from(b.base64, 'base64'))
        : v;
    });
  } catch (err) {
    throw new GdpError('BAD_UPDATE', `${source}: the model-update log is not valid JSON (${(err as Error).message})`);
  }
  const r = z.array(modelUpdateSchema).safeParse(raw);
  if (!r.success) throw new GdpError('BAD_UPDATE', `${source}: invalid model-update log: ${r.error.issues[0].path.join('.')}: ${r.error.issues[0].message}`);
  return r.data;
}
