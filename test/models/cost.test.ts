import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/shared/backend.js';
import { modelCost } from '../../src/shared/graph/flops.js';
import { archSpec, buildModel } from '../../src/shared/models/registry.js';
import { CifarResNet } from '../../src/shared/models/resnet_cifar.js';
import { CifarVgg } from '../../src/shared/models/vgg_cifar.js';
import { ImageNetResNet } from '../../src/shared/models/resnet_imagenet.js';
import { BatchNorm2d, Conv2d, Linear } from '../../src/shared/nn/layers.js';

await initBackend('cpu');

// PyTorch's figures (conv + linear multiply-accumulates for one image; sum of p.numel() over parameters()).
const PYTORCH: [string, number, number][] = [
  ['cifar.resnet56', 125_747_840, 855_770],
  ['cifar.vgg16', 313_201_664, 14_728_266],
  ['resnet50', 4_089_184_256, 25_557_032],
  ['mnist.resnet20', 31_021_952, 272_186],
  // torchvision 0.14's mobilenet_v2() (width 1.0, 224x224): depthwise convs count Ho*Wo*C*k*k.
  ['mobilenet_v2', 300_774_272, 3_504_872],
];

for (const [arch, macs, params] of PYTORCH) {
  test(`${arch}: MACs and params equal PyTorch's`, () => {
    const model = buildModel(arch);
    try {
      const cost = modelCost(model, archSpec(arch).inputShape);
      assert.equal(cost.macs, macs);
      assert.equal(cost.params, params);
    } finally {
      model.dispose();
    }
  });
}

test('architectures carry PyTorch names', () => {
  const vgg = buildModel('cifar.vgg16');
  const r50 = buildModel('resnet50', { numClasses: 7 });
  try {
    const vggNames = vgg.namedParameters().map(([n]) => n);
    assert.deepEqual(vggNames.slice(0, 6), [
      'features.0.weight',
      'features.0.bias',
      'features.1.weight',
      'features.1.bias',
      'features.3.weight',
      'features.3.bias',
    ]);
    // 13 convs x 3 entries + 5 pools = 44 entries; the last conv is at 40, its BN at 41.
    assert.ok(vggNames.includes('features.40.weight') && vggNames.includes('features.41.bias'));
    assert.deepEqual(vggNames.slice(-2), ['classifier.weight', 'classifier.bias']);
    const r50Names = new Set([...r50.namedSlots()].map(([n]) => n));
    for (const n of [
      'conv1.weight',
      'bn1.running_var',
      'layer1.0.downsample.0.weight',
      'layer1.0.downsample.1.weight',
      'layer4.2.conv3.weight',
      'layer4.2.bn3.bias',
      'fc.weight',
      'fc.bias',
    ]) {
      assert.ok(r50Names.has(n), n);
    }
    assert.ok(!r50Names.has('layer1.1.downsample.0.weight'));
    assert.equal(r50.slot('fc.bias').value.shape[0], 7);
    // v1.5: the stride is on the 3x3 conv of the first block of layers 2-4.
    const l2 = (r50 as ImageNetResNet).layers[1].layers[0] as unknown as { conv1: Conv2d; conv2: Conv2d };
    assert.equal(l2.conv1.stride, 1);
    assert.equal(l2.conv2.stride, 2);
  } finally {
    vgg.dispose();
    r50.dispose();
  }
});

const range = (n: number, step = 1) => Array.from({ length: n }, (_, i) => i * step);

test('MACs and params follow pruned widths (ResNet-20 on MNIST, by hand)', () => {
  const model = buildModel('mnist.resnet20') as CifarResNet;
  try {
    // Block layer1.0: conv1 16 -> 16 keeps 5 filters; its BN and conv2's inputs follow.
    const b = model.layers[0].layers[0] as unknown as { conv1: Conv2d; bn1: BatchNorm2d; conv2: Conv2d };
    b.conv1.keepOutputChannels(range(5, 3));
    b.bn1.keepChannels(range(5, 3));
    b.conv2.keepInputChannels(range(5, 3));
    // Block layer3.2 (64 channels at 7x7): conv1 keeps 10 filters.
    const c = model.layers[2].layers[2] as unknown as { conv1: Conv2d; bn1: BatchNorm2d; conv2: Conv2d };
    c.conv1.keepOutputChannels(range(10));
    c.bn1.keepChannels(range(10));
    c.conv2.keepInputChannels(range(10));
    const cost = modelCost(model, [28, 28, 1]);
    // layer1 runs at 28x28 with 3x3 kernels: conv1 loses (16-5)*16*9 MACs per pixel and conv2 as many.
    const lost1 = 2 * 28 * 28 * 9 * 16 * (16 - 5);
    // layer3 runs at 7x7 with 64 channels.
    const lost3 = 2 * 7 * 7 * 9 * 64 * (64 - 10);
    assert.equal(cost.macs, 31_021_952 - lost1 - lost3);
    // Params: conv weights as MACs per pixel, plus 2 BN params per removed channel.
    const lostP = 2 * 9 * 16 * 11 + 2 * 11 + 2 * 9 * 64 * 54 + 2 * 54;
    assert.equal(cost.params, 272_186 - lostP);
  } finally {
    model.dispose();
  }
});

test('MACs and params follow pruned widths (VGG-16: conv, BN and classifier inputs)', () => {
  const model = buildModel('cifar.vgg16') as CifarVgg;
  try {
    const f = model.features.layers;
    // features.0 (3 -> 64 at 32x32) keeps 20 filters; features.3 reads 20 of its 64 inputs.
    (f[0] as Conv2d).keepOutputChannels(range(20));
    (f[1] as BatchNorm2d).keepChannels(range(20));
    (f[3] as Conv2d).keepInputChannels(range(20));
    // The last conv (features.40, 512 -> 512 at 2x2) keeps 100; the classifier reads those 100.
    (f[40] as Conv2d).keepOutputChannels(range(100));
    (f[41] as BatchNorm2d).keepChannels(range(100));
    (model.classifier as Linear).keepInputChannels(range(100));
    const cost = modelCost(model, [32, 32, 3]);
    const want =
      313_201_664 -
      32 * 32 * 9 * 3 * 44 - // features.0 outputs
      32 * 32 * 9 * 64 * 44 - // features.3 inputs
      2 * 2 * 9 * 512 * 412 - // features.40 outputs
      412 * 10; // classifier inputs
    assert.equal(cost.macs, want);
    const wantP = 14_728_266 - (9 * 3 * 44 + 44) - 2 * 44 - 9 * 64 * 44 - (9 * 512 * 412 + 412) - 2 * 412 - 412 * 10;
    assert.equal(cost.params, wantP);
    // Layer-by-layer figures are part of the answer too.
    assert.equal(cost.layers.find((l) => l.path === 'features.3')?.macs, 32 * 32 * 9 * 20 * 64);
  } finally {
    model.dispose();
  }
});

test('tracing allocates no tensors', () => {
  const model = buildModel('cifar.resnet56');
  const before = tf.memory().numTensors;
  modelCost(model, [32, 32, 3]);
  assert.equal(tf.memory().numTensors, before);
  model.dispose();
});
