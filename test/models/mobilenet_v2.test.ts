import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs-core';
import { modelCost } from '../../src/shared/graph/flops.js';
import { exportTorchState } from '../../src/shared/io/torch_state.js';
import { loadModel, serializeModel } from '../../src/shared/io/model_file.js';
import { parseSafetensors } from '../../src/shared/io/safetensors.js';
import { makeDivisible } from '../../src/shared/models/mobilenet_v2.js';
import { buildModel, checkModelFitsData, modelInputShape } from '../../src/shared/models/registry.js';
import { DepthwiseConv2d } from '../../src/shared/nn/layers.js';
import type { Module } from '../../src/shared/nn/module.js';
import { effectiveCost } from '../../src/shared/pruning/cost.js';
import { groupMask } from '../../src/shared/pruning/gates.js';
import { channelStructure, prunableGroups } from '../../src/shared/pruning/groups.js';
import { melt } from '../../src/shared/pruning/melt.js';
import { Rng } from '../../src/shared/rng.js';
import { Replica } from '../../src/shared/train/replica.js';
import { cpu, evalLogits, gateAndPruneRandomly, maxAbsDiff, randomImages, randomiseBatchNorms } from '../pruning/helpers.js';
import { gdpModel } from './gdp_model.js';

const SMALL = { widthMult: 0.35, inputSize: 32, numClasses: 10 };
const SHAPE = modelInputShape('mobilenet_v2', SMALL);

const code = (c: string, text: RegExp) => (e: Error & { code?: string }) => e.code === c && text.test(e.message);

