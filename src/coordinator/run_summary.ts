import { modelCost } from '../shared/graph/flops.js';
import { measureLatency } from '../model/bench.js';
import type { Cluster } from './cluster.js';
import type { Config } from '../shared/config/schema.js';

/** One row of the run's final table: the model at a point of the pipeline. */
export interface ModelSnapshot {
  label: string;
  macs: number;
  params: number;
  acc1: number;
  acc5: number;
  /** Eval-mode latency per image on the coordinator's backend, batch 1 and batch 64. */
  msPerImageB1: number;
  msPerImageB64: number;
}

/** Accuracy on the whole test set (sharded over the workers) plus cost and latency of the current model. */
export async function snapshot(label: string, cluster: Cluster, config: Config, testSize: number): Promise<ModelSnapshot> {
  await cluster.syncBatchNormStats();
  const s = await cluster.evaluate(Int32Array.from({ length: testSize }, (_, i) => i));
  const model = cluster.replica.model;
  const shape = cluster.replica.inputShape;
  const cost = modelCost(model, shape);
  const b1 = measureLatency(model, shape, 1, { runs: 5 });
  const b64 = measureLatency(model, shape, 64, { runs: 2 });
  return {
    label,
    macs: cost.macs,
    params: cost.params,
    acc1: (100 * s.correct1) / s.count,
    acc5: (100 * s.correct5) / s.count,
    msPerImageB1: b1.perImageMs,
    msPerImageB64: b64.perImageMs,
  };
}

export function formatSummary(rows: readonly ModelSnapshot[]): string {
  const base = rows[0];
  const head = ['model', 'MACs', 'params', 'top-1', 'top-5', 'ms/img b1', 'ms/img b64'];
  const body = rows.map((r) => [
    r.label,
    `${(r.macs / 1e6).toFixed(2)}M (${((100 * r.macs) / base.macs).toFixed(1)}%)`,
    `${(r.params / 1e3).toFixed(1)}k (${((100 * r.params) / base.params).toFixed(1)}%)`,
    `${r.acc1.toFixed(2)}%`,
    `${r.acc5.toFixed(2)}%`,
    r.msPerImageB1.toFixed(2),
    r.msPerImageB64.toFixed(2),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(head), ...body.map(line)].join('\n');
}
