import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { GdpError } from '../errors.js';
import { loadHdf5 } from '../io/hdf5.js';
import { isKerasFile } from '../io/keras_files.js';
import { resolveModelGraph } from './model_graph.js';
import { configSchema, type Config } from './schema.js';

/** Formats zod issues as "key.path: message" lines. */
function describeIssues(err: z.ZodError): string {
  return err.issues
    .map((i) => {
      const path = i.path.length ? i.path.join('.') : '(top level)';
      if (i.code === 'unrecognized_keys') return `${path}: unknown key(s) ${i.keys.map((k) => `'${k}'`).join(', ')}`;
      return `${path}: ${i.message}`;
    })
    .join('\n  ');
}

export function parseConfig(raw: unknown, source = 'config'): Config {
  const r = configSchema.safeParse(raw);
  if (!r.success) throw new GdpError('BAD_CONFIG', `invalid ${source}:\n  ${describeIssues(r.error)}`);
  return r.data;
}

/**
 * Applies `key.path=value` overrides to a raw config object. The value is parsed as JSON when it can be
 * (numbers, booleans, arrays), else taken as a string; the result is validated like the file itself.
 */
export function applyOverrides(raw: Record<string, unknown>, overrides: readonly string[]): Record<string, unknown> {
  const out = structuredClone(raw);
  for (const o of overrides) {
    const eq = o.indexOf('=');
    if (eq <= 0) throw new GdpError('BAD_FLAG', `--set expects key.path=value, got '${o}'`);
    const keys = o.slice(0, eq).split('.');
    const text = o.slice(eq + 1);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      value = text;
    }
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
    node[keys[keys.length - 1]] = value;
  }
  return out;
}

export function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new GdpError('BAD_CONFIG', `cannot read config file ${path}: ${(err as Error).message}`);
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

/** Reads, overrides and validates a config file, then resolves an imported model's graph (resolveModelGraph). */
export function loadConfig(path: string, overrides: readonly string[] = []): Config {
  return resolveModelGraph(parseConfig(applyOverrides(readConfigFile(path), overrides), path));
}

/**
 * loadConfig that first loads the HDF5 library when `model.file` names a Keras file, so that its topology and
 * starting weights can then be read synchronously (loadHdf5). Same errors.
 */
export async function loadConfigReady(path: string, overrides: readonly string[] = []): Promise<Config> {
  const config = parseConfig(applyOverrides(readConfigFile(path), overrides), path);
  if (config.model.file !== undefined && isKerasFile(config.model.file)) await loadHdf5();
  return resolveModelGraph(config);
}
