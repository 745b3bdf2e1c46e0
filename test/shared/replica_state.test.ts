import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { GdpError } from '../../src/shared/errors.js';
import { archSpec, buildModel } from '../../src/shared/models/registry.js';
import { namedTensors } from '../helpers.js';
import '../../src/shared/pruning/updates.js';
import { pruningUpdate } from '../../src/shared/pruning/updates.js';
import { flattenState, unflattenState, type ReplicaState } from '../../src/shared/train/model_state.js';
import { Replica } from '../../src/shared/train/replica.js';
import { TINY, setup, tinyData } from '../dist/helpers.js';

before(setup);

const SGD = { lr: 0.1, momentum: 0.9, weightDecay: 5e-4, nesterov: false };

function fresh(seed: number): Replica {
  return new Replica(buildModel(TINY, { numClasses: 10, seed }), archSpec(TINY).inputShape);
}

/** A gated replica after two momentum SGD steps on its own gradients: every kind of state is non-trivial. */
async function trained(): Promise<Replica> {
  const r = fresh(3);
  r.applyUpdate(pruningUpdate({ kind: 'gate', layers: ['bn1', 'bn2'] }));
  const data = await tinyData();
  for (const start of [0, 16]) {
    const layout = r.layout('all');
    const batch = await data.train.load(
      Int32Array.from({ length: 16 }, (_, i) => start + i),
      { augment: false, seed: 0 },
    );
    const { grad } = r.gradients(batch, layout);
    r.applyGradient(
      layout,
      grad.map((g) => g / batch.n),
      SGD,
    );
  }
  return r;
}

function codeOf(fn: () => void): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof GdpError ? err.code : `not a GdpError: ${String(err)}`;
  }
  return undefined;
}

test('snapshot -> loadState on a replica built with another seed gives the same replica, which then trains identically', async () => {
  const a = await trained();
  const b = fresh(11);
  assert.notEqual(b.checksum('parameters'), a.checksum('parameters'));
  // Through the wire form a welcome uses: one flat vector, slots then momentum.
  const s = a.snapshot();
  const { entries, flat } = flattenState([...s.slots, ...s.momentum]);
  const slots = unflattenState(entries.slice(0, s.slots.length), flat);
  const momentum = unflattenState(
    entries.slice(s.slots.length),
    flat,
    slots.reduce((n, t) => n + t.values.length, 0),
  );
  b.loadState({ updates: s.updates, slots, momentum });
  for (const scope of ['parameters', 'state', 'state-without-running-stats'] as const) assert.equal(b.checksum(scope), a.checksum(scope), scope);
  assert.deepEqual(b.updates, a.updates);
  assert.deepEqual(b.momentumState(), a.momentumState());
  assert.ok(a.momentumState().length > 0, 'the momentum travelled (not an empty comparison)');
  const layout = a.layout('all');
  const grad = new Float32Array(layout.size).map((_, i) => Math.sin(i) * 1e-2);
  a.applyGradient(layout, grad, SGD);
  b.applyGradient(b.layout('all'), grad, SGD);
  assert.equal(b.checksum('parameters'), a.checksum('parameters'), 'the momentum carried over: the next step agrees');
  a.model.dispose();
  b.model.dispose();
});

