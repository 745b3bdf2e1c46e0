import type { Config } from '../config/schema.js';
import { GdpError } from '../errors.js';

export type StepLrTable = readonly (readonly [number, number])[];

/**
 * The paper's step schedule: `epoch` is 1-based; the rate of the first [max_epoch, lr] with epoch <= max_epoch,
 * else the last entry's rate.
 */
export function stepLr(epoch: number, table: StepLrTable): number {
  let v = 0;
  for (const [maxEpoch, lr] of table) {
    v = lr;
    if (epoch <= maxEpoch) break;
  }
  return v;
}

export interface SgdrOptions {
  lr_min: number;
  lr_max: number;
  restart_period: number;
  warm_up: number;
}

/** The paper's SGDR: cosine from lr_max to lr_min, restarting with a period that doubles each time. */
export function sgdrLr(epoch: number, o: SgdrOptions): number {
  let e = epoch - o.warm_up;
  let period = o.restart_period;
  while (e / period > 1) {
    e -= period;
    period *= 2;
  }
  return o.lr_min + (o.lr_max - o.lr_min) * 0.5 * (1 + Math.cos((Math.PI * e) / period));
}

/**
 * The paper's triangular cycle (Tock, finetune), per iteration: `step` is 1-based over `total` iterations; lr rises
 * linearly from lr_min to lr_max at total/2 and falls back to lr_min at the last step.
 */
export function triangularLr(step: number, total: number, lrMin: number, lrMax: number): number {
  const half = total / 2;
  if (step < half) return (1 - step / half) * lrMin + (step / half) * lrMax;
  const s = step - half;
  return Math.max(0, (1 - s / half) * lrMax + (s / half) * lrMin);
}

/** The training stage's rate for a 1-based epoch, from whichever schedule the config gives. */
export function epochLr(train: Config['train'], epoch: number): number {
  if (train.steplr) return stepLr(epoch, train.steplr);
  if (train.sgdr) return sgdrLr(epoch, train.sgdr);
  throw new GdpError('BAD_CONFIG', 'train needs a learning-rate schedule: steplr or sgdr');
}
