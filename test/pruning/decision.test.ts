import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { buildModel } from '../../src/shared/models/registry.js';
import { BatchNorm2d } from '../../src/shared/nn/layers.js';
import {
  applyDecision,
  flopsAwareScores,
  globalPrune,
  minimalChannels,
  parseMaskDecision,
  type GlobalPruneOptions,
  type GroupScores,
} from '../../src/shared/pruning/decision.js';
import { addGates } from '../helpers.js';
import { groupMask } from '../../src/shared/pruning/gates.js';
import { channelStructure, prunableGroups, type ChannelGroup } from '../../src/shared/pruning/groups.js';
import { randomImportance } from '../../src/shared/pruning/importance.js';
import { Rng } from '../../src/shared/rng.js';
import { cpu } from './helpers.js';

function group(id: string, width: number, bns: string[], area: number): ChannelGroup {
  return { id, width, bns, areas: bns.map(() => area), producers: [], depthwise: [], consumers: [], slices: {}, prunable: true };
}
const ones = (n: number) => new Float32Array(n).fill(1);

/**
 * globalPrune asked for `num` filters (the paper's count): the fraction p whose floor(p * alive filters) is `num`
 * (alive filters: alive channels times member BNs over the entries).
 */
function pruneNum(entries: GroupScores[], num: number, opts: Omit<GlobalPruneOptions, 'p'>) {
  const left = entries.reduce((a, e) => a + Array.from(e.mask).filter((m) => m !== 0).length * e.group.bns.length, 0);
  return globalPrune(entries, { ...opts, p: Math.min(1, (num + 0.5) / Math.max(1, left)) });
}

