import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nchwToNhwc, readF32 } from '../../src/shared/io/raw_tensor.js';

/** The repo root: this file compiles to dist/test/io/, three levels below it. */
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
/** The paper's ResNet-56 weights and PyTorch's logits, shared beside the repo (see its README). */
export const FIXTURE = join(REPO_ROOT, '..', 'shared', 'fixtures', 'pytorch-resnet56');
export const fixture = (name: string): string => join(FIXTURE, name);
export const hasFixture = existsSync(join(FIXTURE, 'input_a.f32'));

export const INPUT_SHAPE_NCHW = [8, 3, 32, 32] as const;
export const INPUT_SHAPE_NHWC = [8, 32, 32, 3] as const;

export async function fixtureInputNhwc(): Promise<Float32Array> {
  return nchwToNhwc(await readF32(fixture('input_a.f32'), INPUT_SHAPE_NCHW), INPUT_SHAPE_NCHW);
}
export async function fixtureLogits(which: 'base' | 'gbn70'): Promise<Float32Array> {
  return readF32(fixture(`logits_${which}_a.f32`), [8, 10]);
}
