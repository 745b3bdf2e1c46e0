import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { initBackend, type BackendChoice } from '../../src/shared/backend.js';

const require = createRequire(import.meta.url);
const hasNative = (() => {
  try {
    require.resolve('@tensorflow/tfjs-node');
    return true;
  } catch {
    return false;
  }
})();

test('an unknown backend is refused with the allowed values', async () => {
  await assert.rejects(
    initBackend('gpu' as BackendChoice),
    (e: Error & { code?: string }) => e.code === 'BAD_FLAG' && /auto\|tensorflow\|wasm\|cpu/.test(e.message),
  );
});

test('asking for tensorflow without the optional package says how to install it', { skip: hasNative && 'tfjs-node is installed here' }, async () => {
  await assert.rejects(
    initBackend('tensorflow'),
    (e: Error & { code?: string }) => e.code === 'BACKEND_MISSING' && /npm install @tensorflow\/tfjs-node/.test(e.message),
  );
});

test('auto falls back to wasm when native TensorFlow is absent', { skip: hasNative && 'tfjs-node is installed here' }, async () => {
  const info = await initBackend('auto');
  assert.equal(info.name, 'wasm');
  assert.match(info.description, /wasm/);
});