describe('global prune decision', () => {
  before(cpu);

  const a = group('a', 4, ['a'], 16);
  const b = group('b', 4, ['b1', 'b2'], 16);

  it('prunes every candidate up to the entry at position floor(p * alive filters), a group counting once per member BN', () => {
    const entries: GroupScores[] = [
      { group: a, scores: [0.1, 0.5, 0.3, 0.9], mask: ones(4) },
      { group: b, scores: [0.2, 0.05, 0.6, 0.4], mask: ones(4) },
    ];
    // 12 filters alive, p = 0.25: num = 3. Ranking (b twice): .05 .05 .1 .2 .2 .3 .4 .4 .5 -> entry 3 is .2
    const { decision, info } = globalPrune(entries, { p: 0.25, minimalRatio: 0.25, flopsEta: 0, minArea: 16 });
    assert.deepEqual(decision.groups, { a: [0], b: [0, 1] });
    assert.deepEqual(decision.layers, { a: ['a'], b: ['b1', 'b2'] });
    assert.equal(info.threshold, 0.2);
    assert.equal(info.left, 12);
    assert.equal(info.total, 12);
    assert.equal(info.toPrune, 5);
    assert.equal(info.totalPrunedRatio, 5 / 12);
  });

  it('keeps at least ceil(minimal_ratio * width) channels per group, the best ones, and never re-prunes', () => {
    assert.equal(minimalChannels(16, 0.1), 2);
    assert.equal(minimalChannels(10, 0.1), 1);
    assert.equal(minimalChannels(4, 0.01), 1);
    const entries: GroupScores[] = [
      { group: a, scores: [0.1, 0.5, 0.3, 0.9], mask: [1, 1, 1, 0] },
      { group: b, scores: [0.2, 0.05, 0.6, 0.4], mask: ones(4) },
    ];
    const { decision, info } = globalPrune(entries, { p: 1, minimalRatio: 0.5, flopsEta: 0, minArea: 16 });
    // a keeps its two best alive channels (1, 2); channel 3 was already pruned and is not pruned again.
    assert.deepEqual(decision.groups, { a: [0], b: [0, 1] });
    assert.equal(info.left, 3 + 8);
  });

  it('flops_eta subtracts eta/minArea * area * alive per member, so big feature maps go first', () => {
    const big = group('big', 2, ['big'], 64);
    const small = group('small', 2, ['s1', 's2'], 16);
    const entries: GroupScores[] = [
      { group: big, scores: [1.0, 2.0], mask: ones(2) },
      { group: small, scores: [0.9, 2.0], mask: ones(2) },
    ];
    const plain = globalPrune(entries, { p: 0, minimalRatio: 0.5, flopsEta: 0, minArea: 16 });
    assert.deepEqual(plain.decision.groups, { small: [0] });
    // big: 0.1/16 * 64 * 2 alive = 0.8; small: 0.1/16 * (16 + 16) * 2 alive = 0.4
    const adj = flopsAwareScores(entries[0], 0.1, 16);
    assert.ok(Math.abs(adj[0] - 0.2) < 1e-12 && Math.abs(adj[1] - 1.2) < 1e-12);
    const adjSmall = flopsAwareScores(entries[1], 0.1, 16);
    assert.ok(Math.abs(adjSmall[0] - 0.5) < 1e-12);
    const aware = globalPrune(entries, { p: 0, minimalRatio: 0.5, flopsEta: 0.1, minArea: 16 });
    assert.deepEqual(aware.decision.groups, { big: [0] });
  });

  it('round_to 1 is the per-channel ranking; round_to k prunes whole chunks of the lowest scores', () => {
    const entries: GroupScores[] = [
      { group: group('a', 8, ['a'], 16), scores: [0.1, 0.5, 0.3, 0.9, 0.2, 0.8, 0.7, 0.6], mask: ones(8) },
      { group: group('b', 6, ['b1', 'b2'], 16), scores: [0.05, 0.4, 0.6, 0.15, 0.35, 0.95], mask: [1, 1, 1, 1, 1, 0] },
    ];
    const opts = { minimalRatio: 0.25, flopsEta: 0, minArea: 16 };
    assert.deepEqual(pruneNum(entries, 3, { ...opts, roundTo: 1 }), pruneNum(entries, 3, opts));
    // k = 2. a: candidates by score 0 .1, 4 .2, 2 .3, 1 .5, 7 .6, 6 .7 -> chunks [0,4] (.2), [2,1] (.5), [7,6] (.7).
    // b: 5 alive, so its first chunk has 1 channel: [0] (.05), then [3,4] (.35), [1,2] would leave 0 < minimal 2.
    // Ranking by weight: [0]b .05 (2), [0,4]a .2 (2 -> 4 > 3): threshold .2.
    const two = pruneNum(entries, 3, { ...opts, roundTo: 2 });
    assert.deepEqual(two.decision.groups, { a: [0, 4], b: [0] });
    assert.equal(two.info.threshold, 0.2);
    assert.equal(two.info.toPrune, 2 + 2);
    // A num far below a chunk still prunes the lowest chunk: pruning never stalls on rounding.
    assert.deepEqual(pruneNum(entries, 0, { ...opts, roundTo: 4 }).decision.groups, { b: [0] });
  });

  it('round_to: every group keeps a multiple of k channels or its full width, losing its lowest scores', () => {
    const rng = new Rng(11);
    const widths = [16, 24, 40, 12, 64];
    const gs = widths.map((w, i) => group(`g${i}`, w, i % 2 ? [`g${i}a`, `g${i}b`] : [`g${i}`], 16));
    let partial = 0;
    for (const k of [4, 8]) {
      for (let trial = 0; trial < 20; trial++) {
        const masks = gs.map((g) => ones(g.width));
        const entries: GroupScores[] = gs.map((g, i) => ({ group: g, scores: Array.from({ length: g.width }, () => rng.next()), mask: masks[i] }));
        const num = Math.floor(rng.next() * 150);
        const { decision, info } = pruneNum(entries, num, { minimalRatio: 0.1, flopsEta: 0, minArea: 16, roundTo: k });
        let cut = 0;
        for (const [i, g] of gs.entries()) {
          const pruned = decision.groups[g.id] ?? [];
          const left = g.width - pruned.length;
          assert.ok(left === g.width || left % k === 0, `k=${k}, ${g.id}: ${left} of ${g.width} left`);
          assert.ok(left >= minimalChannels(g.width, 0.1));
          const score = (c: number) => entries[i].scores[c] as number;
          const kept = [...Array(g.width).keys()].filter((c) => !pruned.includes(c));
          for (const c of pruned) for (const d of kept) assert.ok(score(c) <= score(d), `${g.id}: pruned ${c} scores above kept ${d}`);
          cut += pruned.length * g.bns.length;
          if (pruned.length > 0) partial++;
        }
        assert.equal(info.toPrune, cut);
        const most = pruneNum(entries, 1e9, { minimalRatio: 0.1, flopsEta: 0, minArea: 16, roundTo: k }).info.toPrune;
        assert.ok(cut > num || cut === most, `k=${k}: ${cut} filters pruned for num ${num} (at most ${most})`);
      }
    }
    assert.ok(partial > 40, `${partial} groups cut`);
    assert.throws(() => pruneNum([], 1, { minimalRatio: 0.1, flopsEta: 0, minArea: 1, roundTo: 0 }), /roundTo must be a positive integer/);
  });

  it('min_filters: every group keeps at least max(k, ceil(minimal_ratio * width)) alive channels, or all it has; floor rounding', () => {
    const rng = new Rng(5);
    const gs = [2, 3, 4, 10, 16, 40].map((w, i) => group(`g${i}`, w, i % 2 ? [`g${i}a`, `g${i}b`] : [`g${i}`], 16));
    for (const k of [1, 3, 5]) {
      const entries: GroupScores[] = gs.map((g) => ({ group: g, scores: Array.from({ length: g.width }, () => rng.next()), mask: ones(g.width) }));
      // p = 1: every candidate goes, so what is left is exactly the minimum.
      const { decision } = globalPrune(entries, { p: 1, minimalRatio: 0.1, minFilters: k, flopsEta: 0, minArea: 16 });
      for (const g of gs) {
        const left = g.width - (decision.groups[g.id]?.length ?? 0);
        assert.equal(left, Math.min(g.width, Math.max(k, Math.ceil(0.1 * g.width))), `k=${k}, ${g.id} of width ${g.width}`);
      }
    }
    // minimal_rounding floor: the paper's max(1, int(width * minimal_ratio)), then raised to min_filters.
    assert.deepEqual(
      [16, 32, 64, 30, 5].map((w) => minimalChannels(w, 0.1, 1, 'floor')),
      [1, 3, 6, 3, 1],
    );
    assert.deepEqual(
      [16, 32, 64].map((w) => minimalChannels(w, 0.1)),
      [2, 4, 7],
    );
    assert.equal(minimalChannels(32, 0.1, 5, 'floor'), 5);
    const floorEntries: GroupScores[] = gs.map((g) => ({ group: g, scores: Array.from({ length: g.width }, () => rng.next()), mask: ones(g.width) }));
    const floored = globalPrune(floorEntries, { p: 1, minimalRatio: 0.1, minimalRounding: 'floor', flopsEta: 0, minArea: 16 }).decision;
    for (const g of gs) assert.equal(g.width - (floored.groups[g.id]?.length ?? 0), Math.max(1, Math.floor(g.width * 0.1)), `floor, ${g.id}`);
    // k = 1 is the default: the same decision with and without the option.
    const entries: GroupScores[] = gs.map((g) => ({ group: g, scores: Array.from({ length: g.width }, () => rng.next()), mask: ones(g.width) }));
    const opts = { p: 0.5, minimalRatio: 0.1, flopsEta: 0, minArea: 16 };
    assert.deepEqual(globalPrune(entries, { ...opts, minFilters: 1 }), globalPrune(entries, opts));
    for (const bad of [0, 1.5]) assert.throws(() => globalPrune(entries, { ...opts, minFilters: bad }), /minFilters must be a positive integer/);
  });

  it("countFrom: with distinct scores, single-BN groups, floor(countFrom * p) + 1 filters go; lagged over Ticks as the paper's loop", () => {
    const rng = new Rng(8);
    const gs = [40, 64, 96].map((w, i) => group(`g${i}`, w, [`g${i}`], 16));
    const masks = gs.map((g) => ones(g.width));
    const p = 0.1;
    // The paper's loop: left = total - pruned_filters, with pruned_filters = total - (the alive count taken before
    // the previous prune); before the first prune pruned_filters is 0.
    const total = 200;
    let prunedFilters = 0;
    const counts: number[] = [];
    const alive: number[] = [];
    let previous: number | undefined;
    for (let tick = 0; tick < 6; tick++) {
      const entries: GroupScores[] = gs.map((g, i) => ({ group: g, scores: Array.from({ length: g.width }, () => rng.next()), mask: masks[i] }));
      const paperLeft = total - prunedFilters;
      const { decision, info } = globalPrune(entries, { p, minimalRatio: 0.1, flopsEta: 0, minArea: 16, countFrom: previous });
      assert.equal(info.counted, paperLeft, `Tick ${tick + 1}`);
      assert.equal(info.num, Math.floor(paperLeft * p));
      assert.equal(info.toPrune, Math.floor(paperLeft * p) + 1, `Tick ${tick + 1}: int(left * p) + 1`);
      counts.push(info.toPrune);
      alive.push(info.left);
      for (const [i, g] of gs.entries()) for (const c of decision.groups[g.id] ?? []) masks[i][c] = 0;
      prunedFilters = total - info.left;
      previous = info.left;
    }
    // The lag matters: Ticks 1 and 2 both count from 200 (21 each); counting from the alive filters, Tick 2 prunes 18.
    assert.deepEqual(counts.slice(0, 2), [21, 21]);
    assert.equal(Math.floor(alive[1] * p) + 1, 18);
    // Without countFrom the count comes from the filters alive now.
    const entries: GroupScores[] = gs.map((g, i) => ({ group: g, scores: Array.from({ length: g.width }, () => rng.next()), mask: masks[i] }));
    const now = globalPrune(entries, { p, minimalRatio: 0.1, flopsEta: 0, minArea: 16 }).info;
    assert.deepEqual([now.counted, now.toPrune], [now.left, Math.floor(now.left * p) + 1]);
    assert.throws(() => globalPrune(entries, { p, minimalRatio: 0.1, flopsEta: 0, minArea: 16, countFrom: -1 }), /countFrom must be a non-negative integer/);
  });

  it('a decision round-trips through JSON and applies identically to a second model', () => {
    const shape = [8, 8, 3];
    const m1 = buildModel('cifar.resnet20', { seed: 1 });
    const m2 = buildModel('cifar.resnet20', { seed: 2 });
    addGates(m1);
    addGates(m2);
    const s = channelStructure(m1, shape);
    const rng = new Rng(9);
    const entries = prunableGroups(s).map((g) => ({ group: g, scores: randomImportance(g, rng), mask: groupMask(m1, g) }));
    const { decision, info } = globalPrune(entries, { p: 0.16, minimalRatio: 0.1, flopsEta: 0, minArea: 4 });
    const num = Math.floor(0.16 * info.left);
    assert.ok(num > 100, `${num} filters to prune of ${info.left}`);
    applyDecision(m1, decision);
    applyDecision(m2, parseMaskDecision(JSON.parse(JSON.stringify(decision))));
    let masked = 0;
    const bns2 = new Map(m2.namedModules());
    for (const [p, m] of m1.namedModules()) {
      if (!(m instanceof BatchNorm2d)) continue;
      const v1 = m.mask!.value.dataSync();
      const v2 = (bns2.get(p) as BatchNorm2d).mask!.value.dataSync();
      assert.deepEqual(v1, v2, p);
      masked += v1.filter((v) => v === 0).length;
    }
    assert.ok(masked >= num + 1, `${masked} BN channels masked, ${num} + 1 expected at least`);
    for (const g of prunableGroups(s)) groupMask(m1, g); // members of a group agree
  });

  it('rejects malformed decisions with BAD_DECISION and names the problem', () => {
    const m = buildModel('cifar.resnet20');
    addGates(m);
    const isBad = (e: Error & { code?: string }) => e.code === 'BAD_DECISION';
    assert.throws(() => parseMaskDecision({ kind: 'mask', groups: { x: [-1] }, layers: { x: ['bn1'] } }), isBad);
    for (const p of [-0.1, 1.5, NaN]) assert.throws(() => globalPrune([], { p, minimalRatio: 0.1, flopsEta: 0, minArea: 1 }), isBad, `p = ${p}`);
    assert.throws(() => parseMaskDecision({ kind: 'mask', groups: { x: [1] }, layers: {} }), isBad);
    assert.throws(() => applyDecision(m, { kind: 'mask', groups: { bn1: [16] }, layers: { bn1: ['bn1'] } }), /channel 16/);
    assert.throws(() => applyDecision(m, { kind: 'mask', groups: { q: [1] }, layers: { q: ['nope'] } }), /no BatchNorm2d at 'nope'/);
  });
});
