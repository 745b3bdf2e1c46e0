import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/shared/backend.js';
import { loadModelFile } from '../../src/shared/io/model_file.js';
import { maxAbsDiff } from '../helpers.js';
import { predictLogits } from '../../src/shared/models/infer.js';
import { fixture, fixtureInputNhwc, fixtureLogits, hasFixture, INPUT_SHAPE_NHWC } from './fixture.js';

const skip = hasFixture ? false : 'the PyTorch fixture ../shared/fixtures/pytorch-resnet56 is absent';

const CASES = [
  ['baseline', 'resnet56_cifar10_baseline.safetensors', 'base'],
  ['gated 70%', 'resnet56_cifar10_gbn70.safetensors', 'gbn70'],
] as const;

for (const backend of ['wasm', 'cpu'] as const) {
  for (const [label, file, logits] of CASES) {
    test(`${backend}: the paper's ${label} ResNet-56 reproduces PyTorch's logits`, { skip }, async () => {
      await initBackend(backend);
      assert.equal(tf.getBackend(), backend);
      const { model, gated, numClasses } = await loadModelFile(fixture(file), { arch: 'cifar.resnet56' });
      try {
        assert.equal(gated, logits === 'gbn70');
        assert.equal(numClasses, 10);
        const before = tf.memory().numTensors;
        const got = predictLogits(model, await fixtureInputNhwc(), INPUT_SHAPE_NHWC);
        assert.equal(tf.memory().numTensors, before);
        const diff = maxAbsDiff(got, await fixtureLogits(logits));
        assert.ok(diff <= 1e-4, `max abs diff ${diff}`);
      } finally {
        model.dispose();
      }
    });
  }
}