describe('mobilenet_v2', () => {
  before(cpu);

  it("gdp-model flops gives torchvision 0.14's MACs and parameters at width 1.0, 224x224", async () => {
    const r = await gdpModel('flops', '--arch', 'mobilenet_v2', '--json', '--backend', 'cpu');
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.deepEqual([out.macs, out.params, out.inputShape], [300_774_272, 3_504_872, [224, 224, 3]]);
  });

  it('rounds widths as torchvision does and keeps its parameter names and PyTorch layouts', () => {
    assert.deepEqual(
      [makeDivisible(32 * 0.35), makeDivisible(16 * 0.35), makeDivisible(24 * 0.35), makeDivisible(320 * 0.35), makeDivisible(1280 * 0.35)],
      [16, 8, 8, 112, 448],
    );
    assert.equal(makeDivisible(10), 16, 'one multiple up when rounding loses over 10%');
    const model = buildModel('mobilenet_v2', SMALL);
    try {
      const state = exportTorchState(model);
      const shape = (n: string) => state.get(n)?.shape;
      assert.deepEqual(shape('features.0.0.weight'), [16, 3, 3, 3]);
      assert.deepEqual(shape('features.0.1.running_var'), [16]);
      // t = 1: conv.0 is the depthwise conv-BN-ReLU6, conv.1 the projection, conv.2 its BN.
      assert.deepEqual(shape('features.1.conv.0.0.weight'), [16, 1, 3, 3]);
      assert.deepEqual(shape('features.1.conv.1.weight'), [8, 16, 1, 1]);
      assert.deepEqual(shape('features.1.conv.2.weight'), [8]);
      // t = 6: expansion 8 -> 48, depthwise, projection 48 -> 8.
      assert.deepEqual(shape('features.2.conv.0.0.weight'), [48, 8, 1, 1]);
      assert.deepEqual(shape('features.2.conv.1.0.weight'), [48, 1, 3, 3]);
      assert.deepEqual(shape('features.2.conv.2.weight'), [8, 48, 1, 1]);
      assert.deepEqual(shape('features.18.0.weight'), [1280, 112, 1, 1]);
      assert.deepEqual(shape('classifier.1.weight'), [10, 1280]);
      assert.equal(state.has('classifier.0.weight'), false);
      // Depthwise layout: PyTorch's [c, 0, i, j] is tfjs' [i, j, c, 0].
      const dw = [...model.namedModules()].find(([p]) => p === 'features.2.conv.1.0')![1] as DepthwiseConv2d;
      const w = dw.weight.value.arraySync() as number[][][][];
      const t = state.get('features.2.conv.1.0.weight')!.data;
      for (const [c, i, j] of [
        [0, 0, 0],
        [5, 1, 2],
        [47, 2, 1],
      ])
        assert.equal(t[c * 9 + i * 3 + j], w[i][j][c][0]);
    } finally {
      model.dispose();
    }
  });

  it('width and input size come from the model options; fixed architectures refuse them', () => {
    assert.deepEqual(SHAPE, [32, 32, 3]);
    assert.throws(() => buildModel('cifar.resnet20', { widthMult: 0.5 }), code('BAD_CONFIG', /model.width_mult .*'cifar.resnet20' has fixed widths/));
    assert.throws(() => modelInputShape('resnet50', { inputSize: 128 }), code('BAD_CONFIG', /model.input_size .*224x224/));
    const config = { model: { name: 'mobilenet_v2', num_class: 10, input_size: 32 }, data: { type: 'cifar10' } };
    assert.doesNotThrow(() => checkModelFitsData(config, { shape: [32, 32, 3], numClasses: 10 }));
    assert.throws(
      () => checkModelFitsData({ ...config, model: { ...config.model, input_size: 64 } }, { shape: [32, 32, 3], numClasses: 10 }),
      code('BAD_CONFIG', /^model.input_size: 'mobilenet_v2' takes 64x64x3/),
    );
  });

  it('groups: an inverted residual ties expansion, depthwise conv and both BNs; projections join the residual add', () => {
    const model = buildModel('mobilenet_v2', SMALL);
    const s = channelStructure(model, SHAPE);
    const byId = new Map(s.groups.map((g) => [g.id, g]));
    const inner = byId.get('features.3.conv.0.1')!;
    assert.deepEqual(
      [inner.producers, inner.bns, inner.depthwise, inner.consumers],
      [['features.3.conv.0.0'], ['features.3.conv.0.1', 'features.3.conv.1.1'], ['features.3.conv.1.0'], ['features.3.conv.2']],
    );
    // features.2 changes the stride, features.3 adds its input back: one space for both projections.
    const res = byId.get('features.2.conv.3')!;
    assert.deepEqual(res.producers, ['features.2.conv.2', 'features.3.conv.2']);
    assert.deepEqual(res.consumers, ['features.3.conv.0.0', 'features.4.conv.0.0']);
    // The stem's space runs through features.1's depthwise conv (t = 1, no expansion).
    assert.deepEqual(byId.get('features.0.1')!.depthwise, ['features.1.conv.0.0']);
    assert.equal(prunableGroups(s).length, s.groups.length - 2, 'only the input and the logits are whole');
    model.dispose();
  });

  it('width 0.35 at 32x32: a random prune melts to the same logits (1e-5) and the predicted cost', () => {
    const rng = new Rng(8);
    const model = buildModel('mobilenet_v2', { ...SMALL, seed: 8 });
    randomiseBatchNorms(model, rng);
    gateAndPruneRandomly(model, SHAPE, rng, 0.4);
    const s = channelStructure(model, SHAPE);
    const cut = prunableGroups(s).filter((g) => groupMask(model, g).some((v) => v === 0)).length;
    assert.ok(cut > 20, `${cut} groups lost channels`);
    const predicted = effectiveCost(model, s);
    const x = randomImages(2, SHAPE, rng);
    const masked = evalLogits(model, x);
    melt(model, SHAPE);
    const melted = evalLogits(model, x);
    assert.ok(maxAbsDiff(masked, melted) <= 1e-5, `max |masked - melted| = ${maxAbsDiff(masked, melted)}`);
    const after = modelCost(model, SHAPE);
    assert.deepEqual([after.macs, after.params], [predicted.macs, predicted.params]);
    assert.ok(after.macs < 0.8 * modelCost(buildModel('mobilenet_v2', SMALL), SHAPE).macs);
    // A melted file loads without the config: widths from the tensors, depthwise ones included, input size recorded.
    const loaded = loadModel(parseSafetensors(serializeModel(model, { arch: 'mobilenet_v2', numClasses: 10, inputSize: 32 })));
    assert.deepEqual(loaded.inputShape, [32, 32, 3]);
    assert.deepEqual(evalLogits(loaded.model, x), melted);
    const foreign = parseSafetensors(serializeModel(model, { arch: 'mobilenet_v2', numClasses: 10, inputSize: 0 }));
    assert.throws(() => loadModel(foreign, {}, 'm.safetensors'), code('BAD_METADATA', /m.safetensors: metadata field 'input_size' must be a positive integer/));
    x.dispose();
    loaded.model.dispose();
    model.dispose();
  });

  it('trains: one gradient step reaches every parameter (depthwise filters included) and lowers the loss', () => {
    const model: Module = buildModel('mobilenet_v2', { ...SMALL, seed: 2 });
    const replica = new Replica(model, SHAPE);
    const layout = replica.layout('all');
    const n = 4;
    const rng = new Rng(4);
    const batch = { x: Float32Array.from({ length: n * 32 * 32 * 3 }, () => rng.normal()), y: Int32Array.from([1, 3, 5, 7]), n };
    const tensors = tf.memory().numTensors;
    const { grad, stats } = replica.gradients(batch, layout);
    assert.equal(tf.memory().numTensors, tensors, 'the step leaks no tensors');
    assert.ok(grad.every(Number.isFinite));
    for (const [i, name] of layout.names.entries()) {
      if (!name.endsWith('.weight')) continue;
      const size = layout.shapes[i].reduce((a, b) => a * b, 1);
      const part = grad.subarray(layout.offsets[i], layout.offsets[i] + size);
      assert.ok(
        part.some((v) => v !== 0),
        `${name} gets a gradient`,
      );
    }
    assert.ok(layout.names.includes('features.2.conv.1.0.weight'));
    // A small step: at 32x32 the last stages are 1x1 maps whose BNs normalise 4 values, so the loss is very steep.
    replica.applyGradient(
      layout,
      grad.map((v) => v / n),
      { lr: 1e-5, momentum: 0, weightDecay: 0, nesterov: false },
    );
    const next = replica.gradients(batch, layout).stats;
    assert.ok(next.lossSum < stats.lossSum, `loss sum ${stats.lossSum} -> ${next.lossSum}`);
    model.dispose();
  });
});
