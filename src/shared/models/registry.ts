import { GdpError } from '../errors.js';
import type { ArchName } from './arch_names.js';
import type { Module } from '../nn/module.js';
import { Rng } from '../rng.js';
import { parseLayersTopology } from '../io/tfjs_graph.js';
import { GRAPH_ARCH, GraphModel } from './graph_model.js';
import { MobileNetV2 } from './mobilenet_v2.js';
import { CifarResNet } from './resnet_cifar.js';
import { ImageNetResNet } from './resnet_imagenet.js';
import { CifarVgg, VGG_PLANS } from './vgg_cifar.js';

export interface ArchSpec {
  /** Input shape of one image, HWC (the default, for a `scalable` architecture). */
  inputShape: [number, number, number];
  defaultClasses: number;
  /** Path of the final Linear layer, whose output width is the number of classes (read from checkpoints without metadata). */
  classifier?: string;
  /** Takes a width multiplier and any square input size (`model.width_mult`, `model.input_size`). */
  scalable?: boolean;
  build(numClasses: number, rng: Rng, widthMult?: number): Module;
}

/** How to build an architecture; absent fields take the architecture's defaults. */
export interface ModelOptions {
  numClasses?: number;
  seed?: number;
  /** Channel multiplier (`model.width_mult`); scalable architectures only. */
  widthMult?: number;
  /** Input height and width (`model.input_size`); scalable architectures only. */
  inputSize?: number;
  /** The TF.js layers topology of the 'graph' architecture (`model.graph`, a file's `graph` metadata). */
  graph?: unknown;
}

const cifarResNet = (depth: number): ArchSpec => ({
  inputShape: [32, 32, 3],
  defaultClasses: 10,
  classifier: 'linear',
  build: (c, rng) => new CifarResNet(depth, c, 3, rng),
});

/** Architectures by the names the paper's configs use (tests add their own; `satisfies` keeps ARCH_NAMES complete). */
export const ARCHITECTURES: Record<string, ArchSpec> = {
  'mnist.resnet20': { inputShape: [28, 28, 1], defaultClasses: 10, classifier: 'linear', build: (c, rng) => new CifarResNet(20, c, 1, rng) },
  'cifar.resnet20': cifarResNet(20),
  'cifar.resnet32': cifarResNet(32),
  'cifar.resnet44': cifarResNet(44),
  'cifar.resnet56': cifarResNet(56),
  'cifar.resnet110': cifarResNet(110),
  'cifar.vgg16': { inputShape: [32, 32, 3], defaultClasses: 10, classifier: 'classifier', build: (c, rng) => new CifarVgg(VGG_PLANS.vgg16, c, rng) },
  resnet50: { inputShape: [224, 224, 3], defaultClasses: 1000, classifier: 'fc', build: (c, rng) => new ImageNetResNet([3, 4, 6, 3], c, rng) },
  mobilenet_v2: {
    inputShape: [224, 224, 3],
    defaultClasses: 1000,
    classifier: 'classifier.1',
    scalable: true,
    build: (c, rng, widthMult) => new MobileNetV2(c, rng, widthMult ?? 1),
  },
} satisfies Record<ArchName, ArchSpec>;

export function archSpec(name: string): ArchSpec {
  // Own keys only: 'constructor' or 'toString' must not find Object.prototype's members.
  const spec = Object.hasOwn(ARCHITECTURES, name) ? ARCHITECTURES[name] : undefined;
  if (!spec) {
    throw new GdpError(
      'UNKNOWN_ARCH',
      `unknown architecture '${name}'; known: ${Object.keys(ARCHITECTURES).join(', ')}, ${GRAPH_ARCH} (an imported TF.js model)`,
    );
  }
  return spec;
}

/** The input shape (HWC) an imported topology takes, checked against the options; throws BAD_CONFIG (and the import's codes). */
function graphShape(opts: ModelOptions): [number, number, number] {
  if (opts.graph === undefined) {
    throw new GdpError(
      'BAD_CONFIG',
      `model.graph: architecture '${GRAPH_ARCH}' is built from a TF.js topology: set model.file (a TF.js model.json) or model.weights (a gdp-model import output)`,
    );
  }
  if (opts.widthMult !== undefined && opts.widthMult !== 1)
    throw new GdpError('BAD_CONFIG', `model.width_mult: an imported '${GRAPH_ARCH}' model has fixed widths`);
  const g = parseLayersTopology(opts.graph, 'model.graph');
  const [h, w, c] = g.nodes[0].shape;
  if (opts.inputSize !== undefined && opts.inputSize !== h)
    throw new GdpError('BAD_CONFIG', `model.input_size: the imported model takes ${h}x${w}x${c} images`);
  const out = g.nodes.find((n) => n.name === g.output)!.shape;
  if (opts.numClasses !== undefined && out.length === 1 && opts.numClasses !== out[0]) {
    throw new GdpError('BAD_CONFIG', `model.num_class: the imported model has ${out[0]} outputs, not ${opts.numClasses}`);
  }
  return [h, w, c];
}

