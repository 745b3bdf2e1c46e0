import { GdpError } from '../errors.js';
import { BatchNorm2d, Conv2d, GlobalAvgPool, Linear } from '../nn/layers.js';
import { Module, Sequential, type Ops } from '../nn/module.js';
import type { Rng } from '../rng.js';

/** CIFAR BasicBlock with option-B shortcuts (1x1 conv + BN when the shape changes), as in the paper's code. */
export class BasicBlock extends Module {
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm2d;
  readonly shortcut: Sequential;
  constructor(inPlanes: number, planes: number, stride: number, rng: Rng) {
    super();
    this.conv1 = this.addChild('conv1', new Conv2d(inPlanes, planes, 3, rng, { stride, padding: 1 }));
    this.bn1 = this.addChild('bn1', new BatchNorm2d(planes));
    this.conv2 = this.addChild('conv2', new Conv2d(planes, planes, 3, rng, { padding: 1 }));
    this.bn2 = this.addChild('bn2', new BatchNorm2d(planes));
    const projection = stride !== 1 || inPlanes !== planes;
    this.shortcut = this.addChild('shortcut', new Sequential(projection ? [new Conv2d(inPlanes, planes, 1, rng, { stride }), new BatchNorm2d(planes)] : []));
  }
  apply<T>(x: T, F: Ops<T>): T {
    const out = F.relu(this.bn1.apply(this.conv1.apply(x, F), F));
    const res = this.bn2.apply(this.conv2.apply(out, F), F);
    return F.relu(F.add(res, this.shortcut.apply(x, F)));
  }
}

/** CIFAR-style ResNet (He et al. 2016, section 4.2): 3 stages of n BasicBlocks with 16/32/64 channels. */
export class CifarResNet extends Module {
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly layers: Sequential[];
  readonly pool: GlobalAvgPool;
  readonly linear: Linear;
  constructor(depth: number, numClasses: number, inChannels: number, rng: Rng) {
    super();
    if ((depth - 2) % 6 !== 0) throw new GdpError('INTERNAL', `a CIFAR ResNet's depth is 6n+2, got ${depth} (the registry names the depths)`);
    const n = (depth - 2) / 6;
    this.conv1 = this.addChild('conv1', new Conv2d(inChannels, 16, 3, rng, { padding: 1 }));
    this.bn1 = this.addChild('bn1', new BatchNorm2d(16));
    let inPlanes = 16;
    this.layers = [16, 32, 64].map((planes, stage) => {
      const blocks: BasicBlock[] = [];
      for (let b = 0; b < n; b++) {
        blocks.push(new BasicBlock(inPlanes, planes, b === 0 && stage > 0 ? 2 : 1, rng));
        inPlanes = planes;
      }
      return this.addChild(`layer${stage + 1}`, new Sequential(blocks));
    });
    this.pool = this.addChild('avgpool', new GlobalAvgPool());
    this.linear = this.addChild('linear', new Linear(64, numClasses, rng));
  }
  apply<T>(x: T, F: Ops<T>): T {
    let out = F.relu(this.bn1.apply(this.conv1.apply(x, F), F));
    for (const l of this.layers) out = l.apply(out, F);
    return this.linear.apply(F.flatten(this.pool.apply(out, F)), F);
  }
}
