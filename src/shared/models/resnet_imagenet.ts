import { BatchNorm2d, Conv2d, GlobalAvgPool, Linear, MaxPool2d } from '../nn/layers.js';
import { Module, Sequential, type Ops } from '../nn/module.js';
import type { Rng } from '../rng.js';

/** torchvision's Bottleneck (v1.5: the stride sits on the 3x3 conv2), expansion 4, names conv1..bn3, downsample.0/.1. */
export class Bottleneck extends Module {
  static readonly expansion = 4;
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm2d;
  readonly conv3: Conv2d;
  readonly bn3: BatchNorm2d;
  readonly downsample?: Sequential;
  constructor(inPlanes: number, planes: number, stride: number, rng: Rng) {
    super();
    const out = planes * Bottleneck.expansion;
    this.conv1 = this.addChild('conv1', new Conv2d(inPlanes, planes, 1, rng));
    this.bn1 = this.addChild('bn1', new BatchNorm2d(planes));
    this.conv2 = this.addChild('conv2', new Conv2d(planes, planes, 3, rng, { stride, padding: 1 }));
    this.bn2 = this.addChild('bn2', new BatchNorm2d(planes));
    this.conv3 = this.addChild('conv3', new Conv2d(planes, out, 1, rng));
    this.bn3 = this.addChild('bn3', new BatchNorm2d(out));
    if (stride !== 1 || inPlanes !== out) {
      this.downsample = this.addChild('downsample', new Sequential([new Conv2d(inPlanes, out, 1, rng, { stride }), new BatchNorm2d(out)]));
    }
  }
  apply<T>(x: T, F: Ops<T>): T {
    let y = F.relu(this.bn1.apply(this.conv1.apply(x, F), F));
    y = F.relu(this.bn2.apply(this.conv2.apply(y, F), F));
    y = this.bn3.apply(this.conv3.apply(y, F), F);
    return F.relu(F.add(y, this.downsample ? this.downsample.apply(x, F) : x));
  }
}

/** ImageNet ResNet with Bottleneck blocks in torchvision's layout and names (conv1, bn1, maxpool, layer1..4, fc). */
export class ImageNetResNet extends Module {
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly maxpool: MaxPool2d;
  readonly layers: Sequential[];
  readonly avgpool: GlobalAvgPool;
  readonly fc: Linear;
  constructor(blocks: readonly number[], numClasses: number, rng: Rng, inChannels = 3) {
    super();
    this.conv1 = this.addChild('conv1', new Conv2d(inChannels, 64, 7, rng, { stride: 2, padding: 3 }));
    this.bn1 = this.addChild('bn1', new BatchNorm2d(64));
    this.maxpool = this.addChild('maxpool', new MaxPool2d(3, 2, 1));
    let inPlanes = 64;
    this.layers = blocks.map((n, stage) => {
      const planes = 64 * 2 ** stage;
      const list: Bottleneck[] = [];
      for (let b = 0; b < n; b++) {
        list.push(new Bottleneck(inPlanes, planes, b === 0 && stage > 0 ? 2 : 1, rng));
        inPlanes = planes * Bottleneck.expansion;
      }
      return this.addChild(`layer${stage + 1}`, new Sequential(list));
    });
    this.avgpool = this.addChild('avgpool', new GlobalAvgPool());
    this.fc = this.addChild('fc', new Linear(inPlanes, numClasses, rng));
  }
  apply<T>(x: T, F: Ops<T>): T {
    let y = this.maxpool.apply(F.relu(this.bn1.apply(this.conv1.apply(x, F), F)), F);
    for (const l of this.layers) y = l.apply(y, F);
    return this.fc.apply(F.flatten(this.avgpool.apply(y, F)), F);
  }
}
