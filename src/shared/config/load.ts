import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { GdpError } from '../errors.js';
import { loadHdf5 } from '../io/hdf5.js';
import { isKerasFile } from '../io/keras_suffixes.js';
import { describeIssues, type Override } from './issues.js';
import { resolveModelGraph } from './model_graph.js';
import { configSchema, type Config } from './schema.js';

export function parseConfig(raw: unknown, source = 'config', overrides: readonly string[] = []): Config {
  const r = configSchema.safeParse(raw);
  if (r.success) return r.data;
  const { lines, fromOverrides } = describeIssues(configSchema, r.error, overrides.map(parseOverride));
  throw new GdpError('BAD_CONFIG', `invalid ${fromOverrides ? `--set on ${source}` : source}:\n  ${lines.join('\n  ')}`);
}

/** Splits `key.path=value`; BAD_FLAG without a key. */
function parseOverride(text: string): Override {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new GdpError('BAD_FLAG', `--set expects key.path=value, got '${text}'`);
  return { text, keys: text.slice(0, eq).split('.') };
}

/**
 * The value of a `--set`: JSON when it parses (numbers, booleans, arrays, objects, quoted strings), else the text as a
 * string. Text starting like an array or object (`[`, `{`) must be JSON: read as a string it would only fail
 * validation later, far from the typo.
 * @throws GdpError BAD_CONFIG naming the --set and the JSON error.
 */
function overrideValue(o: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    if (/^\s*[[{]/.test(text)) {
      throw new GdpError('BAD_CONFIG', `--set ${o}: the value starts like JSON but is not JSON (${(err as Error).message}); strings inside need double quotes`);
    }
    return text;
  }
}

/**
 * Applies `key.path=value` overrides to a raw config object (a copy; `raw` is unchanged). Values as overrideValue reads
 * them; `null` removes the key, so that it takes its default (no config key accepts null), e.g. `gbn.tick_batches=null`
 * for the paper's whole-pass Tick when the config file sets a size. The result is validated like the file itself.
 * @throws GdpError BAD_FLAG (no key, a key through a non-section, an illegal key), BAD_CONFIG (a value that is not JSON
 *   though it starts like it).
 */
export function applyOverrides(raw: Record<string, unknown>, overrides: readonly string[]): Record<string, unknown> {
  const out = structuredClone(raw);
  for (const o of overrides) {
    const { keys } = parseOverride(o);
    const value = overrideValue(o, o.slice(o.indexOf('=') + 1));
    let node: Record<string, unknown> = out;
    for (const k of keys.slice(0, -1)) {
      if (k === '__proto__' || k === 'constructor' || k === 'prototype') throw new GdpError('BAD_FLAG', `--set: illegal key '${k}'`);
      const next = node[k];
      if (next === undefined) node[k] = {};
      else if (typeof next !== 'object' || next === null || Array.isArray(next)) {
        throw new GdpError('BAD_FLAG', `--set ${o}: '${k}' is not a section`);
      }
      node = node[k] as Record<string, unknown>;
    }
    if (value === null) delete node[keys[keys.length - 1]];
    else node[keys[keys.length - 1]] = value;
  }
  return out;
}

/**
 * The JSON object in config file `path`, not yet validated.
 * @throws GdpError FILE_NOT_FOUND (the file cannot be read), BAD_CONFIG (not JSON, or not an object).
 */
export function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new GdpError('FILE_NOT_FOUND', `cannot read config file ${path}: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new GdpError('BAD_CONFIG', `config file ${path} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new GdpError('BAD_CONFIG', `config file ${path} must hold a JSON object`);
  return raw as Record<string, unknown>;
}

/**
 * The keys naming files or folders: relative in a config file, they are relative to that file's folder, the run's
 * output folder `base.log_dir` as much as its inputs (a config file gives the same paths from any working directory).
 * A `base.log_dir` the file does not set is the default `logs`, of the working directory.
 */
const CONFIG_PATH_KEYS = [
  ['model', 'file'],
  ['model', 'weights'],
  ['base', 'checkpoint_path'],
  ['base', 'log_dir'],
  ['data', 'dir'],
] as const;

/**
 * Makes the relative paths of CONFIG_PATH_KEYS in `raw`, read from config file `path`, absolute against the file's
 * folder, so that a config finds the files next to it from any working directory (`--set` values, applied after, stay
 * relative to the working directory, as any command-line path). Changes and returns `raw`; values of the wrong type
 * are left for validation.
 */
function resolveConfigPaths(raw: Record<string, unknown>, path: string): Record<string, unknown> {
  const dir = dirname(resolve(path));
  for (const [section, key] of CONFIG_PATH_KEYS) {
    const s = raw[section];
    if (typeof s !== 'object' || s === null || Array.isArray(s)) continue;
    const v = (s as Record<string, unknown>)[key];
    if (typeof v === 'string' && v !== '' && !isAbsolute(v)) (s as Record<string, unknown>)[key] = resolve(dir, v);
  }
  return raw;
}

/** Reads, overrides and validates a config file, then resolves an imported model's graph (resolveModelGraph). */
export function loadConfig(path: string, overrides: readonly string[] = []): Config {
  return resolveModelGraph(parseConfig(applyOverrides(resolveConfigPaths(readConfigFile(path), path), overrides), path, overrides));
}

/**
 * loadConfig that first loads the HDF5 library when `model.file` names a Keras file, so that its topology and
 * starting weights can then be read synchronously (loadHdf5). Same errors.
 */
export async function loadConfigReady(path: string, overrides: readonly string[] = []): Promise<Config> {
  const config = parseConfig(applyOverrides(resolveConfigPaths(readConfigFile(path), path), overrides), path, overrides);
  if (config.model.file !== undefined && isKerasFile(config.model.file)) await loadHdf5();
  return resolveModelGraph(config);
}
