import { readFile, writeFile } from 'node:fs/promises';
import type { Normalisation } from '../data/transforms.js';
import { GdpError, type ErrorCode } from '../errors.js';
import { BatchNorm2d, Conv2d, DepthwiseConv2d, Linear } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import { GRAPH_ARCH, GraphModel } from '../models/graph_model.js';
import { archSpec, buildModel, modelInputShape, type ArchSpec } from '../models/registry.js';
import { checkIsModelFile } from './run_file_kinds.js';
import { parseSafetensors, serializeSafetensors, type HostTensor, type SafetensorsFile } from './safetensors.js';
import { exportTorchState, loadTorchState } from './torch_state.js';

/** Input and output widths of every conv (depthwise: [C, C]) and linear layer, by module path: what pruning changes. */
export type Widths = Record<string, [number, number]>;

export function layerWidths(model: Module): Widths {
  const out: Widths = {};
  for (const [path, m] of model.namedModules()) {
    if (m instanceof Conv2d) out[path] = [m.inChannels, m.outChannels];
    else if (m instanceof DepthwiseConv2d) out[path] = [m.channels, m.channels];
    else if (m instanceof Linear) out[path] = [m.inFeatures, m.outFeatures];
  }
  return out;
}

export interface ModelDescription {
  arch: string;
  numClasses: number;
  /** Input height and width when not the architecture's default (`model.input_size`), recorded as `input_size`. */
  inputSize?: number;
  /**
   * The input preprocessing the weights were trained with: per-channel mean and std of pixels scaled to [0, 1], the
   * network's input being (pixel / 255 - mean) / std. Recorded as `input_mean` and `input_std` (JSON arrays).
   */
  norm?: Normalisation;
}

/** The metadata fields recording an input normalisation: `input_mean`, `input_std` (JSON arrays, one value a channel). */
export function normalisationMetadata(norm: Normalisation): { input_mean: string; input_std: string } {
  return { input_mean: JSON.stringify(norm.mean), input_std: JSON.stringify(norm.std) };
}

/**
 * The file metadata that lets a pruned or melted model load without its config: the architecture, the class count
 * and the per-layer widths (the tensors carry the widths too; the copy here is checked against them). `extra`
 * adds a writer's own fields (a checkpoint's stage, tick, run state; `format` may name another gdp format); it
 * cannot replace the model fields.
 */
export function modelMetadata(model: Module, desc: ModelDescription, extra: Record<string, string> = {}): Record<string, string> {
  const meta: Record<string, string> = {
    format: 'gdp',
    ...extra,
    arch: desc.arch,
    num_class: String(desc.numClasses),
    widths: JSON.stringify(layerWidths(model)),
  };
  if (desc.inputSize !== undefined) meta.input_size = String(desc.inputSize);
  if (desc.norm) Object.assign(meta, normalisationMetadata(desc.norm));
  // An imported architecture travels with its weights: the TF.js topology it is built from.
  if (model instanceof GraphModel) meta.graph = JSON.stringify(model.topology);
  return meta;
}

/**
 * The model file of `model`: its state in PyTorch's names and layouts (the paper's GBN form when gated) with
 * `modelMetadata` as safetensors metadata. Every gdp model file and checkpoint is written through here.
 */
export function serializeModel(model: Module, desc: ModelDescription, extra: Record<string, string> = {}): Uint8Array {
  return serializeSafetensors(exportTorchState(model), modelMetadata(model, desc, extra));
}

export async function saveModelFile(path: string, model: Module, desc: ModelDescription): Promise<void> {
  await writeFile(path, serializeModel(model, desc));
}

export interface LoadedModel {
  model: Module;
  arch: string;
  numClasses: number;
  /** One image, HWC. */
  inputShape: [number, number, number];
  /** Whether any BatchNorm came in the paper's gated (GBN) form. */
  gated: boolean;
  /** The input normalisation the file records (`input_mean`, `input_std`); undefined for files without it. */
  norm?: Normalisation;
  metadata: Record<string, string>;
}

export interface LoadOptions {
  /** Architecture when the file does not record one (PyTorch checkpoints); must agree when it does. */
  arch?: string;
  seed?: number;
}

