import { GdpError } from '../errors.js';

/**
 * One Keras (TF.js layers) layer config read into a neutral op: the per-layer half of the TF.js importer
 * (tfjs_graph.ts wires the ops into a graph). Every option gdp cannot honour stops here with UNSUPPORTED_LAYER naming
 * the layer, its class and the option; a malformed value with BAD_TFJS_MODEL.
 *
 * Layouts are TF.js': activations NHWC; Conv2D kernels [kh, kw, in, out]; depthwise kernels [kh, kw, in, 1];
 * Dense kernels [in, out].
 */
export type Activation = 'linear' | 'relu' | 'relu6' | 'softmax';
export type Padding = 'same' | 'valid';
type Pair = [number, number];
/** A Keras config object as parsed from JSON (nothing in it is trusted). */
export type Cfg = Record<string, unknown>;

export type ImportedOp =
  | { kind: 'input' }
  | { kind: 'conv2d'; filters: number; kernel: Pair; strides: Pair; dilation: Pair; padding: Padding; useBias: boolean; activation: Activation }
  | { kind: 'depthwise'; kernel: Pair; strides: Pair; dilation: Pair; padding: Padding; useBias: boolean; activation: Activation }
  | { kind: 'separable'; filters: number; kernel: Pair; strides: Pair; dilation: Pair; padding: Padding; useBias: boolean; activation: Activation }
  | { kind: 'batchnorm'; epsilon: number; center: boolean; scale: boolean }
  | { kind: 'activation'; fn: Activation }
  | { kind: 'add' }
  | { kind: 'concat' }
  | { kind: 'maxpool' | 'avgpool'; pool: Pair; strides: Pair; padding: Padding }
  | { kind: 'global_avgpool' | 'global_maxpool' }
  | { kind: 'zeropad'; pad: [Pair, Pair] }
  | { kind: 'flatten' }
  | { kind: 'dense'; units: number; useBias: boolean; activation: Activation }
  | { kind: 'dropout' }
  | { kind: 'rescaling'; scale: number; offset: number };

const SUPPORTED = new Set([
  'InputLayer',
  'Conv2D',
  'DepthwiseConv2D',
  'SeparableConv2D',
  'BatchNormalization',
  'Activation',
  'ReLU',
  'Add',
  'Concatenate',
  'MaxPooling2D',
  'AveragePooling2D',
  'GlobalAveragePooling2D',
  'GlobalMaxPooling2D',
  'ZeroPadding2D',
  'Flatten',
  'Dense',
  'Dropout',
  'Rescaling',
]);

/** UNSUPPORTED_LAYER naming the layer, its Keras class and the option gdp cannot compute exactly. */
export function unsupported(layer: string, cls: string, option: string): GdpError {
  return new GdpError('UNSUPPORTED_LAYER', `layer '${layer}' (${cls}): ${option}`);
}

function pair(v: unknown, what: string, layer: string, cls: string): Pair {
  const a = typeof v === 'number' ? [v, v] : v;
  if (!Array.isArray(a) || a.length !== 2 || !a.every((x) => Number.isInteger(x) && x > 0)) {
    throw new GdpError('BAD_TFJS_MODEL', `layer '${layer}' (${cls}): ${what} must be one or two positive integers, got ${JSON.stringify(v)}`);
  }
  return [a[0], a[1]];
}

function activation(v: unknown, layer: string, cls: string): Activation {
  const a = v ?? 'linear';
  if (a === 'linear' || a === 'relu' || a === 'relu6' || a === 'softmax') return a;
  throw unsupported(layer, cls, `activation '${String(a)}' (gdp takes linear, relu, relu6, and softmax on the output)`);
}

function padding(v: unknown, layer: string, cls: string): Padding {
  if (v === 'same' || v === 'valid') return v;
  throw unsupported(layer, cls, `padding '${String(v)}'`);
}

function channelsLast(c: Cfg, layer: string, cls: string): void {
  if (c.data_format !== undefined && c.data_format !== null && c.data_format !== 'channels_last')
    throw unsupported(layer, cls, `data_format '${String(c.data_format)}'`);
}

/**
 * The op of one layer from its Keras class name and config; refuses what gdp cannot compute exactly. Throws
 * UNSUPPORTED_LAYER (another class or an option gdp cannot honour) or BAD_TFJS_MODEL (a malformed value).
 */
