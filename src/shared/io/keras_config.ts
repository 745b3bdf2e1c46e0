import { GdpError } from '../errors.js';
import type { ImportedNode } from './tfjs_graph.js';

/**
 * Keras model configs between Keras 3's form (`config.json` of a `.keras` archive) and the Keras 2 form that TF.js
 * model.json topologies and legacy `.h5` files (`model_config`) hold, which is the form gdp's importer reads and
 * keeps as a model's topology. The two differ in how they spell the same model:
 * - inbound nodes: Keras 3 `[{args: [<__keras_tensor__ with keras_history [layer, node, tensor]>], kwargs}]`,
 *   Keras 2 `[[[layer, node, tensor, kwargs], ...]]`;
 * - nested objects (initializers, regularizers, constraints, the dtype policy): Keras 3 adds `module` and
 *   `registered_name`, and the dtype is a `DTypePolicy` object where Keras 2 has a string;
 * - inputs: Keras 3 `InputLayer.batch_shape` and a Sequential's InputLayer in its layer list; Keras 2
 *   `batch_input_shape`, on the first layer of a Sequential;
 * - a single model output: Keras 3 may write `output_layers` as one `[layer, node, tensor]` rather than a list.
 */

type Cfg = Record<string, unknown>;

const isObj = (v: unknown): v is Cfg => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A nested serialized object in Keras 2 form: `{class_name, config}` without Keras 3's `module` and `registered_name`. */
function toKeras2Value(key: string, v: unknown): unknown {
  if (!isObj(v) || typeof v.class_name !== 'string') return v;
  // Keras 3 dtype policies ('float32', 'mixed_float16') become the policy name, Keras 2's dtype string.
  if (key === 'dtype' && isObj(v.config) && typeof v.config.name === 'string') return v.config.name;
  return { class_name: v.class_name, config: isObj(v.config) ? toKeras2Config(v.config) : (v.config ?? {}) };
}

function toKeras2Config(c: Cfg): Cfg {
  return Object.fromEntries(Object.entries(c).map(([k, v]) => [k, toKeras2Value(k, v)]));
}

/** The `[layer, node, tensor]` histories of a Keras 3 call's tensors, in argument order. */
function histories(v: unknown, out: [string, number, number][]): [string, number, number][] {
  if (Array.isArray(v)) v.forEach((x) => histories(x, out));
  else if (isObj(v)) {
    const h = isObj(v.config) ? v.config.keras_history : undefined;
    if (Array.isArray(h) && typeof h[0] === 'string') out.push([h[0], Number(h[1] ?? 0), Number(h[2] ?? 0)]);
  }
  return out;
}

function toKeras2Inbound(nodes: unknown): unknown {
  if (!Array.isArray(nodes)) return nodes;
  return nodes.map((n) => (isObj(n) && 'args' in n ? histories(n.args, []).map((h) => [...h, {}]) : n));
}

/** `[[layer, node, tensor], ...]` from Keras 3's single `[layer, node, tensor]` or an already nested list. */
function endpointList(v: unknown): unknown {
  return Array.isArray(v) && typeof v[0] === 'string' ? [v] : v;
}

/**
 * A Keras model config (Keras 3 `config.json` or a Keras 2 / TF.js topology, which pass through) in the Keras 2 form
 * gdp's importer and TF.js read. Layer options are kept as written.
 * @throws GdpError BAD_KERAS_FILE (`source` named) when it is not a model config with a layer list.
 */
