import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sgdStep, type SgdOptions } from '../../src/shared/train/sgd.js';

/** torch.optim.SGD.step written out in float64 for one tensor, the textbook way. */
function torchSgdReference(p: number[], grads: number[][], o: SgdOptions): number[] {
  const params = [...p];
  let buf: number[] | undefined;
  for (const g of grads) {
    const d = g.map((v, i) => v + o.weightDecay * params[i]);
    let step = d;
    if (o.momentum !== 0) {
      buf = buf === undefined ? [...d] : buf.map((b, i) => o.momentum * b + (1 - (o.dampening ?? 0)) * d[i]);
      step = o.nesterov ? d.map((v, i) => v + o.momentum * buf![i]) : buf;
    }
    for (let i = 0; i < params.length; i++) params[i] -= o.lr * step[i];
  }
  return params;
}

const cases: [string, SgdOptions][] = [
  ['plain', { lr: 0.1, momentum: 0, weightDecay: 0, nesterov: false }],
  ['momentum + weight decay', { lr: 0.1, momentum: 0.9, weightDecay: 5e-4, nesterov: false }],
  ['nesterov', { lr: 0.05, momentum: 0.9, weightDecay: 1e-4, nesterov: true }],
  ['dampening', { lr: 0.01, momentum: 0.5, weightDecay: 0, nesterov: false, dampening: 0.1 }],
];

for (const [name, o] of cases) {
  test(`sgdStep matches PyTorch's SGD (${name}) over several steps`, () => {
    const p0 = [0.5, -1.25, 2, 0.001];
    const grads = [
      [0.1, -0.2, 0.3, 0],
      [-0.05, 0.4, 0.1, 1],
      [0.2, 0.2, -0.6, -0.5],
    ];
    const p = Float32Array.from(p0);
    const buf = new Float32Array(p.length);
    grads.forEach((g, i) => sgdStep(p, Float32Array.from(g), buf, i === 0, o));
    const ref = torchSgdReference(p0, grads, o);
    for (let i = 0; i < p.length; i++) assert.ok(Math.abs(p[i] - ref[i]) < 1e-6, `param ${i}: ${p[i]} vs ${ref[i]}`);
  });
}

test('first momentum step uses the gradient itself, as PyTorch does', () => {
  const p = Float32Array.of(1);
  const buf = Float32Array.of(123); // stale contents must be ignored on the first step
  sgdStep(p, Float32Array.of(2), buf, true, { lr: 0.5, momentum: 0.9, weightDecay: 0, nesterov: false });
  assert.equal(buf[0], 2);
  assert.equal(p[0], 0);
});

test('sgdStep rejects mismatched lengths', () => {
  assert.throws(() => sgdStep(new Float32Array(2), new Float32Array(3), new Float32Array(2), true, cases[0][1]), {
    name: 'GdpError',
    code: 'BAD_LAYOUT',
    message: /2 parameters, but 3 gradient values/,
  });
});

/** sgdStep's general loop, element by element: the reference the specialised loop must equal bit for bit. */
function generalStep(p: Float32Array, g: Float32Array, buf: Float32Array, first: boolean, o: SgdOptions): void {
  const f = Math.fround;
  const damp = 1 - (o.dampening ?? 0);
  for (let i = 0; i < p.length; i++) {
    let d = g[i];
    if (o.weightDecay !== 0) d = f(d + f(o.weightDecay * p[i]));
    if (o.momentum !== 0) {
      const b = first ? d : f(f(o.momentum * buf[i]) + f(damp * d));
      buf[i] = b;
      d = o.nesterov ? f(d + f(o.momentum * b)) : b;
    }
    p[i] = f(p[i] - f(o.lr * d));
  }
}

test('sgdStep gives the bits of the per-element definition for every option set, first step and later ones', () => {
  let s = 7;
  const rand = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648 - 0.5) * 4;
  const n = 1001;
  // Signed zeros, tiny and huge values among the random ones: rounding and signs must agree too.
  const special = [0, -0, 1e-38, -1e-38, 3e38, -3e38, 1e-45];
  const fill = () => Float32Array.from({ length: n }, (_, i) => (i < special.length ? special[i] : rand()));
  for (const [name, o] of [...cases, ['decay, no momentum', { lr: 0.1, momentum: 0, weightDecay: 1e-3, nesterov: false }] as [string, SgdOptions]]) {
    const p = fill();
    const buf = new Float32Array(n);
    const [pRef, bufRef] = [p.slice(), buf.slice()];
    for (let step = 0; step < 4; step++) {
      const g = fill().reverse();
      sgdStep(p, g, buf, step === 0, o);
      generalStep(pRef, g, bufRef, step === 0, o);
      assert.deepEqual(new Uint32Array(p.buffer), new Uint32Array(pRef.buffer), `${name}: parameters after step ${step}`);
      assert.deepEqual(new Uint32Array(buf.buffer), new Uint32Array(bufRef.buffer), `${name}: momentum after step ${step}`);
    }
  }
});
