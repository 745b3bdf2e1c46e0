import assert from 'node:assert/strict';
import { test } from 'node:test';
import { reduceRange } from '../../src/coordinator/reduce.js';

/** The definition: per element, a float32 running sum in worker order, then a float32 division. */
function reference(grads: Float32Array[], count: number): Float32Array {
  const f = Math.fround;
  const out = new Float32Array(grads[0].length);
  for (let i = 0; i < out.length; i++) {
    let acc = 0;
    for (const g of grads) acc = f(acc + g[i]);
    out[i] = f(acc / count);
  }
  return out;
}

test('reduceRange gives the per-element float32 arithmetic bit for bit, for 1 to 5 workers and split ranges', () => {
  const size = 4099;
  for (const workers of [1, 2, 3, 5]) {
    // Mixed magnitudes, so that the summation order shows in the low bits.
    const grads = Array.from({ length: workers }, (_, w) => Float32Array.from({ length: size }, (_, i) => Math.sin(i * 0.7 + w) * 10 ** ((i % 9) - 4)));
    const want = reference(grads, 37);
    const whole = new Float32Array(size);
    reduceRange(grads, whole, 0, size, 37);
    assert.deepEqual(new Uint32Array(whole.buffer), new Uint32Array(want.buffer), `${workers} workers`);
    const split = new Float32Array(size);
    reduceRange(grads, split, 0, 1000, 37);
    reduceRange(grads, split, 1000, size, 37);
    assert.deepEqual(new Uint32Array(split.buffer), new Uint32Array(want.buffer), `${workers} workers, two ranges`);
  }
});
