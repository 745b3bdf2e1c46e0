import { BatchNorm2d, Conv2d, DepthwiseConv2d, Linear, MaxPool2d, ReLU6 } from '../../src/shared/nn/layers.js';
import { Module, Sequential, type Ops } from '../../src/shared/nn/module.js';
import type { Rng } from '../../src/shared/rng.js';

/** The input Mixed is built for (HWC): the flatten reads a 3x3 map. */
export const MIXED_SHAPE: [number, number, number] = [6, 6, 3];

/**
 * A small network with each structure pruning must map: a depthwise conv on the stem's space, a channel concat of
 * two branches read by a 1x1 conv, an inverted-residual block (expand, depthwise, project) added to that conv's
 * output, and a flatten of a 3x3 map of a concat into a Linear layer.
 */
export class Mixed extends Module {
  readonly stem: Sequential;
  readonly branch1: Sequential;
  readonly branch2: Sequential;
  readonly mix: Sequential;
  readonly block: Sequential;
  readonly pool: MaxPool2d;
  readonly fc: Linear;
  constructor(rng: Rng, opts: { bnAfterConcat?: boolean } = {}) {
    super();
    this.stem = this.addChild('stem', new Sequential([new Conv2d(3, 8, 3, rng, { padding: 1 }), new BatchNorm2d(8)]));
    this.branch1 = this.addChild('branch1', new Sequential([new Conv2d(8, 4, 1, rng), new BatchNorm2d(4)]));
    this.branch2 = this.addChild(
      'branch2',
      new Sequential([new DepthwiseConv2d(8, 3, rng, { padding: 1 }), new BatchNorm2d(8), new ReLU6(), new Conv2d(8, 6, 1, rng), new BatchNorm2d(6)]),
    );
    const mix: Module[] = opts.bnAfterConcat ? [new BatchNorm2d(10)] : [];
    this.mix = this.addChild('mix', new Sequential([...mix, new Conv2d(10, 8, 1, rng), new BatchNorm2d(8)]));
    this.block = this.addChild(
      'block',
      new Sequential([
        new Conv2d(8, 16, 1, rng),
        new BatchNorm2d(16),
        new ReLU6(),
        new DepthwiseConv2d(16, 3, rng, { padding: 1 }),
        new BatchNorm2d(16),
        new ReLU6(),
        new Conv2d(16, 8, 1, rng),
        new BatchNorm2d(8),
      ]),
    );
    this.pool = this.addChild('pool', new MaxPool2d(2, 2));
    this.fc = this.addChild('fc', new Linear((8 + 4) * 9, 5, rng));
  }
  apply<T>(x: T, F: Ops<T>): T {
    const s = F.relu(this.stem.apply(x, F));
    const b1 = F.relu(this.branch1.apply(s, F));
    const m = this.mix.apply(F.concat([b1, this.branch2.apply(s, F)]), F);
    const r = F.relu(F.add(m, this.block.apply(m, F)));
    return this.fc.apply(F.flatten(this.pool.apply(F.concat([r, b1]), F)), F);
  }
}
