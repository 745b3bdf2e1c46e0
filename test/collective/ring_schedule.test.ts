import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ringAverage, ownedSegment, ringSegments, summationOrder } from './reference_reductions.js';
import { mod, receiveSchedule, receivedSegment, segmentPieces, sentSegment } from '../../src/shared/collective/ring_schedule.js';

test('segments tile the vector in order, sizes differing by at most 1; pieces tile each segment', () => {
  for (const n of [1, 2, 3, 4, 5, 8]) {
    for (const size of [0, 1, 2, 3, 4, 5, 7, 10, 37, 1000]) {
      const segs = ringSegments(size, n);
      assert.equal(segs.length, n);
      let at = 0;
      for (const [s, e] of segs) {
        assert.equal(s, at);
        at = e;
      }
      assert.equal(at, size);
      const lens = segs.map(([s, e]) => e - s);
      assert.ok(Math.max(...lens) - Math.min(...lens) <= 1, `${size} over ${n}: ${lens}`);
      for (const seg of segs) {
        const pieces = segmentPieces(seg, 3);
        assert.equal(
          pieces.reduce((a, [s, e]) => a + e - s, 0),
          seg[1] - seg[0],
        );
        assert.ok(pieces.every(([s, e]) => e - s >= 1 && e - s <= 3));
      }
    }
  }
});

test('simulated symbolically, the schedule leaves each owner with every rank once, in summationOrder, and gathers all', () => {
  for (const n of [1, 2, 3, 4, 5, 7]) {
    // held[k][s]: the ranks whose values rank k holds summed for segment s, in addition order.
    const held = Array.from({ length: n }, (_, k) => Array.from({ length: n }, () => [k]));
    for (let step = 0; step < n - 1; step++) {
      const sent = held.map((h, k) => [...h[sentSegment('reduce_scatter', k, step, n)]]);
      for (let k = 0; k < n; k++) {
        const s = receivedSegment('reduce_scatter', k, step, n);
        assert.equal(s, sentSegment('reduce_scatter', mod(k - 1, n), step, n));
        held[k][s] = [...sent[mod(k - 1, n)], ...held[k][s]];
      }
    }
    const final = Array.from({ length: n }, () => new Array<number[] | undefined>(n));
    for (let k = 0; k < n; k++) {
      const s = ownedSegment(k, n);
      assert.deepEqual(held[k][s], summationOrder(s, n), `n=${n} rank ${k} segment ${s}`);
      final[k][s] = held[k][s];
    }
    for (let step = 0; step < n - 1; step++) {
      const sent = final.map((f, k) => f[sentSegment('all_gather', k, step, n)]);
      for (let k = 0; k < n; k++) {
        const s = receivedSegment('all_gather', k, step, n);
        assert.ok(sent[mod(k - 1, n)], `n=${n}: rank ${k - 1} sends segment ${s} at all-gather step ${step} before holding it`);
        final[k][s] = sent[mod(k - 1, n)];
      }
    }
    for (let k = 0; k < n; k++) for (let s = 0; s < n; s++) assert.deepEqual(final[k][s], summationOrder(s, n));
  }
});

test("receiveSchedule lists the predecessor's pieces in sending order, skipping empty segments", () => {
  // 7 elements over 4 ranks: segments [0,2) [2,4) [4,6) [6,7). Rank 2 receives from rank 1: reduce-scatter segments
  // 1, 0, 3, then all-gather segments 2, 1, 0; pieces of 1 element.
  const got = receiveSchedule(7, 4, 2, 1).map((s) => `${s.phase[0]}${s.step}.${s.piece}:${s.range[0]}-${s.range[1]}`);
  assert.deepEqual(got, ['r0.0:2-3', 'r0.1:3-4', 'r1.0:0-1', 'r1.1:1-2', 'r2.0:6-7', 'a0.0:4-5', 'a0.1:5-6', 'a1.0:2-3', 'a1.1:3-4', 'a2.0:0-1', 'a2.1:1-2']);
  // 2 elements over 4 ranks: segments 2 and 3 are empty and travel as no frame at all. Rank 0 receives from rank
  // 3: reduce-scatter segments 3, 2, 1, then all-gather segments 0, 3, 2.
  assert.deepEqual(
    receiveSchedule(2, 4, 0, 8).map((s) => `${s.phase[0]}${s.step}:${s.range}`),
    ['r2:1,2', 'a0:0,1'],
  );
  assert.deepEqual(receiveSchedule(0, 3, 1, 4), []);
  assert.deepEqual(receiveSchedule(5, 1, 0, 2), []);
});

test('ringAverage adds each segment in summationOrder in float32 and divides once', () => {
  const f = Math.fround;
  // 3 ranks, 3 elements: segment s = [s, s+1), summed from rank s on.
  const g = [new Float32Array([1e8, 1, 3]), new Float32Array([1, 1e8, 5]), new Float32Array([-1e8, 7, 1e-3])];
  const out = ringAverage(g, 3);
  const expect = [0, 1, 2].map((s) => {
    const o = summationOrder(s, 3);
    return f(f(f(g[o[0]][s] + g[o[1]][s]) + g[o[2]][s]) / 3);
  });
  assert.deepEqual([...out], expect);
  // Segment 0 starts 1e8 + 1 (rounds back to 1e8), then - 1e8: 0, where (1e8 - 1e8) + 1 would give 1/3.
  assert.equal(out[0], 0);
  assert.deepEqual([...ringAverage([new Float32Array([3, 6])], 3)], [1, 2]);
});
