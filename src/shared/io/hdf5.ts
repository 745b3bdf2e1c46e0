import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import type { Dataset, Group } from 'h5wasm/node';
import { GdpError } from '../errors.js';

/**
 * HDF5 through h5wasm (libhdf5 compiled to WebAssembly; its Node build opens host files by path). Its WebAssembly
 * module starts asynchronously and takes a second or more to compile, so it is loaded on demand: `loadHdf5()` once,
 * then the synchronous `hdf5()` (start-up code that reads a config's `model.file` runs synchronously).
 */
type H5 = typeof import('h5wasm/node');

let lib: H5 | undefined;
let loading: Promise<H5> | undefined;

/** Loads and starts the HDF5 library (once per process); later calls return the same module. */
export function loadHdf5(): Promise<H5> {
  loading ??= import('h5wasm/node').then(async (m) => {
    await m.ready;
    lib = m;
    return m;
  });
  return loading;
}

/** The HDF5 library after `loadHdf5()` resolved; calling it earlier is a programming error in gdp, not bad input. */
export function hdf5(): H5 {
  if (!lib) throw new Error('the HDF5 library is not loaded yet: await loadHdf5() before reading or writing HDF5 files');
  return lib;
}

/** HDF5's format signature; it opens the superblock at byte 0 or at 512, 1024, 2048, ... (after a user block). */
const SIGNATURE = Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]);

function hasSignature(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const head = Buffer.alloc(SIGNATURE.length);
    for (let at = 0; at + SIGNATURE.length <= size; at = at ? at * 2 : 512) {
      readSync(fd, head, 0, SIGNATURE.length, at);
      if (head.equals(SIGNATURE)) return true;
    }
    return false;
  } finally {
    closeSync(fd);
  }
}

/**
 * Opens the HDF5 file `path` ('r' reads, 'w' creates or truncates), runs `fn` on it and closes it, also on errors.
 * A file to read is checked for HDF5's signature first (libhdf5 would print its error stack on stderr).
 * @throws GdpError FILE_NOT_FOUND, or BAD_KERAS_FILE naming the file when it is not HDF5.
 */
export function withHdf5File<T>(path: string, mode: 'r' | 'w', fn: (f: Group) => T): T {
  const h5 = hdf5();
  if (mode === 'r') {
    let ok: boolean;
    try {
      ok = hasSignature(path);
    } catch (e) {
      throw new GdpError('FILE_NOT_FOUND', `cannot read ${path}: ${(e as Error).message}`);
    }
    if (!ok) throw new GdpError('BAD_KERAS_FILE', `${path}: not an HDF5 file (no HDF5 signature)`);
  }
  let f: InstanceType<H5['File']>;
  try {
    f = new h5.File(path, mode);
  } catch (e) {
    throw new GdpError('BAD_KERAS_FILE', `${path}: cannot open as HDF5 (${(e as Error).message})`);
  }
  if (f.file_id < 0n) throw new GdpError('BAD_KERAS_FILE', `${path}: cannot open as HDF5`);
  try {
    return fn(f);
  } finally {
    f.close();
  }
}

/** A group child of `g`, or undefined when `name` is missing or is not a group. */
export function childGroup(g: Group, name: string): Group | undefined {
  const c = g.get(name);
  return c instanceof hdf5().Group ? c : undefined;
}

/** A dataset child of `g`, or undefined when `name` is missing or is not a dataset. */
export function childDataset(g: Group, name: string): Dataset | undefined {
  const c = g.get(name);
  return c instanceof hdf5().Dataset ? c : undefined;
}

/** A string attribute (fixed or variable length, scalar); undefined when absent or of another type. */
export function stringAttr(g: Group, name: string): string | undefined {
  if (!(name in g.attrs)) return undefined;
  const v = g.attrs[name].value;
  return typeof v === 'string' ? v : undefined;
}

/**
 * A list-of-strings attribute, also when split in chunks `name0`, `name1`, ... (h5py writers split attributes past
 * the 64 KiB object-header limit so); undefined when absent.
 */
export function stringListAttr(g: Group, name: string): string[] | undefined {
  const attrs = g.attrs;
  const one = (n: string): string[] => {
    const v = attrs[n].value;
    if (typeof v === 'string') return [v];
    return Array.isArray(v) ? v.map((x) => String(x)) : [];
  };
  if (name in attrs) return one(name);
  if (!(`${name}0` in attrs)) return undefined;
  const out: string[] = [];
  for (let i = 0; `${name}${i}` in attrs; i++) out.push(...one(`${name}${i}`));
  return out;
}

/**
 * The values of a float dataset as float32 with its shape (row-major, as stored).
 * @throws GdpError BAD_KERAS_FILE naming `what` for a non-float dataset.
 */
export function readFloats(d: Dataset, what: string): { shape: number[]; data: Float32Array } {
  const v = d.value;
  const shape = d.shape ?? [];
  if (v instanceof Float32Array) return { shape, data: v };
  if (v instanceof Float64Array) return { shape, data: Float32Array.from(v) };
  throw new GdpError('BAD_KERAS_FILE', `${what}: dtype ${JSON.stringify(d.dtype)} is not float32 or float64`);
}

/** Writes `data` (row-major) as a float32 dataset `name` of `g`. */
export function writeFloats(g: Group, name: string, data: Float32Array, shape: number[]): void {
  g.create_dataset({ name, data, shape, dtype: '<f' });
}
