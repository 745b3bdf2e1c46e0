import { GdpError } from '../errors.js';
import type { Module } from '../nn/module.js';
import { Rng } from '../rng.js';
import { CifarResNet } from './resnet_cifar.js';

export interface ArchSpec {
  /** Input shape of one image, HWC. */
  inputShape: [number, number, number];
  defaultClasses: number;
  build(numClasses: number, rng: Rng): Module;
}

const cifarResNet = (depth: number): ArchSpec => ({
  inputShape: [32, 32, 3],
  defaultClasses: 10,
  build: (c, rng) => new CifarResNet(depth, c, 3, rng),
});

/** Architectures by the names the paper's configs use. */
export const ARCHITECTURES: Record<string, ArchSpec> = {
  'mnist.resnet20': { inputShape: [28, 28, 1], defaultClasses: 10, build: (c, rng) => new CifarResNet(20, c, 1, rng) },
  'cifar.resnet20': cifarResNet(20),
  'cifar.resnet32': cifarResNet(32),
  'cifar.resnet44': cifarResNet(44),
  'cifar.resnet56': cifarResNet(56),
  'cifar.resnet110': cifarResNet(110),
};

export function archSpec(name: string): ArchSpec {
  const spec = ARCHITECTURES[name];
  if (!spec) {
    throw new GdpError('UNKNOWN_ARCH', `unknown architecture '${name}'; known: ${Object.keys(ARCHITECTURES).join(', ')}`);
  }
  return spec;
}

export function buildModel(name: string, opts: { numClasses?: number; seed?: number } = {}): Module {
  const spec = archSpec(name);
  return spec.build(opts.numClasses ?? spec.defaultClasses, new Rng(opts.seed ?? 0));
}