/** Prefixes that wrappers add to PyTorch names: the paper's ResNet-50 wrapper and nn.DataParallel. */
const WRAPPER_PREFIXES = ['backbone.', 'module.'];

/** The file's tensors (float and other) without a wrapper prefix that every name carries. */
function stripWrapperPrefix(file: SafetensorsFile): Pick<SafetensorsFile, 'tensors' | 'other'> {
  const names = [...file.tensors.keys(), ...file.other.keys()];
  for (const prefix of WRAPPER_PREFIXES) {
    if (names.length && names.every((n) => n.startsWith(prefix))) {
      const strip = <T>(m: Map<string, T>) => new Map([...m].map(([n, t]) => [n.slice(prefix.length), t]));
      return { tensors: strip(file.tensors), other: strip(file.other) };
    }
  }
  return file;
}

function parseWidths(raw: string, source: string): Widths {
  const bad = (msg: string) => new GdpError('BAD_METADATA', `${source}: metadata field 'widths' ${msg}`);
  let w: unknown;
  try {
    w = JSON.parse(raw);
  } catch (e) {
    throw bad(`is not JSON (${(e as Error).message})`);
  }
  if (typeof w !== 'object' || w === null || Array.isArray(w)) throw bad('must be an object of [in, out] pairs');
  for (const [k, v] of Object.entries(w)) {
    if (!Array.isArray(v) || v.length !== 2 || !v.every((d) => Number.isInteger(d) && d > 0)) throw bad(`entry '${k}' must be [in, out] positive integers`);
  }
  return w as Widths;
}

/** The JSON value of metadata field `key`. @throws GdpError BAD_METADATA naming the field when it is not JSON. */
function parseField(meta: Record<string, string>, key: string, source: string): unknown {
  try {
    return JSON.parse(meta[key]);
  } catch (e) {
    throw new GdpError('BAD_METADATA', `${source}: metadata field '${key}' is not JSON (${(e as Error).message})`);
  }
}

/**
 * A recorded mean and std checked as one normalisation: one finite number per input channel each, std positive.
 * `bad` makes the error for the field at fault, naming the file and where that field is.
 */
function checkedNormalisation(mean: unknown, std: unknown, channels: number, bad: (field: 'mean' | 'std', msg: string) => GdpError): Normalisation {
  const fields = [
    ['mean', mean],
    ['std', std],
  ] as const;
  const lists: number[][] = [];
  for (const [field, v] of fields) {
    if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'number' && Number.isFinite(x)))
      throw bad(field, `must be a non-empty array of numbers, got ${JSON.stringify(v) ?? 'none'}`);
    lists.push(v);
  }
  fields.forEach(([field], i) => {
    if (lists[i].length !== channels) throw bad(field, `has ${lists[i].length} value(s), the model's input has ${channels} channel(s)`);
  });
  const flat = lists[1].findIndex((v) => !(v > 0));
  if (flat >= 0) throw bad('std', `must be positive, channel ${flat} is ${lists[1][flat]}`);
  return { mean: lists[0], std: lists[1] };
}

/**
 * The input normalisation recorded in `meta` (`input_mean` and `input_std`, one value per input channel), or
 * undefined when neither field is present.
 * @throws GdpError BAD_METADATA naming the field: one without the other, not an array of numbers, a count other than
 *   `channels`, or a std that is not positive.
 */
export function metadataNormalisation(meta: Record<string, string>, channels: number, source = 'weights'): Normalisation | undefined {
  const hasMean = meta.input_mean !== undefined;
  if (!hasMean && meta.input_std === undefined) return undefined;
  if (!hasMean || meta.input_std === undefined)
    throw new GdpError('BAD_METADATA', `${source}: metadata field '${hasMean ? 'input_std' : 'input_mean'}' is absent; input_mean and input_std go together`);
  const [mean, std] = [parseField(meta, 'input_mean', source), parseField(meta, 'input_std', source)];
  return checkedNormalisation(mean, std, channels, (field, msg) => new GdpError('BAD_METADATA', `${source}: metadata field 'input_${field}' ${msg}`));
}

/**
 * What an exported model file records of the input its network expects, as the value of its `gdp` entry
 * (model.json's `userDefinedMetadata.gdp`; a Keras file's metadata.json `gdp` or `.h5` root attribute `gdp`, see
 * keras_export.ts): `{ input: { layout: 'NHWC', pixels: '[0, 1]', mean, std } }`, the network's input being
 * (pixel - mean) / std per channel with pixels scaled to [0, 1]. Read back by exportedNormalisation.
 */
