import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { buildModel } from '../../src/shared/models/registry.js';
import { BatchNorm2d, Conv2d, GlobalAvgPool, Linear } from '../../src/shared/nn/layers.js';
import { Module, type Ops } from '../../src/shared/nn/module.js';
import { channelStructure, prunableGroups } from '../../src/shared/pruning/groups.js';
import { Rng } from '../../src/shared/rng.js';
import { cpu } from './helpers.js';

/** conv -> bn -> relu, then a residual add of the raw conv output: the add's value bypasses the BN. */
class RawShortcut extends Module {
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm2d;
  readonly pool = new GlobalAvgPool();
  readonly fc: Linear;
  constructor(rng: Rng) {
    super();
    this.conv1 = this.addChild('conv1', new Conv2d(1, 4, 3, rng, { padding: 1 }));
    this.bn1 = this.addChild('bn1', new BatchNorm2d(4));
    this.conv2 = this.addChild('conv2', new Conv2d(4, 4, 3, rng, { padding: 1 }));
    this.bn2 = this.addChild('bn2', new BatchNorm2d(4));
    this.addChild('pool', this.pool);
    this.fc = this.addChild('fc', new Linear(4, 2, rng));
  }
  apply<T>(x: T, F: Ops<T>): T {
    const a = this.conv1.apply(x, F);
    const h = F.relu(this.bn1.apply(a, F));
    const y = F.add(this.bn2.apply(this.conv2.apply(h, F), F), a);
    return this.fc.apply(F.flatten(this.pool.apply(y, F)), F);
  }
}

describe('channel groups', () => {
  before(cpu);

  it('mnist.resnet20 (traced at 28x28): residual streams merge per stage, block interiors stay alone', () => {
    const s = channelStructure(buildModel('mnist.resnet20'), [28, 28, 1]);
    const groups = prunableGroups(s);
    assert.equal(groups.length, 3 + 9);
    const byId = new Map(groups.map((g) => [g.id, g]));
    // The same groups the paper's ResNet-56 notebook assigns by hand.
    assert.deepEqual(byId.get('bn1')!.bns, ['bn1', 'layer1.0.bn2', 'layer1.1.bn2', 'layer1.2.bn2']);
    assert.deepEqual(byId.get('layer2.0.bn2')!.bns, ['layer2.0.bn2', 'layer2.0.shortcut.1', 'layer2.1.bn2', 'layer2.2.bn2']);
    assert.deepEqual(byId.get('layer2.0.bn2')!.producers, ['layer2.0.conv2', 'layer2.0.shortcut.0', 'layer2.1.conv2', 'layer2.2.conv2']);
    assert.deepEqual(byId.get('layer3.0.bn2')!.consumers, ['layer3.1.conv1', 'layer3.2.conv1', 'linear']);
    assert.deepEqual(byId.get('layer1.1.bn1')!, {
      id: 'layer1.1.bn1',
      width: 16,
      bns: ['layer1.1.bn1'],
      areas: [28 * 28],
      producers: ['layer1.1.conv1'],
      depthwise: [],
      consumers: ['layer1.1.conv2'],
      slices: {},
      prunable: true,
    });
    assert.deepEqual(byId.get('layer3.0.bn2')!.areas, [49, 49, 49, 49]);
    const blocked = s.groups.filter((g) => !g.prunable).map((g) => [g.id, g.blockReason]);
    assert.deepEqual(blocked, [
      ['@input', 'it is the network input'],
      ['@linear', 'it is the network output'],
    ]);
    // Every BN is in exactly one group.
    const all = s.groups.flatMap((g) => g.bns);
    assert.equal(new Set(all).size, all.length);
    assert.equal(all.length, 19 + 2);
  });

  it('a value that reaches a consumer without passing a BN makes its group unprunable', () => {
    const s = channelStructure(new RawShortcut(new Rng(1)), [6, 6, 1]);
    const g = s.groups.find((x) => x.bns.includes('bn2'))!;
    assert.deepEqual(g.bns, ['bn1', 'bn2']);
    assert.equal(g.prunable, false);
    assert.match(g.blockReason!, /'fc' reads it without a BN/);
    assert.deepEqual(prunableGroups(s), []);
  });
});
