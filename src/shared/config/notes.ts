import type { Config } from './schema.js';

/**
 * One line for each key of the paper's config that this run accepts but that gdp's flags, not the config, govern
 * (`base.cuda`, `base.multi_gpus`), or that does not apply to the stages it runs (`base.epoch`), so that loading
 * the paper's configs unchanged never changes behaviour without a word. Empty when nothing needs saying.
 */
export function configNotes(config: Config): string[] {
  const notes: string[] = [];
  if (config.base.cuda) {
    notes.push("config: base.cuda is true: gdp places work by each worker's --backend and --gpu K (one worker per GPU), not by the config");
  }
  if (config.base.multi_gpus) {
    notes.push('config: base.multi_gpus is true: gdp trains data-parallel over its workers (--workers N, each with its own --gpu K), not nn.DataParallel');
  }
  if (config.base.epoch > 0 && !config.stages.includes('train')) {
    notes.push(`config: base.epoch ${config.base.epoch} sets where the train stage starts; this run has no train stage`);
  }
  return notes;
}
