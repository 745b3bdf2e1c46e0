import * as tf from '@tensorflow/tfjs-core';
import { GdpError } from '../errors.js';
import { trace } from '../graph/trace.js';
import { BatchNorm2d, Conv2d, DepthwiseConv2d, Linear } from '../nn/layers.js';
import type { Module, Slot } from '../nn/module.js';
import type { HostTensor, RawTensor } from './safetensors.js';

/**
 * Tensors PyTorch checkpoints carry that gdp does not use, ignored by name whatever their dtype: GBN bookkeeping
 * (`.score`, `.area`) and BatchNorm's step counter (`.num_batches_tracked`, an I64 scalar in `state_dict()`).
 */
export const IGNORED_SUFFIXES = ['.score', '.area', '.num_batches_tracked'];

const ignored = (name: string): boolean => IGNORED_SUFFIXES.some((s) => name.endsWith(s));

const hwioFromOihw = (t: HostTensor): tf.Tensor => tf.tidy(() => tf.transpose(tf.tensor(t.data, t.shape), [2, 3, 1, 0]));
const oihwFromHwio = (t: tf.Tensor): tf.Tensor => tf.transpose(t, [3, 2, 0, 1]);
// Depthwise: PyTorch's [C,1,kh,kw] and tfjs' [kh,kw,C,1] are each other's [2,3,0,1] transpose, both ways.
const depthwiseSwap = (t: tf.Tensor): tf.Tensor => tf.transpose(t, [2, 3, 0, 1]);

function takeFrom(tensors: Map<string, HostTensor>, other: ReadonlyMap<string, RawTensor>, used: Set<string>, name: string, source: string): HostTensor {
  const t = tensors.get(name);
  const o = other.get(name);
  if (!t && o)
    throw new GdpError('BAD_DTYPE', `${source}: tensor '${name}' is ${o.dtype}; gdp loads weights from floating-point tensors (F64, F32, F16, BF16, F8)`);
  if (!t) throw new GdpError('MISSING_TENSOR', `${source}: missing tensor '${name}'`);
  used.add(name);
  return t;
}

function expectShape(name: string, t: HostTensor, want: number[], source: string): void {
  const n = t.shape.reduce((a, b) => a * b, 1);
  const m = want.reduce((a, b) => a * b, 1);
  if (n !== m) throw new GdpError('SHAPE_MISMATCH', `${source}: tensor '${name}' has shape [${t.shape}], expected [${want}]`);
}

/**
 * Loads a PyTorch state dict (names and layouts as PyTorch writes them: conv OIHW, linear [out,in]) into the
 * model, plain or in the paper's gated form (`X.bn.weight`, `X.g`, `X.bn_mask`). Layer widths follow the file,
 * so pruned and melted networks load into their architecture's default build; the result is traced to check
 * that every width fits its neighbours. `other` holds the file's non-float tensors: those named in
 * IGNORED_SUFFIXES are skipped, any other is refused.
 * @throws GdpError MISSING_TENSOR, BAD_DTYPE (a weight stored as an integer type), SHAPE_MISMATCH, UNEXPECTED_TENSOR.
 */
