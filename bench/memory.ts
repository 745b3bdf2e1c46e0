/**
 * Calibration of src/shared/train/memory.ts: the wasm heap after one pass at one batch size, in a fresh process.
 *
 *   node dist/bench/memory.js ARCH BATCH train|forward
 *
 * Prints one JSON line: the heap size after building the model and after the pass (TF.js' wasm memory only
 * grows, so the second is the pass's peak plus allocator slack), tf.profile's peak of tensor bytes, and the
 * estimator's inputs (activation values per sample, parameters) and estimate.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { initBackend } from '../src/shared/backend.js';
import { countParams } from '../src/shared/graph/flops.js';
import { archSpec, buildModel } from '../src/shared/models/registry.js';
import { tensorOps } from '../src/shared/nn/module.js';
import { Rng } from '../src/shared/rng.js';
import { activationsPerSample, estimatePeakBytes, type PassKind } from '../src/shared/train/memory.js';
import { Replica } from '../src/shared/train/replica.js';

const [arch, batchArg, kindArg] = process.argv.slice(2);
const batch = Number(batchArg);
const kind = kindArg as PassKind;
await initBackend('wasm');
// HEAPU8 is emscripten's view of the whole memory (not in the module's typings).
const heap = () => ((tf.backend() as BackendWasm).wasm as unknown as { HEAPU8: Uint8Array }).HEAPU8.buffer.byteLength;
const spec = archSpec(arch);
const model = buildModel(arch, { seed: 1 });
const replica = new Replica(model, spec.inputShape);
const rng = new Rng(2);
const x = Float32Array.from({ length: batch * spec.inputShape.reduce((a, b) => a * b, 1) }, () => rng.normal());
const y = Int32Array.from({ length: batch }, (_, i) => i % spec.defaultClasses);
const before = heap();
const profile = await tf.profile(() => {
  if (kind === 'train') replica.gradients({ x, y, n: batch }, replica.layout('all'));
  else tf.tidy(() => model.apply(tf.tensor4d(x, [batch, ...spec.inputShape]), tensorOps).dataSync());
});
const out = {
  arch,
  batch,
  kind,
  heapBefore: before,
  heapAfter: heap(),
  tensorPeakBytes: profile.peakBytes,
  activationsPerSample: activationsPerSample(model, spec.inputShape),
  params: countParams(model),
  estimate: Math.round(estimatePeakBytes(model, spec.inputShape, batch, kind)),
};
process.stdout.write(`${JSON.stringify(out)}\n`);
