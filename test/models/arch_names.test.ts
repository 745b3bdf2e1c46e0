import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ARCH_NAMES } from '../../src/shared/models/arch_names.js';
import { ARCHITECTURES } from '../../src/shared/models/registry.js';

// gdp-model's help lists ARCH_NAMES (the registry would load TF.js); archSpec's error lists the registry's keys.
test('the architecture names the command lines list are the registry, in its order', () => {
  assert.deepEqual(Object.keys(ARCHITECTURES), [...ARCH_NAMES]);
});