export function loadTorchState(
  model: Module,
  tensors: Map<string, HostTensor>,
  inputShape: readonly number[],
  source = 'weights',
  other: ReadonlyMap<string, RawTensor> = new Map(),
): void {
  const used = new Set<string>();
  const take = (name: string) => takeFrom(tensors, other, used, name, source);
  for (const [path, m] of model.namedModules()) {
    const p = path ? `${path}.` : '';
    if (m instanceof Conv2d) {
      const w = take(`${p}weight`);
      if (w.shape.length !== 4 || w.shape[2] !== m.kernel || w.shape[3] !== m.kernel) {
        throw new GdpError('SHAPE_MISMATCH', `${source}: tensor '${p}weight' has shape [${w.shape}], expected [O, I, ${m.kernel}, ${m.kernel}]`);
      }
      m.weight.set(hwioFromOihw(w));
      m.outChannels = w.shape[0];
      m.inChannels = w.shape[1];
      if (m.bias) {
        const b = take(`${p}bias`);
        expectShape(`${p}bias`, b, [m.outChannels], source);
        m.bias.set(tf.tensor(b.data, [m.outChannels]));
      }
    } else if (m instanceof DepthwiseConv2d) {
      const w = take(`${p}weight`);
      if (w.shape.length !== 4 || w.shape[1] !== 1 || w.shape[2] !== m.kernel || w.shape[3] !== m.kernel) {
        throw new GdpError('SHAPE_MISMATCH', `${source}: tensor '${p}weight' has shape [${w.shape}], expected [C, 1, ${m.kernel}, ${m.kernel}] (depthwise)`);
      }
      m.weight.set(tf.tidy(() => depthwiseSwap(tf.tensor(w.data, w.shape))));
      m.channels = w.shape[0];
      if (m.bias) {
        const b = take(`${p}bias`);
        expectShape(`${p}bias`, b, [m.channels], source);
        m.bias.set(tf.tensor(b.data, [m.channels]));
      }
    } else if (m instanceof Linear) {
      const w = take(`${p}weight`);
      if (w.shape.length !== 2 || w.shape[0] !== m.outFeatures) {
        throw new GdpError('SHAPE_MISMATCH', `${source}: tensor '${p}weight' has shape [${w.shape}], expected [${m.outFeatures}, in]`);
      }
      m.weight.set(tf.tidy(() => tf.transpose(tf.tensor2d(w.data, [w.shape[0], w.shape[1]]))));
      m.inFeatures = w.shape[1];
      const b = take(`${p}bias`);
      expectShape(`${p}bias`, b, [m.outFeatures], source);
      m.bias.set(tf.tensor(b.data, [m.outFeatures]));
    } else if (m instanceof BatchNorm2d) {
      const gated = tensors.has(`${p}bn.weight`);
      const q = gated ? `${p}bn.` : p;
      const w = take(`${q}weight`);
      const c = w.shape[0];
      if (gated && !m.gated) m.addGate();
      m.channels = c;
      const vec = (name: string): tf.Tensor => {
        const t = take(name);
        expectShape(name, t, [c], source);
        return tf.tensor1d(t.data);
      };
      m.weight.set(tf.tensor1d(w.data));
      m.bias.set(vec(`${q}bias`));
      m.runningMean.set(vec(`${q}running_mean`));
      m.runningVar.set(vec(`${q}running_var`));
      if (gated) {
        m.gate!.set(vec(`${p}g`));
        m.mask!.set(vec(`${p}bn_mask`));
      }
    }
  }
  const strange = [...other].filter(([k]) => !ignored(k));
  if (strange.length) {
    const list = strange
      .slice(0, 8)
      .map(([k, t]) => `'${k}' (${t.dtype})`)
      .join(', ');
    throw new GdpError(
      'UNEXPECTED_TENSOR',
      `${source}: non-float tensors the model does not have: ${list}${strange.length > 8 ? ', ...' : ''} (only ${IGNORED_SUFFIXES.join(', ')} are ignored)`,
    );
  }
  const unused = [...tensors.keys()].filter((k) => !used.has(k) && !ignored(k));
  if (unused.length)
    throw new GdpError('UNEXPECTED_TENSOR', `${source}: tensors the model does not have: ${unused.slice(0, 8).join(', ')}${unused.length > 8 ? ', ...' : ''}`);
  trace(model, inputShape);
}

/** The model's state in PyTorch's names and layouts; gated BNs in the paper's GBN form. */
export function exportTorchState(model: Module): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  const put = (name: string, t: tf.Tensor, shape?: number[]) => out.set(name, { shape: shape ?? t.shape, data: t.dataSync() as Float32Array });
  for (const [path, m] of model.namedModules()) {
    const p = path ? `${path}.` : '';
    if (m instanceof Conv2d) {
      tf.tidy(() => {
        put(`${p}weight`, oihwFromHwio(m.weight.value));
      });
      if (m.bias) put(`${p}bias`, m.bias.value);
    } else if (m instanceof DepthwiseConv2d) {
      tf.tidy(() => {
        put(`${p}weight`, depthwiseSwap(m.weight.value));
      });
      if (m.bias) put(`${p}bias`, m.bias.value);
    } else if (m instanceof Linear) {
      tf.tidy(() => {
        put(`${p}weight`, tf.transpose(m.weight.value));
      });
      put(`${p}bias`, m.bias.value);
    } else if (m instanceof BatchNorm2d) {
      const q = m.gated ? `${p}bn.` : p;
      const slots: [string, Slot][] = [
        ['weight', m.weight],
        ['bias', m.bias],
        ['running_mean', m.runningMean],
        ['running_var', m.runningVar],
      ];
      for (const [n, s] of slots) put(`${q}${n}`, s.value);
      if (m.gate && m.mask) {
        put(`${p}g`, m.gate.value, [1, m.channels, 1, 1]);
        put(`${p}bn_mask`, m.mask.value, [1, m.channels, 1, 1]);
      }
    }
  }
  return out;
}