export function toOp(cls: string, name: string, c: Cfg): ImportedOp {
  if (!SUPPORTED.has(cls)) throw unsupported(name, cls, 'this layer class is not supported');
  const conv = () => {
    channelsLast(c, name, cls);
    if (c.groups !== undefined && c.groups !== 1) throw unsupported(name, cls, `groups ${String(c.groups)}`);
    return {
      kernel: pair(c.kernel_size, 'kernel_size', name, cls),
      strides: pair(c.strides ?? 1, 'strides', name, cls),
      dilation: pair(c.dilation_rate ?? 1, 'dilation_rate', name, cls),
      padding: padding(c.padding ?? 'valid', name, cls),
      useBias: c.use_bias !== false,
      activation: activation(c.activation, name, cls),
    };
  };
  const filters = () => {
    if (!Number.isInteger(c.filters) || (c.filters as number) <= 0)
      throw new GdpError('BAD_TFJS_MODEL', `layer '${name}' (${cls}): filters must be a positive integer`);
    return c.filters as number;
  };
  const depthMultiplier = () => {
    if ((c.depth_multiplier ?? 1) !== 1) throw unsupported(name, cls, `depth_multiplier ${String(c.depth_multiplier)} (gdp takes 1)`);
  };
  switch (cls) {
    case 'InputLayer':
      return { kind: 'input' };
    case 'Conv2D':
      return { kind: 'conv2d', filters: filters(), ...conv() };
    case 'DepthwiseConv2D':
      depthMultiplier();
      return { kind: 'depthwise', ...conv() };
    case 'SeparableConv2D':
      depthMultiplier();
      return { kind: 'separable', filters: filters(), ...conv() };
    case 'BatchNormalization': {
      const axis = c.axis ?? -1;
      if (axis !== -1 && axis !== 3 && !(Array.isArray(axis) && axis.length === 1 && (axis[0] === -1 || axis[0] === 3))) {
        throw unsupported(name, cls, `axis ${JSON.stringify(axis)} (gdp normalises channels, the last axis)`);
      }
      return { kind: 'batchnorm', epsilon: typeof c.epsilon === 'number' ? c.epsilon : 1e-3, center: c.center !== false, scale: c.scale !== false };
    }
    case 'Activation':
      return { kind: 'activation', fn: activation(c.activation, name, cls) };
    case 'ReLU': {
      if ((c.negative_slope ?? 0) !== 0) throw unsupported(name, cls, `negative_slope ${String(c.negative_slope)}`);
      if ((c.threshold ?? 0) !== 0) throw unsupported(name, cls, `threshold ${String(c.threshold)}`);
      const max = c.max_value ?? null;
      if (max !== null && max !== 6) throw unsupported(name, cls, `max_value ${String(max)} (gdp takes none or 6)`);
      return { kind: 'activation', fn: max === 6 ? 'relu6' : 'relu' };
    }
    case 'Add':
      return { kind: 'add' };
    case 'Concatenate':
      if ((c.axis ?? -1) !== -1 && c.axis !== 3) throw unsupported(name, cls, `axis ${String(c.axis)} (gdp concatenates channels, the last axis)`);
      return { kind: 'concat' };
    case 'MaxPooling2D':
    case 'AveragePooling2D': {
      channelsLast(c, name, cls);
      const pool = pair(c.pool_size ?? 2, 'pool_size', name, cls);
      return {
        kind: cls === 'MaxPooling2D' ? 'maxpool' : 'avgpool',
        pool,
        strides: pair(c.strides ?? pool, 'strides', name, cls),
        padding: padding(c.padding ?? 'valid', name, cls),
      };
    }
    case 'GlobalAveragePooling2D':
    case 'GlobalMaxPooling2D':
      channelsLast(c, name, cls);
      if (c.keepdims === true) throw unsupported(name, cls, 'keepdims true');
      return { kind: cls === 'GlobalAveragePooling2D' ? 'global_avgpool' : 'global_maxpool' };
    case 'ZeroPadding2D': {
      channelsLast(c, name, cls);
      const p = c.padding ?? 1;
      const ok = (x: unknown): x is number => Number.isInteger(x) && (x as number) >= 0;
      let pad: [Pair, Pair] | undefined;
      if (ok(p))
        pad = [
          [p, p],
          [p, p],
        ];
      else if (Array.isArray(p) && p.length === 2 && p.every(ok))
        pad = [
          [p[0], p[0]],
          [p[1], p[1]],
        ];
      else if (Array.isArray(p) && p.length === 2 && p.every((q) => Array.isArray(q) && q.length === 2 && q.every(ok))) pad = [p[0] as Pair, p[1] as Pair];
      if (!pad) throw new GdpError('BAD_TFJS_MODEL', `layer '${name}' (${cls}): padding ${JSON.stringify(p)} is not an int, a pair or a pair of pairs`);
      return { kind: 'zeropad', pad };
    }
    case 'Flatten':
      channelsLast(c, name, cls);
      return { kind: 'flatten' };
    case 'Dense':
      if (!Number.isInteger(c.units) || (c.units as number) <= 0)
        throw new GdpError('BAD_TFJS_MODEL', `layer '${name}' (${cls}): units must be a positive integer`);
      return { kind: 'dense', units: c.units as number, useBias: c.use_bias !== false, activation: activation(c.activation, name, cls) };
    case 'Dropout':
      return { kind: 'dropout' };
    default: {
      // Rescaling (the only class left in SUPPORTED).
      const scale = c.scale ?? 1;
      const offset = c.offset ?? 0;
      if (typeof scale !== 'number' || typeof offset !== 'number') throw unsupported(name, cls, 'per-channel scale or offset');
      return { kind: 'rescaling', scale, offset };
    }
  }
}
