import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initBackend } from '../../src/shared/backend.js';
import { GdpError } from '../../src/shared/errors.js';
import { loadModel } from '../../src/shared/io/model_file.js';
import { MAX_HEADER_BYTES, parseSafetensors, readSafetensorsMetadata, type HostTensor } from '../../src/shared/io/safetensors.js';
import { exportTorchState } from '../../src/shared/io/torch_state.js';
import { maxAbsDiff } from '../helpers.js';
import { predictLogits } from '../../src/shared/models/infer.js';
import { buildModel } from '../../src/shared/models/registry.js';
import { Rng } from '../../src/shared/rng.js';
import { fixture, fixtureInputNhwc, fixtureLogits, hasFixture, INPUT_SHAPE_NHWC } from './fixture.js';

await initBackend('wasm');

/** One tensor as a writer lays it out: dtype, shape and its little-endian bytes. */
interface Stored {
  name: string;
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

const f32 = (v: Float32Array): Uint8Array => new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
const bytes = (...b: number[]): Uint8Array => Uint8Array.from(b);
const u16le = (...v: number[]): Uint8Array => new Uint8Array(Uint16Array.from(v).buffer);

/** A file byte by byte: 8-byte LE header length, the JSON header (`header` overrides the generated text), data. */
function build(entries: Stored[], metadata?: Record<string, unknown>, header?: string, trailing = 0): Uint8Array {
  let off = 0;
  const fields: string[] = metadata ? [`"__metadata__":${JSON.stringify(metadata)}`] : [];
  for (const e of entries) {
    fields.push(`${JSON.stringify(e.name)}:{"dtype":"${e.dtype}","shape":${JSON.stringify(e.shape)},"data_offsets":[${off},${off + e.bytes.length}]}`);
    off += e.bytes.length;
  }
  const text = new TextEncoder().encode(header ?? `{${fields.join(',')}}`);
  const out = new Uint8Array(8 + text.length + off + trailing);
  new DataView(out.buffer).setBigUint64(0, BigInt(text.length), true);
  out.set(text, 8);
  let p = 8 + text.length;
  for (const e of entries) {
    out.set(e.bytes, p);
    p += e.bytes.length;
  }
  return out;
}

/** An int64 scalar as `torch.save_file` stores a BN's num_batches_tracked. */
const i64 = (v: bigint): Uint8Array => new Uint8Array(BigInt64Array.from([v]).buffer);

/**
 * What `safetensors.torch.save_file(model.state_dict())` writes: every tensor as F32 in the state dict's order,
 * with an I64 `<bn>.num_batches_tracked` right after each BN's `running_var`, and metadata {"format": "pt"}.
 */
function stateDictFile(tensors: Map<string, HostTensor>): Uint8Array {
  const entries: Stored[] = [];
  for (const [name, t] of tensors) {
    entries.push({ name, dtype: 'F32', shape: t.shape, bytes: f32(t.data) });
    if (name.endsWith('.running_var')) entries.push({ name: name.replace(/running_var$/, 'num_batches_tracked'), dtype: 'I64', shape: [], bytes: i64(78200n) });
  }
  return build(entries, { format: 'pt' });
}

const badFile =
  (...mention: string[]) =>
  (e: unknown) =>
    e instanceof GdpError && e.code === 'BAD_SAFETENSORS' && mention.every((m) => e.message.includes(m));

test(
  "the paper's ResNet-56 saved as PyTorch's state_dict (I64 num_batches_tracked) loads with the fixture's logits",
  { skip: hasFixture ? false : 'fixture absent' },
  async () => {
    const plain = parseSafetensors(new Uint8Array(readFileSync(fixture('resnet56_cifar10_baseline.safetensors'))));
    const file = parseSafetensors(stateDictFile(plain.tensors), 'resnet56_pt.safetensors');
    // One counter per BN: the stem's, two in each of the 27 blocks, and the two option-B shortcuts'.
    const counters = [...file.other].filter(([n]) => n.endsWith('.num_batches_tracked'));
    assert.equal(counters.length, 57);
    assert.equal(file.other.size, 57);
    assert.equal(new DataView(counters[0][1].bytes.buffer, counters[0][1].bytes.byteOffset).getBigInt64(0, true), 78200n);
    assert.deepEqual(file.metadata, { format: 'pt' });
    const { model } = loadModel(file, { arch: 'cifar.resnet56' }, 'resnet56_pt.safetensors');
    try {
      const diff = maxAbsDiff(predictLogits(model, await fixtureInputNhwc(), INPUT_SHAPE_NHWC), await fixtureLogits('base'));
      assert.ok(diff <= 1e-4, `max abs diff ${diff}`);
    } finally {
      model.dispose();
    }
  },
);

test('a state_dict with I64 num_batches_tracked (and a DataParallel prefix) loads with the same logits as the plain file', () => {
  const model = buildModel('mnist.resnet20', { seed: 7 });
  const rng = new Rng(3);
  const x = Float32Array.from({ length: 2 * 28 * 28 }, () => rng.normal());
  const want = predictLogits(model, x, [2, 28, 28, 1]);
  const state = exportTorchState(model);
  model.dispose();
  for (const prefix of ['', 'module.']) {
    const file = parseSafetensors(stateDictFile(new Map([...state].map(([n, t]) => [prefix + n, t]))));
    assert.equal(file.other.get(`${prefix}bn1.num_batches_tracked`)?.dtype, 'I64');
    const loaded = loadModel(file, { arch: 'mnist.resnet20' });
    try {
      assert.deepEqual(predictLogits(loaded.model, x, [2, 28, 28, 1]), want);
    } finally {
      loaded.model.dispose();
    }
  }
});

test('every float dtype PyTorch writes converts to float32', () => {
  const cases: [string, Uint8Array, number[]][] = [
    ['F64', new Uint8Array(Float64Array.from([1 / 3, -2.5e300]).buffer), [Math.fround(1 / 3), -Infinity]],
    ['F32', f32(Float32Array.from([1.5, -0])), [1.5, -0]],
    ['F16', u16le(0x3c00, 0xc000, 0x7c00, 0x0001, 0x7bff), [1, -2, Infinity, 2 ** -24, 65504]],
    ['BF16', u16le(0x3f80, 0xc0a0, 0xff80), [1, -5, -Infinity]],
    // e4m3fn: bias 7, no infinities, S.1111.111 is NaN; 0x7e is the largest finite value, 448.
    ['F8_E4M3', bytes(0x38, 0xb8, 0x7e, 0x01, 0x7f), [1, -1, 448, 2 ** -9, NaN]],
    ['F8_E5M2', bytes(0x3c, 0x7c, 0x01, 0xc0, 0x7d), [1, Infinity, 2 ** -16, -2, NaN]],
    ['F8_E8M0', bytes(127, 130, 0, 255), [1, 8, 2 ** -127, NaN]],
  ];
  for (const [dtype, data, want] of cases) {
    const t = parseSafetensors(build([{ name: 'x', dtype, shape: [want.length], bytes: data }])).tensors.get('x');
    assert.deepEqual(t?.shape, [want.length], dtype);
    assert.deepEqual([...t!.data], want, dtype);
  }
});

test('integer, bool and complex tensors are parsed as raw bytes of their size; a gdp weight stored so is refused by name', () => {
  const ints: [string, number][] = [
    ['I64', 8],
    ['I32', 4],
    ['I16', 2],
    ['I8', 1],
    ['U64', 8],
    ['U32', 4],
    ['U16', 2],
    ['U8', 1],
    ['BOOL', 1],
    ['C64', 8],
  ];
  const entries = ints.map(([dtype, size]) => ({ name: dtype.toLowerCase(), dtype, shape: [2, 3], bytes: new Uint8Array(6 * size).fill(1) }));
  const file = parseSafetensors(build(entries));
  assert.equal(file.tensors.size, 0);
  for (const [dtype, size] of ints) {
    const t = file.other.get(dtype.toLowerCase());
    assert.equal(t?.dtype, dtype);
    assert.deepEqual(t?.shape, [2, 3]);
    assert.equal(t?.bytes.length, 6 * size);
  }
  assert.throws(
    () => parseSafetensors(build([{ name: 'c', dtype: 'I32', shape: [3], bytes: new Uint8Array(8) }])),
    badFile("'c'", '8 bytes', 'shape [3] of I32 takes 12'),
  );

  const model = buildModel('mnist.resnet20', { seed: 1 });
  const state = exportTorchState(model);
  model.dispose();
  const asStored = (name: string, t: HostTensor): Stored => ({ name, dtype: 'F32', shape: t.shape, bytes: f32(t.data) });
  const entriesOf = (edit: (s: Stored) => Stored): Stored[] => [...state].map(([n, t]) => edit(asStored(n, t)));
  const intWeight = parseSafetensors(build(entriesOf((s) => (s.name === 'conv1.weight' ? { ...s, dtype: 'I32' } : s))), 'int.safetensors');
  assert.throws(
    () => loadModel(intWeight, { arch: 'mnist.resnet20' }, 'int.safetensors'),
    (e: unknown) => e instanceof GdpError && e.code === 'BAD_DTYPE' && /'conv1\.weight' is I32/.test(e.message),
  );
  const extra = parseSafetensors(build([...entriesOf((s) => s), { name: 'bn1.step', dtype: 'I64', shape: [], bytes: i64(1n) }]), 'extra.safetensors');
  assert.throws(
    () => loadModel(extra, { arch: 'mnist.resnet20' }, 'extra.safetensors'),
    (e: unknown) => e instanceof GdpError && e.code === 'UNEXPECTED_TENSOR' && e.message.includes("'bn1.step' (I64)"),
  );
});

test("the format's header and layout rules: each broken one is BAD_SAFETENSORS naming it", () => {
  const a: Stored = { name: 'a', dtype: 'F32', shape: [2], bytes: f32(Float32Array.from([1, 2])) };
  const b: Stored = { name: 'b', dtype: 'F16', shape: [1, 2], bytes: u16le(0x3c00, 0x3c00) };
  const ok = parseSafetensors(build([a, b], { format: 'pt' }));
  assert.deepEqual([...ok.tensors.get('b')!.data], [1, 1]);
  // Scalars and empty tensors take no room beyond their item count; padding spaces after the JSON are allowed.
  const empty = parseSafetensors(
    build([a, { name: 'e', dtype: 'F32', shape: [0, 4], bytes: new Uint8Array(0) }, { name: 's', dtype: 'F64', shape: [], bytes: new Uint8Array(8) }]),
  );
  assert.deepEqual(empty.tensors.get('e')?.data.length, 0);
  assert.deepEqual(empty.tensors.get('s')?.shape, []);
  const padded = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}    ';
  assert.equal(parseSafetensors(build([a], undefined, padded)).tensors.get('a')?.data[1], 2);

  const header = (h: string, data = 8) => build([{ ...a, bytes: new Uint8Array(data) }], undefined, h);
  const at = (begin: number, end: number, name = 'a') => `"${name}":{"dtype":"F32","shape":[2],"data_offsets":[${begin},${end}]}`;
  assert.throws(() => parseSafetensors(new Uint8Array(5)), badFile('shorter than the 8-byte header length'));
  const huge = new Uint8Array(16);
  new DataView(huge.buffer).setBigUint64(0, BigInt(MAX_HEADER_BYTES + 1), true);
  assert.throws(() => parseSafetensors(huge), badFile(`limit of ${MAX_HEADER_BYTES} bytes`));
  const long = build([a]);
  assert.throws(() => parseSafetensors(long.subarray(0, 20)), badFile('exceeds the file', 'truncated'));
  // A TF.js model.json where a weights file is wanted: said so, not as a header length in the quintillions.
  const modelJson = new TextEncoder().encode('{"modelTopology": {"class_name": "Sequential"}, "weightsManifest": []}');
  assert.throws(() => parseSafetensors(modelJson, 'model.json'), badFile('model.json: this is a JSON file, not safetensors', 'gdp-model import'));
  assert.throws(() => parseSafetensors(header(` {${at(0, 8)}}`)), badFile("must start with '{'"));
  assert.throws(() => parseSafetensors(header(`{${at(0, 8)},}`)), badFile('not valid JSON'));
  const notUtf8 = header(`{${at(0, 8)}}`);
  notUtf8[9] = 0xff;
  assert.throws(() => parseSafetensors(notUtf8), badFile('not valid UTF-8'));
  assert.throws(() => parseSafetensors(header(`{${at(0, 8)},${at(0, 8)}}`)), badFile('key "a" twice'));
  assert.throws(() => parseSafetensors(header(`{${at(0, 8)},"\\u0061":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`)), badFile('key "a" twice'));
  assert.throws(() => parseSafetensors(header(`{"a":{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}}`)), badFile('key "dtype" twice in a'));
  assert.throws(() => parseSafetensors(header(`{"__metadata__":{"k":"1","k":"2"},${at(0, 8)}}`)), badFile('key "k" twice in __metadata__'));
  assert.throws(() => parseSafetensors(header(`{"__metadata__":{"epoch":3},${at(0, 8)}}`)), badFile('__metadata__.epoch must be a string'));
  assert.throws(() => parseSafetensors(header(`{"__metadata__":["x"],${at(0, 8)}}`)), badFile('__metadata__ must be an object of strings'));
  assert.throws(() => parseSafetensors(header('{"a":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}}', 1)), badFile('unknown dtype "F4"', 'I64'));
  assert.throws(() => parseSafetensors(header('{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}')), badFile("'a'", 'shape [-2]'));
  assert.throws(() => parseSafetensors(header('{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}')), badFile("'a'", 'begin <= end'));
  assert.throws(() => parseSafetensors(header('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":[]}')), badFile("'b'", 'not an object'));
  // Offsets must cover the data exactly: a gap, an overlap, bytes past the end or trailing bytes are refused.
  assert.throws(() => parseSafetensors(header(`{${at(8, 16)}}`, 16)), badFile("'a' begins at byte 8", 'a gap'));
  assert.throws(() => parseSafetensors(header(`{${at(0, 8)},${at(4, 12, 'b')}}`, 12)), badFile("'b' [4, 12] overlaps tensor 'a'"));
  assert.throws(() => parseSafetensors(header(`{${at(0, 8)},${at(8, 16, 'b')}}`, 12)), badFile("tensor 'b' ends at byte 16, past the 12 data bytes"));
  assert.throws(() => parseSafetensors(build([a], undefined, undefined, 4)), badFile('holds 12 bytes but the tensors cover 8', '4 bytes trailing'));
  // Offsets need not follow the header's key order, only cover the buffer.
  const swapped = parseSafetensors(header(`{${at(8, 16, 'b')},${at(0, 8)}}`, 16));
  assert.deepEqual([...swapped.tensors.keys()], ['b', 'a']);
});

