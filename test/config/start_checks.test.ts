import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseConfig } from '../../src/shared/config/load.js';
import { GdpError } from '../../src/shared/errors.js';
import { archSpec, checkModelFitsData } from '../../src/shared/models/registry.js';

const BASE = {
  base: { task_name: 't' },
  model: { name: 'mnist.resnet20', num_class: 10 },
  train: { max_epoch: 1, steplr: [[1, 0.1]] },
  data: { type: 'mnist', batch_size: 8, test_batch_size: 8 },
  loss: { criterion: 'softmax' },
};

const code = (c: string, ...mention: string[]) => (e: unknown) => e instanceof GdpError && e.code === c && mention.every((m) => e.message.includes(m));

test('inputs that would fail a run later fail at start, naming the key', () => {
  assert.throws(() => parseConfig({ ...BASE, stages: ['train', 'prune'] }), code('BAD_CONFIG', "gbn: stages 'prune' and 'finetune' need a 'gbn' section"));
  assert.throws(() => parseConfig({ ...BASE, stages: ['finetune'] }), code('BAD_CONFIG', 'gbn'));
  assert.throws(() => parseConfig({ ...BASE, dist: { heartbeat_ms: 2000, heartbeat_timeout_ms: 5000 } }), code('BAD_CONFIG', 'dist.heartbeat_timeout_ms: heartbeat_timeout_ms must be at least 3 heartbeat_ms'));
  assert.equal(parseConfig(BASE).dist.heartbeat_timeout_ms, 30000);
  // Names of Object.prototype members are not architectures.
  for (const name of ['constructor', 'toString', '__proto__']) assert.throws(() => archSpec(name), code('UNKNOWN_ARCH', `'${name}'`));
});

test('the model must take the data: image shape and number of classes', () => {
  const c = parseConfig(BASE);
  assert.doesNotThrow(() => checkModelFitsData(c, { shape: [28, 28, 1], numClasses: 10 }));
  assert.throws(() => checkModelFitsData(c, { shape: [32, 32, 3], numClasses: 10 }), code('BAD_CONFIG', "model.name: 'mnist.resnet20' takes 28x28x1 images", '32x32x3'));
  assert.throws(() => checkModelFitsData(c, { shape: [28, 28, 1], numClasses: 100 }), code('BAD_CONFIG', 'model.num_class: 10 outputs', '100 classes'));
});
