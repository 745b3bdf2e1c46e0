import { GdpError } from '../errors.js';
import { decodeImageInto, imageSampleSize, type ImageSpec } from './image_decode.js';
import { CIFAR_IMAGE_BYTES, cifarToNhwc, normalisationTable, type Normalisation } from './transforms.js';

/**
 * One chunk of a batch to turn into normalised NHWC floats. The same task runs in a pool thread or in the
 * calling thread; its output depends only on the task (bytes or files, sample indices, seed), never on the thread.
 */
export type DecodeTask =
  | {
      kind: 'cifar';
      /** The chunk's images, channel-planar, 3072 bytes each, in `indices` order. */
      planes: Uint8Array;
      indices: Int32Array;
      augment: boolean;
      seed: number;
      norm: Normalisation;
    }
  | {
      kind: 'image';
      /** One file per sample, in `indices` order. */
      files: string[];
      indices: Int32Array;
      augment: boolean;
      seed: number;
      /** One mean and std per channel of `spec`. */
      norm: Normalisation;
      spec: ImageSpec;
    };

/** Floats per sample of a task's output. */
export function taskSampleSize(task: DecodeTask): number {
  return task.kind === 'cifar' ? CIFAR_IMAGE_BYTES : imageSampleSize(task.spec);
}

const tables = new Map<string, Float32Array>();

function tableFor(norm: Normalisation): Float32Array {
  const key = `${norm.mean.join()}/${norm.std.join()}`;
  let lut = tables.get(key);
  if (!lut) tables.set(key, (lut = normalisationTable(norm)));
  return lut;
}

export async function runDecodeTask(task: DecodeTask): Promise<Float32Array> {
  const n = task.indices.length;
  const lut = tableFor(task.norm);
  const per = taskSampleSize(task);
  const out = new Float32Array(n * per);
  const opts = { augment: task.augment, seed: task.seed, lut };
  if (task.kind === 'cifar') {
    if (task.planes.length !== n * CIFAR_IMAGE_BYTES) throw new GdpError('BAD_DATA', `cifar decode task: ${task.planes.length} bytes for ${n} images`);
    cifarToNhwc(task.planes, task.indices, opts, out);
  } else {
    if (task.norm.mean.length !== task.spec.channels)
      throw new GdpError('BAD_DATA', `image decode task: ${task.norm.mean.length} normalisation channels for ${task.spec.channels}-channel images`);
    for (let i = 0; i < n; i++) await decodeImageInto(task.files[i], task.indices[i], { ...opts, spec: task.spec }, out, i * per);
  }
  return out;
}