export function toLayersTopology(config: unknown, source: string): Cfg {
  const bad = (msg: string) => new GdpError('BAD_KERAS_FILE', `${source}: ${msg}`);
  if (!isObj(config) || typeof config.class_name !== 'string' || !isObj(config.config)) throw bad('the model config is not {class_name, config}');
  const c = config.config;
  if (!Array.isArray(c.layers)) throw bad(`the model config of class '${config.class_name}' has no layer list`);
  const sequential = config.class_name === 'Sequential';
  let layers = (c.layers as unknown[]).map((l, i) => {
    if (!isObj(l) || typeof l.class_name !== 'string' || !isObj(l.config)) throw bad(`layer ${i} is not {class_name, config}`);
    const lc = toKeras2Config(l.config);
    if (l.class_name === 'InputLayer' && lc.batch_shape !== undefined) {
      lc.batch_input_shape = lc.batch_shape;
      delete lc.batch_shape;
    }
    const out: Cfg = { class_name: l.class_name, config: lc };
    if (typeof l.name === 'string') out.name = l.name;
    if (!sequential && l.inbound_nodes !== undefined) out.inbound_nodes = toKeras2Inbound(l.inbound_nodes);
    return out;
  });
  // A Keras 2 Sequential has no InputLayer entry: its first layer carries the batch input shape.
  if (sequential && layers.length > 1 && layers[0].class_name === 'InputLayer') {
    const shape = (layers[0].config as Cfg).batch_input_shape;
    layers = layers.slice(1);
    layers[0] = { ...layers[0], config: { ...(layers[0].config as Cfg), batch_input_shape: shape } };
  }
  const top: Cfg = { ...toKeras2Config(Object.fromEntries(Object.entries(c).filter(([k]) => k !== 'layers'))), layers };
  if (!sequential) {
    top.input_layers = endpointList(c.input_layers);
    top.output_layers = endpointList(c.output_layers);
  }
  return { class_name: config.class_name, config: top };
}

const MODULES: [RegExp, string][] = [
  [/_initializer$/, 'keras.initializers'],
  [/_regularizer$/, 'keras.regularizers'],
  [/_constraint$/, 'keras.constraints'],
];

function keras3Options(c: Cfg): Cfg {
  const out: Cfg = {};
  for (const [k, v] of Object.entries(c)) {
    if (k === 'dtype' && typeof v === 'string') out[k] = { module: 'keras', class_name: 'DTypePolicy', config: { name: v }, registered_name: null };
    else if (isObj(v) && typeof v.class_name === 'string') {
      const module = MODULES.find(([re]) => re.test(k))?.[1] ?? 'keras';
      out[k] = { module, class_name: v.class_name, config: isObj(v.config) ? keras3Options(v.config) : {}, registered_name: null };
    } else out[k] = v;
  }
  return out;
}

/** A Keras 3 symbolic tensor reference in an inbound node (`shape` with the batch axis unknown). */
function kerasTensor(from: ImportedNode): Cfg {
  return { class_name: '__keras_tensor__', config: { shape: [null, ...from.shape], dtype: 'float32', keras_history: [from.name, 0, 0] } };
}

/**
 * A Keras 2 form topology (what gdp keeps) as a Keras 3 `config.json` model config, using the importer's graph of it
 * (`nodes`) for the inbound tensors and their shapes: a Sequential gets its InputLayer entry back, a functional
 * model Keras 3's `args` inbound nodes, and nested objects `module` and `registered_name`.
 */
export function toKeras3Config(topology: Cfg, nodes: readonly ImportedNode[]): Cfg {
  const config = topology.config as Cfg;
  const cls = String(topology.class_name);
  const byName = new Map(nodes.map((n) => [n.name, n]));
  const entry = (l: Cfg): Cfg => {
    const lc = keras3Options({ ...(l.config as Cfg) });
    const shape = lc.batch_input_shape;
    delete lc.batch_input_shape;
    if (l.class_name === 'InputLayer') lc.batch_shape = shape;
    const out: Cfg = { module: 'keras.layers', class_name: l.class_name, config: lc, registered_name: null };
    if (cls !== 'Sequential') {
      out.name = lc.name;
      const ins = byName.get(String(lc.name))?.inputs ?? [];
      const tensors = ins.map((n) => kerasTensor(byName.get(n)!));
      out.inbound_nodes = ins.length ? [{ args: ins.length > 1 ? [tensors] : tensors, kwargs: {} }] : [];
    }
    return out;
  };
  const layers = (config.layers as Cfg[]).map(entry);
  if (cls === 'Sequential') {
    const first = (config.layers as Cfg[])[0].config as Cfg;
    const input = nodes[0];
    layers.unshift({
      module: 'keras.layers',
      class_name: 'InputLayer',
      config: { batch_shape: first.batch_input_shape ?? [null, ...input.shape], dtype: 'float32', sparse: false, name: 'input_layer' },
      registered_name: null,
    });
  }
  const top: Cfg = { ...keras3Options(Object.fromEntries(Object.entries(config).filter(([k]) => k !== 'layers'))), layers };
  return { module: 'keras', class_name: cls === 'Model' ? 'Functional' : cls, config: top, registered_name: null };
}
