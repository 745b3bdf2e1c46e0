import { GdpError } from '../errors.js';

export interface SgdOptions {
  lr: number;
  momentum: number;
  weightDecay: number;
  nesterov: boolean;
  dampening?: number;
}

/**
 * SGD with PyTorch's exact semantics, on flat float32 buffers in plain JavaScript: every replica runs the same
 * IEEE arithmetic whatever its tensor backend, so replicas that apply the same averaged gradient stay bit-identical.
 *
 *   d = grad + wd * p;  buf = d (first step) or momentum * buf + (1 - dampening) * d;
 *   d = nesterov ? d + momentum * buf : buf;  p -= lr * d
 *
 * Every operation rounds to float32 (Math.fround of the float64 result, with the options as float64). The common
 * step (momentum and weight decay, not the first step, no Nesterov) runs in its own loop without per-element
 * branches, the same operations in the same order: it is the optimizer's whole cost on every replica at every step,
 * and takes about half the time of the general loop.
 */
export function sgdStep(params: Float32Array, grad: Float32Array, momentumBuf: Float32Array, firstStep: boolean, o: SgdOptions): void {
  const n = params.length;
  if (grad.length !== n || momentumBuf.length !== n) {
    throw new GdpError('BAD_LAYOUT', `sgdStep: ${n} parameters, but ${grad.length} gradient values and ${momentumBuf.length} momentum values`);
  }
  const { lr, momentum, weightDecay: wd, nesterov } = o;
  const damp = 1 - (o.dampening ?? 0);
  if (momentum !== 0 && wd !== 0 && !firstStep && !nesterov) return momentumStep(params, grad, momentumBuf, lr, momentum, wd, damp);
  for (let i = 0; i < n; i++) {
    let d = grad[i];
    if (wd !== 0) d = Math.fround(d + Math.fround(wd * params[i]));
    if (momentum !== 0) {
      const b = firstStep ? d : Math.fround(Math.fround(momentum * momentumBuf[i]) + Math.fround(damp * d));
      momentumBuf[i] = b;
      d = nesterov ? Math.fround(d + Math.fround(momentum * b)) : b;
    }
    params[i] = Math.fround(params[i] - Math.fround(lr * d));
  }
}

/** sgdStep's arithmetic for a momentum step after the first, with weight decay, without Nesterov. */
function momentumStep(p: Float32Array, g: Float32Array, buf: Float32Array, lr: number, momentum: number, wd: number, damp: number): void {
  const f = Math.fround;
  const n = p.length;
  for (let i = 0; i < n; i++) {
    const pi = p[i];
    const b = f(f(momentum * buf[i]) + f(damp * f(g[i] + f(wd * pi))));
    buf[i] = b;
    p[i] = f(pi - f(lr * b));
  }
}
