import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeContinuation, epochRanges, nothingToTrain } from '../../src/coordinator/continuation.js';
import type { EpochRecord } from '../../src/coordinator/run_files.js';
import { parseConfig } from '../../src/shared/config/load.js';

/** A continuation from base.epoch `epoch` of a `max`-epoch run, its folder logs/t. */
function config(epoch: number, max: number, base: Record<string, unknown> = {}) {
  return parseConfig({
    base: { task_name: 't', epoch, checkpoint_path: `logs/t/train-epoch${epoch}.safetensors`, ...base },
    model: { name: 'mnist.resnet20', num_class: 10 },
    train: { max_epoch: max, steplr: [[max, 0.1]] },
    data: { type: 'mnist', batch_size: 8, test_batch_size: 8 },
    loss: { criterion: 'softmax' },
  });
}

const record = (epoch: number) => ({ stage: 'train', epoch }) as EpochRecord;

describe('describeContinuation: what a base.epoch continuation keeps of the earlier run, exactly', () => {
  it('epochRanges: ascending ranges without repeats', () => {
    assert.equal(epochRanges([]), '');
    assert.equal(epochRanges([3]), '3');
    assert.equal(epochRanges([5, 1, 2, 3, 2]), '1-3, 5');
    assert.equal(epochRanges([1, 3, 5, 6]), '1, 3, 5-6');
  });

  it('every epoch kept: the epochs and the records dropped, no warning', () => {
    const lines = describeContinuation(config(2, 4), 'logs/t', { kept: [record(1), record(2)], dropped: 3, found: true }, []);
    assert.deepEqual(lines, ['continues logs/t from epoch 2 (logs/t/train-epoch2.safetensors); log.json epochs kept: 1-2 (3 later record(s) dropped)']);
  });

  it('epochs missing, no log.json, an empty one: said, and a warning names the epochs without a record', () => {
    const gap = describeContinuation(config(6, 8), 'logs/t', { kept: [record(1), record(2), record(5)], dropped: 0, found: true }, []);
    assert.equal(gap[0], 'continues logs/t from epoch 6 (logs/t/train-epoch6.safetensors); log.json epochs kept: 1-2, 5');
    assert.match(gap[1], /^warning: logs\/t\/log\.json has no record of train epoch\(s\) 3-4, 6: /);
    const none = describeContinuation(config(3, 4), 'logs/t', { kept: [], dropped: 0, found: false }, []);
    assert.match(none[0], /log\.json epochs kept: none \(no log\.json\)$/);
    assert.match(none[1], /has no record of train epoch\(s\) 1-3: /);
    const empty = describeContinuation(config(3, 4), 'logs/t', { kept: [], dropped: 0, found: true }, []);
    assert.match(empty[0], /log\.json epochs kept: none$/);
    assert.match(empty[1], /has no record of train epoch\(s\) 1-3: /);
  });

  it("the earlier run's checkpoints past base.epoch: those this run saves are overwritten as it reaches them, the others stay", () => {
    const files = [
      'cfg.json',
      'log.json',
      'train-epoch2.safetensors',
      'train-epoch10.optim.safetensors',
      'train-epoch10.safetensors',
      'train-epoch12.safetensors',
    ];
    for (let n = 3; n <= 9; n++) files.push(`train-epoch${n}.safetensors`, `train-epoch${n}.optim.safetensors`, `train-epoch${n}.safetensors.tmp-12`);
    const all = [record(1), record(2)];
    // Saving every 3rd epoch and the last of 10: 3, 6, 9, 10.
    const lines = describeContinuation(config(2, 10, { model_saving_interval: 3 }), 'logs/t', { kept: all, dropped: 9, found: true }, files);
    assert.deepEqual(lines.slice(1), [
      "warning: the earlier run's checkpoints train-epoch<N>.safetensors (and .optim) for N = 3, 6, 9-10, past epoch 2, will be overwritten as this run reaches those epochs",
      "note: the earlier run's checkpoints train-epoch<N>.safetensors (and .optim) for N = 4-5, 7-8, 12, past epoch 2, stay as they are: this run does not save those epochs",
    ]);
    // Without a train stage nothing is saved; with nothing past base.epoch nothing is said.
    const prune = config(2, 10, {});
    prune.stages = ['prune'];
    assert.match(describeContinuation(prune, 'logs/t', { kept: all, dropped: 0, found: true }, files)[1], /^note: .* for N = 3-10, 12, past epoch 2, stay/);
    assert.equal(
      describeContinuation(config(2, 10), 'logs/t', { kept: all, dropped: 0, found: true }, ['train-epoch1.safetensors', 'train-epoch2.safetensors']).length,
      1,
    );
  });

  it("the earlier run's pruning results and summary.json: those this run writes its own of are overwritten, the others stay", () => {
    const gbn = { sparse_lambda: 1e-3, lr_min: 1e-3, lr_max: 1e-2, tock_epoch: 1, T: 2, p: 0.1, finetune_epoch: 1, save_points: [0.5, 0.9] };
    const pruning = parseConfig({ ...config(2, 4), gbn, stages: ['train', 'prune', 'finetune'] });
    const files = [
      'cfg.json',
      'finetune_log.json',
      'finetuned.safetensors',
      'gbn_70.safetensors',
      'gbn_90.safetensors',
      'log.json',
      'prune_log.json',
      'pruned.safetensors',
      'pruned.safetensors.tmp-4',
      'resume.safetensors',
      'summary.json',
      'train-epoch2.safetensors',
    ];
    const all = { kept: [record(1), record(2)], dropped: 0, found: true };
    assert.deepEqual(describeContinuation(pruning, 'logs/t', all, files).slice(1), [
      "warning: the earlier run's prune_log.json, gbn_90.safetensors, pruned.safetensors, finetune_log.json, finetuned.safetensors, summary.json will be overwritten as this run writes its own",
      "note: the earlier run's gbn_70.safetensors stay as they are: this run does not write them (they are that run's results, not this one's)",
    ]);
    // The train stage alone writes only summary.json of these; the prune stage alone not the finetune stage's.
    assert.deepEqual(describeContinuation(config(2, 4), 'logs/t', all, files).slice(1), [
      "warning: the earlier run's summary.json will be overwritten as this run writes its own",
      "note: the earlier run's prune_log.json, gbn_90.safetensors, gbn_70.safetensors, pruned.safetensors, finetune_log.json, finetuned.safetensors stay as they are: this run does not write them (they are that run's results, not this one's)",
    ]);
    const prune = parseConfig({ ...config(2, 4), gbn, stages: ['train', 'prune'] });
    assert.match(
      describeContinuation(prune, 'logs/t', all, files)[1],
      /^warning: the earlier run's prune_log\.json, gbn_90\.safetensors, pruned\.safetensors, summary\.json will/,
    );
  });

  it('an interrupted earlier run: a warning that this run replaces its resume point as its first stage starts', () => {
    const all = [record(1), record(2)];
    const lines = describeContinuation(config(2, 4), 'logs/t', { kept: all, dropped: 0, found: true }, ['resume.safetensors'], "stage 'prune', step 7");
    assert.deepEqual(lines.slice(1), [
      "warning: the earlier run was interrupted (its resume point: stage 'prune', step 7): this run replaces logs/t/resume.safetensors as its first stage starts, and that run can no longer be resumed",
    ]);
    assert.equal(
      describeContinuation(config(2, 4), 'logs/t', { kept: all, dropped: 0, found: true }, ['resume.safetensors']).length,
      1,
      'finished: nothing to say',
    );
  });

  it('nothingToTrain: only a continuation at or past max_epoch whose stages are all train', () => {
    assert.match(
      nothingToTrain(config(4, 4)) ?? '',
      /^nothing to do: base\.epoch 4 has reached train\.max_epoch 4 and the stages are only 'train'; logs\/t is left as it is/,
    );
    assert.match(nothingToTrain(config(5, 4)) ?? '', /^nothing to do: base\.epoch 5 /);
    assert.equal(nothingToTrain(config(3, 4)), undefined, 'an epoch left');
    const fresh = config(0, 4);
    fresh.train.max_epoch = 0;
    assert.equal(nothingToTrain(fresh), undefined, 'not a continuation');
    const prune = config(4, 4);
    prune.stages = ['train', 'prune'];
    assert.equal(nothingToTrain(prune), undefined, 'the prune stage still runs');
  });
});
