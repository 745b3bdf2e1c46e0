import { GdpError } from '../shared/errors.js';

/** Where a run diverged: the global step (or the evaluation after it) and, once the stage adds them, its terms and rate. */
export interface DivergenceSite {
  /** Coordinator.steps numbering: the step that failed, or the last step applied before a failed evaluation. */
  step: number;
  evaluation?: boolean;
  /** The stage's own terms, e.g. 'train epoch 2/4' or 'Tick 3'. */
  stage?: string;
  lr?: number;
}

/**
 * DIVERGED: every worker's loss or gradient (or their average) is non-finite at one step, so the numbers, not a
 * worker, are at fault. Nothing of that step was applied. The collective operations know the step; the stage that
 * called them adds its terms and rate (`within`).
 */
export class DivergedError extends GdpError {
  constructor(
    readonly site: DivergenceSite,
    readonly detail: string,
  ) {
    const terms = [site.stage, site.lr === undefined ? undefined : `lr ${site.lr}`].filter((t) => t !== undefined);
    super(
      'DIVERGED',
      `${site.evaluation ? 'at the evaluation after' : 'at'} step ${site.step}${terms.length ? ` (${terms.join(', ')})` : ''}: ${detail}; lower the learning rate`,
    );
  }

  within(stage: string, lr?: number): DivergedError {
    return new DivergedError({ ...this.site, stage, lr: lr ?? this.site.lr }, this.detail);
  }
}

/** `err` placed in a stage's terms when it is a DivergedError (see DivergedError.within); any other error as it is. */
export function placeDivergence(err: unknown, stage: string, lr?: number): unknown {
  return err instanceof DivergedError ? err.within(stage, lr) : err;
}
