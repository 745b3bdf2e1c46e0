import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sgdrLr, stepLr, triangularLr } from '../../src/shared/train/schedule.js';

test('steplr: the first [max_epoch, lr] with epoch <= max_epoch, else the last', () => {
  const t = [[5, 0.1], [8, 0.01], [10, 0.001]] as const;
  assert.deepEqual([1, 5, 6, 8, 9, 10, 11].map((e) => stepLr(e, t)), [0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.001]);
});

test('sgdr: cosine from lr_max to lr_min, period doubling at each restart, after warm-up', () => {
  const o = { lr_min: 0.001, lr_max: 0.1, restart_period: 10, warm_up: 0 };
  assert.ok(Math.abs(sgdrLr(0, o) - 0.1) < 1e-12);
  assert.ok(Math.abs(sgdrLr(5, o) - 0.0505) < 1e-12);
  assert.ok(Math.abs(sgdrLr(10, o) - 0.001) < 1e-12);
  // Restart after 10 epochs; the next period is 20, so epoch 20 is a quarter into it.
  assert.ok(Math.abs(sgdrLr(11, o) - (0.001 + 0.099 * 0.5 * (1 + Math.cos(Math.PI / 20)))) < 1e-12);
  assert.ok(Math.abs(sgdrLr(20, o) - (0.001 + 0.099 * 0.5 * (1 + Math.cos(Math.PI / 2)))) < 1e-12);
  assert.equal(sgdrLr(12, { ...o, warm_up: 2 }), sgdrLr(10, o));
});

test('triangular: lr_min -> lr_max at half of the 1-based steps -> lr_min at the last', () => {
  assert.equal(triangularLr(0, 4, 0.001, 0.01), 0.001);
  assert.ok(Math.abs(triangularLr(1, 4, 0.001, 0.01) - 0.0055) < 1e-12);
  assert.equal(triangularLr(2, 4, 0.001, 0.01), 0.01);
  assert.ok(Math.abs(triangularLr(3, 4, 0.001, 0.01) - 0.0055) < 1e-12);
  assert.ok(Math.abs(triangularLr(4, 4, 0.001, 0.01) - 0.001) < 1e-12);
  // One step per epoch (smoke runs): the only step is the last, at lr_min.
  assert.equal(triangularLr(1, 1, 0.001, 0.01), 0.001);
});
