import * as tf from '@tensorflow/tfjs-core';
import { BatchNorm2d } from '../../src/shared/nn/layers.js';
import type { Module } from '../../src/shared/nn/module.js';
import { applyDecision, globalPrune } from '../../src/shared/pruning/decision.js';
import { groupMask } from '../../src/shared/pruning/gates.js';
import { channelStructure, prunableGroups } from '../../src/shared/pruning/groups.js';
import { randomImportance } from '../../src/shared/pruning/importance.js';
import type { Rng } from '../../src/shared/rng.js';
import { useBackend, addGates } from '../helpers.js';

export async function cpu(): Promise<void> {
  await useBackend('cpu');
}

/** Non-trivial BN statistics and affine parameters, so folding and cutting are exercised on real values. */
export function randomiseBatchNorms(model: Module, rng: Rng): void {
  for (const [, m] of model.namedModules()) {
    if (!(m instanceof BatchNorm2d)) continue;
    const c = m.channels;
    const vec = (f: () => number) => tf.tensor1d(Float32Array.from({ length: c }, f));
    m.weight.set(vec(() => 0.5 + rng.next()));
    m.bias.set(vec(() => rng.normal() * 0.5));
    m.runningMean.set(vec(() => rng.normal() * 0.3));
    m.runningVar.set(vec(() => 0.5 + rng.next() * 1.5));
  }
}

export function randomImages(n: number, shape: readonly number[], rng: Rng): tf.Tensor4D {
  const size = n * shape.reduce((a, b) => a * b, 1);
  return tf.tensor4d(
    Float32Array.from({ length: size }, () => rng.normal()),
    [n, shape[0], shape[1], shape[2]],
  );
}

/** Eval-mode logits as a plain array. */
export function evalLogits(model: Module, x: tf.Tensor): Float32Array {
  model.eval();
  const y = model.run(x);
  const out = y.dataSync() as Float32Array;
  y.dispose();
  return out;
}

/**
 * Gates every BN, sets random gates in [0.5, 1.5) and prunes `fraction` of the filters with random scores in one
 * global decision (the decision code does not care where scores come from).
 */
export function gateAndPruneRandomly(model: Module, shape: readonly number[], rng: Rng, fraction: number): void {
  addGates(model);
  for (const [, m] of model.namedModules()) {
    if (m instanceof BatchNorm2d) m.gate!.set(tf.tensor1d(Float32Array.from({ length: m.channels }, () => 0.5 + rng.next())));
  }
  const s = channelStructure(model, shape);
  const entries = prunableGroups(s).map((group) => ({ group, scores: randomImportance(group, rng), mask: groupMask(model, group) }));
  applyDecision(model, globalPrune(entries, { p: fraction, minimalRatio: 0.1, flopsEta: 0, minArea: 1 }).decision);
}

export { maxAbsDiff } from '../helpers.js';
