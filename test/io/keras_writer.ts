import { readFileSync, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import * as tf from '@tensorflow/tfjs';
import { strToU8, zipSync } from 'fflate';
import h5wasm, { type Group } from 'h5wasm/node';

/**
 * Writes stock tf.layers models as Keras files, laid out as Keras itself saves them (learnt from keras/src/saving/
 * saving_lib.py and keras/src/legacy/saving/legacy_h5_format.py), for the importer's tests: written here with
 * h5wasm and fflate directly, not with gdp's own Keras writer, so that the reader is checked against the layout
 * rather than against itself. Python Keras is not available to write real ones.
 */

type Cfg = Record<string, unknown>;

/** A layer's variables as Keras orders them: trainable, then non-trainable, each in creation order. */
function layerVariables(l: tf.layers.Layer): tf.LayerVariable[] {
  return [...l.trainableWeights, ...l.nonTrainableWeights];
}

/** h5py's storage of a Python list of bytes: a fixed-length string array attribute. */
function bytesAttr(g: Group, name: string, values: string[]): void {
  if (!values.length)
    g.create_attribute(name, new Float64Array(0), [0], '<d'); // np.asarray([]) is float64
  else g.create_attribute(name, values, [values.length], `S${Math.max(...values.map((v) => Buffer.byteLength(v)))}`);
}

/**
 * Keras 2's `model.save('x.h5')`: root attributes `model_config` (JSON bytes), `keras_version`, `backend`; group
 * `model_weights` with `layer_names`, one group per layer (sorted by name) with `weight_names`
 * (`<layer>/<weight>:0`) and each weight as a dataset at that path inside the layer group.
 * `edit` may change the file before it closes (tests of malformed files).
 */
export async function writeKeras2H5(m: tf.LayersModel, path: string, edit?: (f: Group) => void): Promise<void> {
  await h5wasm.ready;
  const f = new h5wasm.File(path, 'w');
  try {
    const json = JSON.stringify(m.toJSON(null, false));
    f.create_attribute('model_config', json, null, `S${Buffer.byteLength(json)}`);
    f.create_attribute('keras_version', '2.15.0', null, 'S6');
    f.create_attribute('backend', 'tensorflow', null, 'S10');
    const mw = f.create_group('model_weights');
    bytesAttr(
      mw,
      'layer_names',
      m.layers.map((l) => l.name),
    );
    for (const l of [...m.layers].sort((a, b) => a.name.localeCompare(b.name))) {
      const g = mw.create_group(l.name);
      const vars = layerVariables(l);
      bytesAttr(
        g,
        'weight_names',
        vars.map((v) => `${v.originalName}:0`),
      );
      for (const v of vars) {
        const [group, leaf] = [v.originalName.slice(0, v.originalName.lastIndexOf('/')), v.originalName.slice(v.originalName.lastIndexOf('/') + 1)];
        const sub = (g.get(group) as Group | null) ?? g.create_group(group);
        sub.create_dataset({ name: `${leaf}:0`, data: v.read().dataSync() as Float32Array, shape: v.shape as number[], dtype: '<f' });
      }
    }
    edit?.(f);
  } finally {
    f.close();
  }
}

/** A Keras 3 serialized object (`module`, `class_name`, `config`, `registered_name`). */
const k3 = (module: string, class_name: string, config: Cfg): Cfg => ({ module, class_name, config, registered_name: null });

/** A layer's Keras 3 config from its Keras 2 one: dtype policies and nested objects as Keras 3 serializes them. */
function keras3LayerConfig(c: Cfg): Cfg {
  const out: Cfg = { ...c, dtype: k3('keras', 'DTypePolicy', { name: 'float32' }) };
  delete out.batch_input_shape;
  for (const [k, v] of Object.entries(c)) {
    const o = v as { class_name?: string; config?: Cfg } | null;
    if (o && typeof o === 'object' && typeof o.class_name === 'string')
      out[k] = k3(
        k.endsWith('_initializer') ? 'keras.initializers' : k.endsWith('_regularizer') ? 'keras.regularizers' : 'keras.constraints',
        o.class_name,
        o.config ?? {},
      );
  }
  return out;
}

/**
 * The Keras 3 `config.json` of a stock model: a Sequential lists its InputLayer (`batch_shape`) first; a functional
 * model's layers call `__keras_tensor__` arguments naming their `keras_history`, a merge layer with one list
 * argument; a single output is written as one `[layer, 0, 0]`.
 */
export function keras3Config(m: tf.LayersModel): Cfg {
  const topo = m.toJSON(null, false) as unknown as { class_name: string; config: { name: string; layers: Cfg[] } };
  const sequential = topo.class_name === 'Sequential';
  const outputs = new Map(m.layers.map((l) => [l.name, l.outputShape as (number | null)[]]));
  const tensor = (name: string) => ({ class_name: '__keras_tensor__', config: { shape: outputs.get(name), dtype: 'float32', keras_history: [name, 0, 0] } });
  const layers: Cfg[] = topo.config.layers.map((l) => {
    const c = l.config as Cfg;
    const entry: Cfg = {
      ...k3(
        'keras.layers',
        String(l.class_name),
        l.class_name === 'InputLayer' ? { batch_shape: c.batch_input_shape, dtype: 'float32', sparse: false, name: c.name } : keras3LayerConfig(c),
      ),
      name: c.name,
    };
    if (!sequential) {
      const ins = ((l.inbound_nodes as unknown[][][] | undefined)?.[0] ?? []).map((n) => tensor(String(n[0])));
      entry.inbound_nodes = ins.length ? [{ args: ins.length > 1 ? [ins] : ins, kwargs: {} }] : [];
    }
    return entry;
  });
  if (sequential) {
    const shape = (topo.config.layers[0].config as Cfg).batch_input_shape;
    layers.unshift(k3('keras.layers', 'InputLayer', { batch_shape: shape, dtype: 'float32', sparse: false, name: 'input_layer' }));
    return k3('keras', 'Sequential', { name: topo.config.name, trainable: true, dtype: k3('keras', 'DTypePolicy', { name: 'float32' }), layers });
  }
  const fc = topo.config as unknown as { input_layers: unknown[]; output_layers: unknown[][] };
  return k3('keras', 'Functional', {
    name: topo.config.name,
    trainable: true,
    layers,
    input_layers: fc.input_layers,
    output_layers: fc.output_layers.length === 1 ? fc.output_layers[0] : fc.output_layers,
  });
}

/**
 * Keras 3's `model.save('x.keras')`: a zip of metadata.json, config.json and model.weights.h5, whose groups
 * `layers/<snake_case class>[_k]/vars` (k counts earlier layers of that class; a Sequential's InputLayer is not in
 * its layer list) hold datasets `0`, `1`, ... and name their layer in a `name` attribute.
 * `edit` may change the config or the HDF5 file before they are zipped (tests of malformed files).
 */
export async function writeKeras3(
  m: tf.LayersModel,
  path: string,
  edit: { config?: (c: Cfg) => void; h5?: (f: Group) => void; drop?: string } = {},
): Promise<void> {
  await h5wasm.ready;
  const h5path = `${path}.weights.h5`;
  const f = new h5wasm.File(h5path, 'w');
  try {
    f.create_group('vars').create_attribute('name', m.name);
    const root = f.create_group('layers');
    const seen = new Map<string, number>();
    const own = m.getClassName() === 'Sequential' ? m.layers.filter((l) => l.getClassName() !== 'InputLayer') : m.layers;
    for (const l of own) {
      // Keras' naming.to_snake_case on the class name; the counter suffix starts at _1 for the second one.
      const snake = l
        .getClassName()
        .replace(/(.)([A-Z][a-z]+)/g, '$1_$2')
        .replace(/([a-z])([A-Z])/g, '$1_$2')
        .toLowerCase();
      const k = seen.get(snake) ?? 0;
      seen.set(snake, k + 1);
      const vars = root.create_group(k ? `${snake}_${k}` : snake).create_group('vars');
      vars.create_attribute('name', l.name);
      layerVariables(l).forEach((v, i) =>
        vars.create_dataset({ name: String(i), data: v.read().dataSync() as Float32Array, shape: v.shape as number[], dtype: '<f' }),
      );
    }
    edit.h5?.(f);
  } finally {
    f.close();
  }
  const config = keras3Config(m);
  edit.config?.(config);
  const members: Record<string, Uint8Array> = {
    'metadata.json': strToU8(JSON.stringify({ keras_version: '3.10.0', date_saved: '2026-11-30@08:00:00' })),
    'config.json': strToU8(JSON.stringify(config)),
    'model.weights.h5': new Uint8Array(readFileSync(h5path)),
  };
  rmSync(h5path);
  if (edit.drop) delete members[edit.drop];
  await writeFile(path, zipSync(members, { level: 0 }));
}
