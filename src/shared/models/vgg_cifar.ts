import { AvgPool2d, BatchNorm2d, Conv2d, Linear, MaxPool2d, ReLU } from '../nn/layers.js';
import { Module, Sequential, type Ops } from '../nn/module.js';
import type { Rng } from '../rng.js';

/** Stage widths; 'M' is a 2x2 max pool. Same plan as the paper's CIFAR VGG. */
export const VGG_PLANS: Record<string, (number | 'M')[]> = {
  vgg11: [64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
  vgg13: [64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
  vgg16: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'],
  vgg19: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M'],
};

/**
 * CIFAR VGG with BatchNorm: `features` is one Sequential whose indexes count every Conv/BN/ReLU/MaxPool entry as
 * PyTorch's nn.Sequential does (so `features.0.weight`, `features.1.running_mean`, ...), then `classifier` 512 -> classes.
 */
export class CifarVgg extends Module {
  readonly features: Sequential;
  readonly classifier: Linear;
  constructor(plan: readonly (number | 'M')[], numClasses: number, rng: Rng, inChannels = 3) {
    super();
    const layers: Module[] = [];
    let c = inChannels;
    for (const x of plan) {
      if (x === 'M') {
        layers.push(new MaxPool2d(2, 2));
      } else {
        layers.push(new Conv2d(c, x, 3, rng, { padding: 1, bias: true }), new BatchNorm2d(x), new ReLU());
        c = x;
      }
    }
    // The paper's trailing AvgPool2d(1, 1) is the identity; it is kept so the indexes match.
    layers.push(new AvgPool2d(1, 1));
    this.features = this.addChild('features', new Sequential(layers));
    this.classifier = this.addChild('classifier', new Linear(c, numClasses, rng));
  }
  apply<T>(x: T, F: Ops<T>): T {
    return this.classifier.apply(F.flatten(this.features.apply(x, F)), F);
  }
}