test("readSafetensorsMetadata reads a file's metadata from its header alone, checked by the same rules", () => {
  const dir = mkdtempSync(join(tmpdir(), 'gdp-safetensors-'));
  try {
    const a: Stored = { name: 'a', dtype: 'F32', shape: [2], bytes: f32(Float32Array.from([1, 2])) };
    const file = join(dir, 'a.safetensors');
    writeFileSync(file, build([a], { format: 'gdp-resume/1' }));
    assert.deepEqual(readSafetensorsMetadata(file), { format: 'gdp-resume/1' });
    const huge = new Uint8Array(16);
    new DataView(huge.buffer).setBigUint64(0, BigInt(MAX_HEADER_BYTES + 1), true);
    writeFileSync(join(dir, 'huge.safetensors'), huge);
    assert.throws(() => readSafetensorsMetadata(join(dir, 'huge.safetensors')), badFile('huge.safetensors', `limit of ${MAX_HEADER_BYTES} bytes`));
    writeFileSync(join(dir, 'cut.safetensors'), build([a]).subarray(0, 20));
    assert.throws(() => readSafetensorsMetadata(join(dir, 'cut.safetensors')), badFile('cut.safetensors', 'truncated'));
    assert.throws(() => readSafetensorsMetadata(join(dir, 'absent.safetensors')), { code: 'ENOENT' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
