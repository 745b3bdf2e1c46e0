import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { nextPhase, prunePositionSchema, reachedSavePoints, savePointName, type TickTockSchedule } from '../../src/coordinator/tick_tock.js';

const tock = { kind: 'tock', at: { epoch: 0, step: 0, stats: { lossSum: 0, correct1: 0, correct5: 0, count: 0 } } };
const tick = { kind: 'tick' };
const melt = (stoppedBy: string) => ({ kind: 'melt', stoppedBy });

describe('Tick-Tock schedule (pure next-phase function)', () => {
  const gbn: TickTockSchedule = { target_flops: 0.5, save_points: [0.9, 0.7], max_ticks: 10, T: 3 };
  const after = (t: number, flopsRatio: number, pending: number[] = [0.7]) => nextPhase({ kind: 'tick', tick: t, pruned: true, flopsRatio, pending }, gbn);

  it('a Tock is followed by a Tick; a Tick by a Tock (from its start) every T Ticks, else by a Tick', () => {
    assert.deepEqual(nextPhase({ kind: 'tock' }, gbn), tick);
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6].map((t) => after(t, 0.8).kind),
      ['tick', 'tick', 'tock', 'tick', 'tick', 'tock'],
    );
    assert.deepEqual(after(3, 0.8), tock);
  });

  it('melts at target_flops (at or under), at max_ticks, and when a Tick pruned nothing', () => {
    assert.deepEqual(after(1, 0.5), melt('target_flops'));
    assert.deepEqual(after(1, 0.5000001).kind, 'tick');
    assert.deepEqual(after(10, 0.8), melt('max_ticks'));
    assert.deepEqual(after(8, 0.8), tick);
    assert.deepEqual(nextPhase({ kind: 'tick', tick: 1, pruned: false }, gbn), melt('nothing_to_prune'));
    // The checks run in this order: the target wins over max_ticks, an empty Tick over everything.
    assert.deepEqual(after(10, 0.4), melt('target_flops'));
    assert.deepEqual(nextPhase({ kind: 'tick', tick: 10, pruned: false }, gbn), melt('nothing_to_prune'));
  });

  it('without a target, melts once every save point is reached; with one, save points do not stop it', () => {
    const noTarget = { ...gbn, target_flops: undefined };
    assert.deepEqual(nextPhase({ kind: 'tick', tick: 1, pruned: true, flopsRatio: 0.6, pending: [] }, noTarget), melt('save_points'));
    assert.deepEqual(nextPhase({ kind: 'tick', tick: 1, pruned: true, flopsRatio: 0.8, pending: [0.7] }, noTarget), tick);
    assert.deepEqual(nextPhase({ kind: 'tick', tick: 1, pruned: true, flopsRatio: 0.6, pending: [] }, gbn), tick);
    // No save points and no target: only max_ticks ends it.
    assert.deepEqual(nextPhase({ kind: 'tick', tick: 2, pruned: true, flopsRatio: 0.1, pending: [] }, { ...noTarget, save_points: [] }), tick);
  });

  it('every phase it returns is a valid position phase', () => {
    const phases = [nextPhase({ kind: 'tock' }, gbn), after(3, 0.8), after(1, 0.4), nextPhase({ kind: 'tick', tick: 1, pruned: false }, gbn)];
    for (const phase of phases) {
      const position = {
        baseline: { macs: 1, params: 1, layers: [] },
        ticks: 1,
        phase,
        sampler: { rng: [1, 2, 3, 4], drawn: false, cursor: 0 },
        rng: [1, 2, 3, 4],
        pending: [],
        checkpoints: [],
      };
      assert.ok(prunePositionSchema.safeParse(position).success, JSON.stringify(phase));
    }
  });

  it('save points reached: the leading pending points (largest first) at or above the ratio; file names in percent', () => {
    assert.deepEqual(reachedSavePoints([0.9, 0.6, 0.35], 0.95), []);
    assert.deepEqual(reachedSavePoints([0.9, 0.6, 0.35], 0.9), [0.9]);
    assert.deepEqual(reachedSavePoints([0.9, 0.6, 0.35], 0.5), [0.9, 0.6]);
    assert.deepEqual(reachedSavePoints([0.9, 0.6, 0.35], 0.1), [0.9, 0.6, 0.35]);
    assert.deepEqual(reachedSavePoints([], 0.1), []);
    assert.equal(savePointName(0.35), 'gbn_35.safetensors');
    assert.equal(savePointName(0.075), 'gbn_8.safetensors');
  });
});
