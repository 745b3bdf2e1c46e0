import { GdpError } from '../errors.js';
import type { Module } from '../nn/module.js';
import { Rng } from '../rng.js';
import { CifarResNet } from './resnet_cifar.js';
import { ImageNetResNet } from './resnet_imagenet.js';
import { CifarVgg, VGG_PLANS } from './vgg_cifar.js';

export interface ArchSpec {
  /** Input shape of one image, HWC. */
  inputShape: [number, number, number];
  defaultClasses: number;
  /** Path of the final Linear layer, whose output width is the number of classes (read from checkpoints without metadata). */
  classifier?: string;
  build(numClasses: number, rng: Rng): Module;
}

const cifarResNet = (depth: number): ArchSpec => ({
  inputShape: [32, 32, 3],
  defaultClasses: 10,
  classifier: 'linear',
  build: (c, rng) => new CifarResNet(depth, c, 3, rng),
});

/** Architectures by the names the paper's configs use. */
export const ARCHITECTURES: Record<string, ArchSpec> = {
  'mnist.resnet20': { inputShape: [28, 28, 1], defaultClasses: 10, classifier: 'linear', build: (c, rng) => new CifarResNet(20, c, 1, rng) },
  'cifar.resnet20': cifarResNet(20),
  'cifar.resnet32': cifarResNet(32),
  'cifar.resnet44': cifarResNet(44),
  'cifar.resnet56': cifarResNet(56),
  'cifar.resnet110': cifarResNet(110),
  'cifar.vgg16': { inputShape: [32, 32, 3], defaultClasses: 10, classifier: 'classifier', build: (c, rng) => new CifarVgg(VGG_PLANS.vgg16, c, rng) },
  resnet50: { inputShape: [224, 224, 3], defaultClasses: 1000, classifier: 'fc', build: (c, rng) => new ImageNetResNet([3, 4, 6, 3], c, rng) },
};

export function archSpec(name: string): ArchSpec {
  // Own keys only: 'constructor' or 'toString' must not find Object.prototype's members.
  const spec = Object.hasOwn(ARCHITECTURES, name) ? ARCHITECTURES[name] : undefined;
  if (!spec) {
    throw new GdpError('UNKNOWN_ARCH', `unknown architecture '${name}'; known: ${Object.keys(ARCHITECTURES).join(', ')}`);
  }
  return spec;
}

export function buildModel(name: string, opts: { numClasses?: number; seed?: number } = {}): Module {
  const spec = archSpec(name);
  return spec.build(opts.numClasses ?? spec.defaultClasses, new Rng(opts.seed ?? 0));
}

/**
 * Checks at start-up that the model takes the data's images and has an output for every label: otherwise the
 * first step fails, or worse, labels past the last output train nothing.
 */
export function checkModelFitsData(config: { model: { name: string; num_class: number }; data: { type: string } }, data: { shape: readonly number[]; numClasses: number }): void {
  const spec = archSpec(config.model.name);
  if (spec.inputShape.join('x') !== data.shape.join('x')) {
    throw new GdpError('BAD_CONFIG', `model.name: '${config.model.name}' takes ${spec.inputShape.join('x')} images (HWC), data.type '${config.data.type}' gives ${data.shape.join('x')}`);
  }
  if (config.model.num_class < data.numClasses) {
    throw new GdpError('BAD_CONFIG', `model.num_class: ${config.model.num_class} outputs, but data.type '${config.data.type}' has ${data.numClasses} classes`);
  }
}
