/**
 * The file names of Keras models, told apart from TF.js model.json files (and their folders) by suffix alone. Light on
 * purpose (no h5wasm, no TF.js): command lines check --keras with it before loading anything.
 */

/** `.keras` (Keras 3), `.h5` / `.hdf5` (legacy Keras 2). */
export const KERAS_SUFFIXES = ['.keras', '.h5', '.hdf5'] as const;

/** Whether `path` names a Keras file (by its suffix) rather than a TF.js model.json or its folder. */
export function isKerasFile(path: string): boolean {
  const p = path.toLowerCase();
  return KERAS_SUFFIXES.some((s) => p.endsWith(s));
}
