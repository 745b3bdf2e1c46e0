/**
 * One data-parallel replica's training step on a fixed random batch, for the step benchmarks (train_ab.ts,
 * kernel_profile.ts): the model of `arch` (seed 1), a batch of `batchSize` normal(0, 1) images (NHWC) with random
 * labels (seed 2), and SGD with momentum. Call after the backend is initialised.
 */
import { archSpec, buildModel } from '../src/shared/models/registry.js';
import { Rng } from '../src/shared/rng.js';
import { Replica } from '../src/shared/train/replica.js';

export function trainingStep(arch: string, batchSize: number) {
  const spec = archSpec(arch);
  const model = buildModel(arch, { seed: 1 });
  const replica = new Replica(model, spec.inputShape);
  const layout = replica.layout('all');
  const rng = new Rng(2);
  const [h, w, c] = spec.inputShape;
  const batch = {
    x: new Float32Array(batchSize * h * w * c).map(() => rng.normal()),
    y: Int32Array.from({ length: batchSize }, () => rng.int(spec.defaultClasses)),
    n: batchSize,
  };
  const sgd = { lr: 0.01, momentum: 0.9, weightDecay: 5e-4, nesterov: false };
  /** Forward and backward pass: the batch's gradients, summed over its images (no update). */
  const gradients = () => replica.gradients(batch, layout);
  /** Gradients and the SGD update. */
  const step = () => {
    const { grad } = gradients();
    for (let i = 0; i < grad.length; i++) grad[i] /= batchSize;
    replica.applyGradient(layout, grad, sgd);
  };
  return { model, layout, gradients, step };
}