test('loadState refuses a state that does not fit the model with BAD_STATE, before overwriting anything', async () => {
  const a = await trained();
  const good = a.snapshot();
  const without = (s: ReplicaState, name: string) => s.slots.filter((t) => t.name !== name);
  const cases: [string, ReplicaState][] = [
    ['a missing slot', { ...good, updates: [], slots: without(good, 'conv1.weight') }],
    ['an extra slot', { ...good, updates: [], slots: [...good.slots, { name: 'conv9.weight', values: new Float32Array(4) }] }],
    ['a slot of another size', { ...good, updates: [], slots: [...without(good, 'conv1.weight'), { name: 'conv1.weight', values: new Float32Array(5) }] }],
    [
      'a slot of another shape',
      { ...good, updates: [], slots: [...without(good, 'linear.weight'), { name: 'linear.weight', shape: [3, 20], values: new Float32Array(60) }] },
    ],
    ['a slot named twice', { ...good, updates: [], slots: [...good.slots, good.slots[0]] }],
    ['momentum of no parameter', { ...good, updates: [], momentum: [{ name: 'conv9.weight', values: new Float32Array(3) }] }],
  ];
  // Without its update log the state is loaded into an ungated model: 'g' and 'bn_mask' tensors are dropped too.
  const plainName = (t: { name: string }) => !t.name.endsWith('.g') && !t.name.endsWith('bn_mask');
  const ungated = (s: ReplicaState) => ({ ...s, slots: s.slots.filter(plainName), momentum: s.momentum.filter(plainName) });
  const control = fresh(11);
  control.loadState(ungated({ ...good, updates: [] }));
  // The control case: the unaltered state loads.
  const conv1 = (r: { slots: readonly { name: string; values: Float32Array }[] }) => r.slots.find((t) => t.name === 'conv1.weight')!.values;
  assert.deepEqual(conv1(control.snapshot()), conv1(good));
  control.model.dispose();
  for (const [what, state] of cases) {
    const plain = ungated(state);
    const b = fresh(11);
    const before = b.checksum('state');
    assert.equal(
      codeOf(() => b.loadState(plain)),
      'BAD_STATE',
      what,
    );
    assert.equal(b.checksum('state'), before, `${what}: nothing overwritten`);
    b.model.dispose();
  }
  const used = fresh(11);
  used.applyUpdate({ kind: 'reset_momentum' });
  assert.equal(
    codeOf(() => used.loadState(good)),
    'INTERNAL',
    'a replica that applied updates cannot replay a log',
  );
  used.model.dispose();
  a.model.dispose();
});

test('applyUpdate records every update; reset_momentum drops momentum, a mask keeps it', async () => {
  const a = await trained();
  const n = a.momentumState().length;
  assert.ok(n > 0);
  a.applyUpdate({ kind: 'mask', masks: namedTensors([['bn1', Float32Array.of(1, 0, 1, 1, 1, 1)]]) });
  assert.equal(a.momentumState().length, n);
  a.applyUpdate({ kind: 'reset_momentum' });
  assert.equal(a.momentumState().length, 0);
  assert.deepEqual(
    a.updates.map((u) => u.kind),
    ['custom', 'mask', 'reset_momentum'],
  );
  assert.equal(
    codeOf(() => a.applyUpdate({ kind: 'gate', layers: ['conv1'] })),
    'BAD_UPDATE',
  );
  assert.equal(a.updates.length, 3, 'a refused update is not recorded');
  a.model.dispose();
});

test('running statistics: set/get round trip, checked in full; only the state checksum sees them', async () => {
  const a = await trained();
  const stats = a.runningStats();
  assert.deepEqual(
    stats.map((s) => s.name),
    ['bn1.running_mean', 'bn1.running_var', 'bn2.running_mean', 'bn2.running_var'],
  );
  const sums = { parameters: a.checksum('parameters'), state: a.checksum('state'), shared: a.checksum('state-without-running-stats') };
  const changed = stats.map((s) => ({ ...s, values: s.values.map((v) => v + 0.25) }));
  a.setRunningStats(changed);
  assert.deepEqual(a.runningStats(), changed);
  assert.notEqual(a.checksum('state'), sums.state);
  assert.equal(a.checksum('parameters'), sums.parameters);
  assert.equal(a.checksum('state-without-running-stats'), sums.shared);
  const nan = changed.map((s, i) => (i === 2 ? { ...s, values: s.values.map(() => NaN) } : s));
  assert.equal(
    codeOf(() => a.setRunningStats(nan)),
    'NON_FINITE',
  );
  assert.equal(
    codeOf(() => a.setRunningStats(changed.slice(1))),
    'BAD_STATE',
    'a statistic missing',
  );
  assert.equal(
    codeOf(() => a.checkRunningStats([...changed, { name: 'bn1.bn_mask', shape: [6], values: new Float32Array(6) }])),
    'BAD_STATE',
    'not a statistic',
  );
  assert.equal(
    codeOf(() => a.checkRunningStats(changed.map((s) => ({ ...s, shape: [2, 3] })))),
    'BAD_STATE',
    'another shape',
  );
  assert.deepEqual(a.runningStats(), changed, 'refused sets changed nothing');
  a.model.dispose();
});
