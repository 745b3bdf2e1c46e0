/**
 * The names of the architectures gdp builds (the paper's config names), in registry.ts' order; apart from the registry
 * so a command line's help lists them without loading the models and TF.js. registry.ts checks it has each one.
 */
export const ARCH_NAMES = [
  'mnist.resnet20',
  'cifar.resnet20',
  'cifar.resnet32',
  'cifar.resnet44',
  'cifar.resnet56',
  'cifar.resnet110',
  'cifar.vgg16',
  'resnet50',
  'mobilenet_v2',
] as const;
export type ArchName = (typeof ARCH_NAMES)[number];
