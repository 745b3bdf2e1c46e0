import type { PadCrop } from '../../src/shared/data/transforms.js';

/**
 * What a pad+crop+flip must give, built pixel by pixel from the un-augmented image `plain` (side x side x channels,
 * HWC, normalised): output (y, x) is plain (y + top - pad, x' + left - pad), x' mirrored when flipping, or the
 * normalised black `padValue[c]` outside the image. Written apart from the loaders' own loops, to check them.
 */
export function padCropReference(plain: Float32Array, side: number, channels: number, pad: number, a: PadCrop, padValue: readonly number[]): Float32Array {
  const out = new Float32Array(side * side * channels);
  for (let y = 0; y < side; y++)
    for (let x = 0; x < side; x++) {
      const sy = y + a.top - pad;
      const sx = (a.flip ? side - 1 - x : x) + a.left - pad;
      const outside = sy < 0 || sy >= side || sx < 0 || sx >= side;
      for (let c = 0; c < channels; c++) out[(y * side + x) * channels + c] = outside ? padValue[c] : plain[(sy * side + sx) * channels + c];
    }
  return out;
}