export function exportedInputMetadata(norm: Normalisation): { input: { layout: 'NHWC'; pixels: '[0, 1]'; mean: number[]; std: number[] } } {
  return { input: { layout: 'NHWC', pixels: '[0, 1]', mean: [...norm.mean], std: [...norm.std] } };
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The input normalisation of an exported file's `gdp` entry (exportedInputMetadata's form), or undefined when the
 * entry is absent or holds no `input` (a file gdp did not write, or one exported without a normalisation).
 * `where` names the entry in messages (`net.keras: metadata.json gdp`), `channels` is the model's input channels.
 * @throws GdpError `code` (the file format's own: BAD_KERAS_FILE, BAD_TFJS_MODEL) naming `where` and the field: an
 *   entry that is not an object, a layout other than NHWC or pixels other than [0, 1], a mean or std that is not one
 *   finite number per channel, a std that is not positive.
 */
export function exportedNormalisation(gdp: unknown, channels: number, where: string, code: ErrorCode): Normalisation | undefined {
  if (gdp === undefined) return undefined;
  if (!isRecord(gdp)) throw new GdpError(code, `${where} must be an object, got ${JSON.stringify(gdp)}`);
  const input = gdp.input;
  if (input === undefined) return undefined;
  if (!isRecord(input)) throw new GdpError(code, `${where}.input must be an object, got ${JSON.stringify(input)}`);
  const want = exportedInputMetadata({ mean: [], std: [] }).input;
  for (const key of ['layout', 'pixels'] as const) {
    if (input[key] !== want[key])
      throw new GdpError(code, `${where}.input.${key} must be '${want[key]}' (what gdp reads), got ${JSON.stringify(input[key]) ?? 'none'}`);
  }
  return checkedNormalisation(input.mean, input.std, channels, (field, msg) => new GdpError(code, `${where}.input.${field} ${msg}`));
}

/**
 * Builds the architecture named by the options or the metadata, then loads the tensors (widths from the file).
 * @throws GdpError NOT_A_MODEL for a run's file that holds no model (a resume point, momentum: checkIsModelFile),
 *   before anything else; ARCH_MISMATCH, MISSING_ARCH, UNKNOWN_ARCH, BAD_METADATA, MISSING_TENSOR and the tensor
 *   loading's codes (SHAPE_MISMATCH, UNEXPECTED_TENSOR, BAD_DTYPE...), each naming `source`.
 */
export function loadModel(file: SafetensorsFile, opts: LoadOptions = {}, source = 'weights'): LoadedModel {
  const meta = file.metadata;
  checkIsModelFile(meta, source);
  if (opts.arch && meta.arch && opts.arch !== meta.arch) {
    throw new GdpError('ARCH_MISMATCH', `${source}: the file records arch '${meta.arch}' but '${opts.arch}' was asked for`);
  }
  const arch = opts.arch ?? meta.arch;
  if (!arch) throw new GdpError('MISSING_ARCH', `${source}: metadata field 'arch' is absent (a plain PyTorch checkpoint?): pass --arch`);
  if (arch === GRAPH_ARCH) return loadGraphModel(file, opts, source);
  let spec: ArchSpec;
  try {
    spec = archSpec(arch);
  } catch (e) {
    if (e instanceof GdpError) throw new GdpError(e.code, `${source}: ${e.message}`);
    throw e;
  }
  const { tensors, other } = stripWrapperPrefix(file);
  let numClasses: number;
  if (meta.num_class !== undefined) {
    numClasses = Number(meta.num_class);
    if (!Number.isInteger(numClasses) || numClasses < 1) {
      throw new GdpError('BAD_METADATA', `${source}: metadata field 'num_class' must be a positive integer, got '${meta.num_class}'`);
    }
  } else if (!spec.classifier) {
    numClasses = spec.defaultClasses;
  } else {
    const head = tensors.get(`${spec.classifier}.weight`);
    if (!head) throw new GdpError('MISSING_TENSOR', `${source}: missing tensor '${spec.classifier}.weight' (the ${arch} classifier)`);
    numClasses = head.shape[0];
  }
  const widths = meta.widths !== undefined ? parseWidths(meta.widths, source) : undefined;
  let inputShape = spec.inputShape;
  if (meta.input_size !== undefined) {
    const size = Number(meta.input_size);
    if (!Number.isInteger(size) || size < 1)
      throw new GdpError('BAD_METADATA', `${source}: metadata field 'input_size' must be a positive integer, got '${meta.input_size}'`);
    try {
      inputShape = modelInputShape(arch, { inputSize: size });
    } catch (e) {
      if (e instanceof GdpError) throw new GdpError('BAD_METADATA', `${source}: metadata field 'input_size': ${e.message}`);
      throw e;
    }
  }
  // Widths come from the tensors, so the default build (width_mult 1) takes any width multiplier's file.
  const model = buildModel(arch, { numClasses, seed: opts.seed });
  fillModel(model, file, inputShape, widths, source, arch);
  return withNorm({ model, arch, numClasses, inputShape, gated: isGated(model), metadata: meta }, source);
}

/** `m` with the file's normalisation; disposes the model when the metadata is malformed. */
function withNorm(m: LoadedModel, source: string): LoadedModel {
  try {
    const norm = metadataNormalisation(m.metadata, m.inputShape[2], source);
    return norm ? { ...m, norm } : m;
  } catch (e) {
    m.model.dispose();
    throw e;
  }
}

const isGated = (model: Module): boolean => [...model.namedModules()].some(([, m]) => m instanceof BatchNorm2d && m.gated);

/** Loads the file's tensors into `model` (widths from the tensors) and checks the widths metadata; disposes the model on error. */
function fillModel(model: Module, file: SafetensorsFile, inputShape: readonly number[], widths: Widths | undefined, source: string, arch: string): void {
  const { tensors, other } = stripWrapperPrefix(file);
  try {
    loadTorchState(model, tensors, inputShape, source, other);
    if (widths) {
      const got = layerWidths(model);
      for (const [path, w] of Object.entries(widths)) {
        const g = got[path];
        if (!g) throw new GdpError('BAD_METADATA', `${source}: metadata field 'widths' names layer '${path}', which ${arch} does not have`);
        if (g[0] !== w[0] || g[1] !== w[1]) {
          throw new GdpError('SHAPE_MISMATCH', `${source}: layer '${path}' is [${g}] in the tensors but [${w}] in metadata field 'widths'`);
        }
      }
    }
  } catch (e) {
    model.dispose();
    // Width errors found by tracing name the layer; add the file.
    if (e instanceof GdpError && !e.message.startsWith(source)) throw new GdpError(e.code, `${source}: ${e.message}`);
    throw e;
  }
}

/** A file of the 'graph' architecture: the model is built from the TF.js topology in its `graph` metadata. */
function loadGraphModel(file: SafetensorsFile, opts: LoadOptions, source: string): LoadedModel {
  const meta = file.metadata;
  if (meta.graph === undefined) throw new GdpError('BAD_METADATA', `${source}: arch '${GRAPH_ARCH}' without metadata field 'graph' (the TF.js topology)`);
  let topology: unknown;
  try {
    topology = JSON.parse(meta.graph);
  } catch (e) {
    throw new GdpError('BAD_METADATA', `${source}: metadata field 'graph' is not JSON (${(e as Error).message})`);
  }
  const model = buildModel(GRAPH_ARCH, { graph: topology, seed: opts.seed }) as GraphModel;
  const widths = meta.widths !== undefined ? parseWidths(meta.widths, source) : undefined;
  fillModel(model, file, model.inputShape, widths, source, GRAPH_ARCH);
  return withNorm({ model, arch: GRAPH_ARCH, numClasses: model.numClasses, inputShape: model.inputShape, gated: isGated(model), metadata: meta }, source);
}

/** Reads a safetensors file (gdp's own, or a PyTorch checkpoint with `arch` given) into a ready model. */
export async function loadModelFile(path: string, opts: LoadOptions = {}): Promise<LoadedModel> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new GdpError('FILE_NOT_FOUND', `cannot read weights file ${path}: ${(e as Error).message}`);
  }
  return loadModel(parseSafetensors(bytes, path), opts, path);
}
