import type { GlobalPruneInfo } from '../shared/pruning/decision.js';
import type { RunFiles } from './run_files.js';
import type { RunObserver } from './run_observer.js';

/** What the pruning engine reports: Tock and finetune epochs, Ticks, save-point checkpoints, the melt. */
export type PruneEvent =
  | {
      type: 'tock' | 'finetune';
      epoch: number;
      epochs: number;
      trainLoss: number;
      trainAcc: number;
      acc1: number;
      acc5: number;
      loss: number;
      /** The rate of the epoch's last step (the paper's "Final LR"). */
      lr: number;
      imgS: number;
      /** Images per second of each worker's own compute. */
      workerImgS: Record<string, number>;
    }
  | {
      type: 'tick';
      tick: number;
      flopsRatio: number;
      paramsRatio: number;
      filtersLeft: number;
      pruned: number;
      trainLoss: number;
      acc1: number;
      loss: number;
      info: GlobalPruneInfo;
    }
  | { type: 'checkpoint'; tick: number; savePoint: number; path: string; flopsRatio: number }
  | { type: 'melt'; macs: number; params: number; flopsRatio: number; paramsRatio: number };

/**
 * Logs each event as a line and keeps them all in logs/<task_name>/`file` (prune_log.json, finetune_log.json,
 * rewritten atomically); Tock and finetune epochs also go to the run's log.json beside the training epochs. The
 * context's observer (the live dashboard) gets each event too.
 */
export function eventSink(ctx: { log: (line: string) => void; files: RunFiles; observer?: Pick<RunObserver, 'prune'> }, file: string): (e: PruneEvent) => void {
  return (e) => {
    ctx.log(formatPruneEvent(e));
    ctx.observer?.prune(e);
    if (e.type === 'tock' || e.type === 'finetune') {
      ctx.files.appendEpoch({
        stage: e.type,
        epoch: e.epoch,
        lr: e.lr,
        train_loss: e.trainLoss,
        train_acc: e.trainAcc,
        test_loss: e.loss,
        'acc@1': e.acc1,
        'acc@5': e.acc5,
        img_s: e.imgS,
        worker_img_s: e.workerImgS,
      });
    }
    ctx.files.appendLog(file, e);
  };
}

/** One human-readable line per event, in the paper's log style. */
export function formatPruneEvent(e: PruneEvent): string {
  const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
  switch (e.type) {
    case 'tick':
      return `Tick ${e.tick}: MACs ${pct(e.flopsRatio)}, params ${pct(e.paramsRatio)}, filters left ${e.filtersLeft}, train loss ${e.trainLoss.toFixed(4)}, acc after prune ${pct(e.acc1)}`;
    case 'tock':
    case 'finetune':
      return `${e.type === 'tock' ? 'Tock' : 'Finetune'} epoch ${e.epoch}/${e.epochs}: train loss ${e.trainLoss.toFixed(4)}, test loss ${e.loss.toFixed(4)}, acc ${pct(e.acc1)}, lr ${e.lr.toFixed(5)}`;
    case 'checkpoint':
      return `Saved ${e.path} (MACs ${pct(e.flopsRatio)} <= ${pct(e.savePoint)})`;
    case 'melt':
      return `Melted: ${e.macs} MACs (${pct(e.flopsRatio)}), ${e.params} params (${pct(e.paramsRatio)})`;
  }
}