function checkScalable(name: string, spec: ArchSpec, opts: ModelOptions): void {
  if (spec.scalable) return;
  if (opts.widthMult !== undefined && opts.widthMult !== 1)
    throw new GdpError('BAD_CONFIG', `model.width_mult (--width-mult): '${name}' has fixed widths (width_mult applies to mobilenet_v2)`);
  if (opts.inputSize !== undefined && opts.inputSize !== spec.inputShape[0]) {
    throw new GdpError('BAD_CONFIG', `model.input_size (--input-size): '${name}' takes ${spec.inputShape[0]}x${spec.inputShape[1]} images only`);
  }
}

/** One image's shape (HWC) for the architecture with these options. Throws UNKNOWN_ARCH, BAD_CONFIG. */
export function modelInputShape(name: string, opts: ModelOptions = {}): [number, number, number] {
  if (name === GRAPH_ARCH) return graphShape(opts);
  const spec = archSpec(name);
  checkScalable(name, spec, opts);
  const [h, w, c] = spec.inputShape;
  return opts.inputSize === undefined ? [h, w, c] : [opts.inputSize, opts.inputSize, c];
}

/** The build options a config's `model` section gives. */
export function modelOptions(model: { num_class: number; width_mult?: number; input_size?: number; graph?: unknown }, seed?: number): ModelOptions {
  return { numClasses: model.num_class, seed, widthMult: model.width_mult, inputSize: model.input_size, graph: model.graph };
}

/** A fresh model with seeded initial weights. Throws UNKNOWN_ARCH, BAD_CONFIG (an option the architecture lacks). */
export function buildModel(name: string, opts: ModelOptions = {}): Module {
  if (name === GRAPH_ARCH) {
    graphShape(opts);
    return new GraphModel(opts.graph, new Rng(opts.seed ?? 0));
  }
  const spec = archSpec(name);
  checkScalable(name, spec, opts);
  return spec.build(opts.numClasses ?? spec.defaultClasses, new Rng(opts.seed ?? 0), opts.widthMult);
}

/**
 * Checks at start-up that the model takes the data's images and has an output for every label: otherwise the
 * first step fails, or worse, labels past the last output train nothing.
 */
export function checkModelFitsData(
  config: { model: { name: string; num_class: number; width_mult?: number; input_size?: number; graph?: unknown }; data: { type: string } },
  data: { shape: readonly number[]; numClasses: number },
): void {
  const shape = modelInputShape(config.model.name, modelOptions(config.model));
  if (shape.join('x') !== data.shape.join('x')) {
    const key = config.model.input_size === undefined ? 'model.name' : 'model.input_size';
    throw new GdpError(
      'BAD_CONFIG',
      `${key}: '${config.model.name}' takes ${shape.join('x')} images (HWC), data.type '${config.data.type}' gives ${data.shape.join('x')}`,
    );
  }
  if (config.model.num_class < data.numClasses) {
    throw new GdpError('BAD_CONFIG', `model.num_class: ${config.model.num_class} outputs, but data.type '${config.data.type}' has ${data.numClasses} classes`);
  }
}

/**
 * The model a config describes (`model.name`, `num_class`, `width_mult`, `input_size`) with seeded initial weights,
 * and its input shape [h, w, c] (NHWC without the batch axis): what the coordinator and every worker build.
 * Throws UNKNOWN_ARCH, BAD_CONFIG (an option the architecture lacks).
 */
export function configModel(
  model: { name: string; num_class: number; width_mult?: number; input_size?: number; graph?: unknown },
  seed: number,
): { model: Module; inputShape: [number, number, number] } {
  const opts = modelOptions(model, seed);
  const inputShape = modelInputShape(model.name, opts);
  return { model: buildModel(model.name, opts), inputShape };
}
