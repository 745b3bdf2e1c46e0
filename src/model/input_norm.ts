import { describeNormalisation, type Normalisation } from '../shared/data/transforms.js';
import { GdpError } from '../shared/errors.js';
import type { LoadedModel } from '../shared/io/model_file.js';

/** The flags that override a model file's input normalisation: comma-separated numbers, one per input channel. */
export interface NormFlags {
  mean?: string;
  std?: string;
}

/** The normalisation a command feeds its images with, and the line saying where it comes from. */
export interface ChosenNormalisation {
  /** Undefined: neither the flags nor the file give one (the dataset's own, as before files recorded it). */
  norm?: Normalisation;
  line: string;
}

function parseList(flag: string, v: string, channels: number): number[] {
  const values = v.split(',').map((s) => Number(s.trim()));
  if (values.some((x, i) => !Number.isFinite(x) || v.split(',')[i].trim() === ''))
    throw new GdpError('BAD_FLAG', `${flag} takes comma-separated numbers (pixels in [0, 1]), got '${v}'`);
  if (values.length !== channels) throw new GdpError('BAD_FLAG', `${flag} has ${values.length} value(s), the model's input has ${channels} channel(s)`);
  return values;
}

/**
 * The input normalisation for `m`: `--mean`/`--std` when given (overriding the file's, said so), else the one the
 * file records (`input_mean`/`input_std`), else none. Per channel, pixels in [0, 1].
 * @throws GdpError BAD_FLAG for one of --mean/--std without the other, a value that is not a number, a count other
 *   than the model's input channels, or a std that is not positive.
 */
export function chooseNormalisation(o: NormFlags, m: Pick<LoadedModel, 'norm' | 'inputShape'>, weights: string): ChosenNormalisation {
  if ((o.mean === undefined) !== (o.std === undefined))
    throw new GdpError('BAD_FLAG', `${o.mean === undefined ? '--std' : '--mean'} needs ${o.mean === undefined ? '--mean' : '--std'} too`);
  const channels = m.inputShape[2];
  if (o.mean !== undefined && o.std !== undefined) {
    const norm = { mean: parseList('--mean', o.mean, channels), std: parseList('--std', o.std, channels) };
    const flat = norm.std.findIndex((v) => !(v > 0));
    if (flat >= 0) throw new GdpError('BAD_FLAG', `--std must be positive, channel ${flat} is ${norm.std[flat]}`);
    const over = m.norm ? `, overriding ${weights}'s ${describeNormalisation(m.norm)}` : '';
    return { norm, line: `input normalisation from --mean/--std: ${describeNormalisation(norm)}${over}` };
  }
  if (m.norm) return { norm: m.norm, line: `input normalisation recorded in ${weights}: ${describeNormalisation(m.norm)}` };
  return { line: `${weights} records no input normalisation` };
}
