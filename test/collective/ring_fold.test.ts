import assert from 'node:assert/strict';
import { test } from 'node:test';
import { foldInPlace } from '../../src/shared/collective/ring_fold.js';
import { randomArray } from '../helpers.js';

/** The scalar reference: one element at a time, each operation rounded to float32. */
function scalarFold(v: Float32Array, at: number, got: Float32Array, count: number): void {
  for (let i = 0; i < got.length; i++) v[at + i] = Math.fround(Math.fround(got[i] + v[at + i]) / count);
}

const bits = (a: Float32Array) => new Uint32Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));

test("foldInPlace gives the scalar loop's bits at edge lengths (0-9, around the unroll, large), offsets and counts, touching nothing else", () => {
  for (const n of [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1001, 4099]) {
    for (const at of [0, 1, 3]) {
      for (const count of [1, 3, 256, 0.5]) {
        const got = randomArray(n, n * 7 + at + 1, 1e3);
        const base = randomArray(n + at + 2, n * 13 + at + 2, 1e-2);
        const want = base.slice();
        scalarFold(want, at, got, count);
        const v = base.slice();
        const probe = foldInPlace(v, at, got, count);
        assert.equal(probe, 0, `n=${n} at=${at} count=${count}`);
        assert.deepEqual(bits(v), bits(want), `n=${n} at=${at} count=${count}`);
      }
    }
  }
});

test('count 1 is a plain float32 addition (x / 1 is x): the bits of got + v rounded once', () => {
  const got = randomArray(999, 5, 1e5);
  const v = randomArray(999, 6, 1e-5);
  const want = Float32Array.from(v, (x, i) => got[i] + x);
  foldInPlace(v, 0, got, 1);
  assert.deepEqual(bits(v), bits(want));
});

test('the probe is NaN for a NaN or an infinity received or held, and for a float32 overflow of the sum (finite in float64)', () => {
  for (const n of [1, 4, 7, 64]) {
    for (const k of [0, n - 1, Math.floor(n / 2)]) {
      const cases: [string, (got: Float32Array, v: Float32Array) => void][] = [
        ['NaN received', (g) => (g[k] = NaN)],
        ['infinity received', (g) => (g[k] = -Infinity)],
        ['infinity held', (_, v) => (v[k] = Infinity)],
        ['overflow', (g, v) => ((g[k] = 3e38), (v[k] = 3e38))],
      ];
      for (const [what, spoil] of cases) {
        const got = randomArray(n, 1, 1);
        const v = randomArray(n, 2, 1);
        spoil(got, v);
        assert.ok(Number.isNaN(foldInPlace(v, 0, got, 1)), `${what} at ${k} of ${n}`);
        assert.ok(!Number.isFinite(v[k]), `${what}: the stored value at ${k} is not finite`);
      }
    }
  }
});
