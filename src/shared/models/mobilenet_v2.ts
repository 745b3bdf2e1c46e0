import { BatchNorm2d, Conv2d, DepthwiseConv2d, Dropout, GlobalAvgPool, Linear, ReLU6 } from '../nn/layers.js';
import { Module, Sequential, type Ops } from '../nn/module.js';
import type { Rng } from '../rng.js';

/**
 * torchvision's `_make_divisible`: `v` rounded to the nearest multiple of `divisor` (at least `divisor`), one
 * multiple more when rounding lost over 10% of `v`.
 */
export function makeDivisible(v: number, divisor = 8): number {
  const r = Math.max(divisor, Math.floor((v + divisor / 2) / divisor) * divisor);
  return r < 0.9 * v ? r + divisor : r;
}

/** torchvision's Conv2dNormActivation with ReLU6: children 0 (conv, no bias), 1 (BN), 2 (ReLU6); padding (k-1)/2. */
function convBnRelu6(inC: number, outC: number, kernel: number, stride: number, depthwise: boolean, rng: Rng): Sequential {
  const padding = (kernel - 1) >> 1;
  const conv = depthwise ? new DepthwiseConv2d(outC, kernel, rng, { stride, padding }) : new Conv2d(inC, outC, kernel, rng, { stride, padding });
  return new Sequential([conv, new BatchNorm2d(outC), new ReLU6()]);
}

/**
 * torchvision's InvertedResidual (MobileNetV2, Sandler et al. 2018, table 1): `conv` = [1x1 expansion conv-BN-ReLU6
 * (absent when t = 1)], 3x3 depthwise conv-BN-ReLU6, 1x1 projection conv, BN; the input is added back when the
 * stride is 1 and the widths agree.
 */
export class InvertedResidual extends Module {
  readonly conv: Sequential;
  readonly residual: boolean;
  constructor(inC: number, outC: number, stride: number, expandRatio: number, rng: Rng) {
    super();
    const hidden = Math.round(inC * expandRatio);
    const layers: Module[] = [];
    if (expandRatio !== 1) layers.push(convBnRelu6(inC, hidden, 1, 1, false, rng));
    layers.push(convBnRelu6(hidden, hidden, 3, stride, true, rng), new Conv2d(hidden, outC, 1, rng), new BatchNorm2d(outC));
    this.conv = this.addChild('conv', new Sequential(layers));
    this.residual = stride === 1 && inC === outC;
  }
  apply<T>(x: T, F: Ops<T>): T {
    const y = this.conv.apply(x, F);
    return this.residual ? F.add(x, y) : y;
  }
}

/** MobileNetV2's stages (Sandler et al. 2018, table 2): expansion t, output channels c, blocks n, first stride s. */
export const MOBILENET_V2_STAGES: readonly (readonly [number, number, number, number])[] = [
  [1, 16, 1, 1],
  [6, 24, 2, 2],
  [6, 32, 3, 2],
  [6, 64, 4, 2],
  [6, 96, 3, 1],
  [6, 160, 3, 2],
  [6, 320, 1, 1],
];

/**
 * MobileNetV2 in torchvision's layout and names: `features.0` (3x3 stride-2 conv-BN-ReLU6), `features.1..17`
 * (InvertedResidual, `features.N.conv.*`), `features.18` (1x1 conv-BN-ReLU6 to 1280 * max(1, width) channels),
 * global average pool, `classifier.0` Dropout(0.2) (a placeholder: see `Dropout`), `classifier.1` Linear. Widths
 * are `makeDivisible(c * widthMult)`, as torchvision rounds them.
 */
export class MobileNetV2 extends Module {
  readonly features: Sequential;
  readonly pool: GlobalAvgPool;
  readonly classifier: Sequential;
  constructor(numClasses: number, rng: Rng, widthMult = 1, inChannels = 3) {
    super();
    let c = makeDivisible(32 * widthMult);
    const last = makeDivisible(1280 * Math.max(1, widthMult));
    const layers: Module[] = [convBnRelu6(inChannels, c, 3, 2, false, rng)];
    for (const [t, ch, n, s] of MOBILENET_V2_STAGES) {
      const out = makeDivisible(ch * widthMult);
      for (let i = 0; i < n; i++) {
        layers.push(new InvertedResidual(c, out, i === 0 ? s : 1, t, rng));
        c = out;
      }
    }
    layers.push(convBnRelu6(c, last, 1, 1, false, rng));
    this.features = this.addChild('features', new Sequential(layers));
    this.pool = this.addChild('avgpool', new GlobalAvgPool());
    this.classifier = this.addChild('classifier', new Sequential([new Dropout(0.2), new Linear(last, numClasses, rng)]));
  }
  apply<T>(x: T, F: Ops<T>): T {
    return this.classifier.apply(F.flatten(this.pool.apply(this.features.apply(x, F), F)), F);
  }
}
