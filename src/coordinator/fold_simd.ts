import { assemble, type WasmFunction } from '../shared/kernels/wasm/simd/assembler.js';
import { vectorLoop } from '../shared/kernels/wasm/simd/wasm_text.js';
import { foldInto, type FoldRole } from './reduce.js';

/** The part of the WebAssembly JS API used here (the project's libs do not declare it). */
interface WasmApi {
  Memory: new (d: { initial: number }) => { buffer: ArrayBuffer };
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: object };
}
const WA = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/**
 * What each role stores at $acc from the loaded vector $v (and $c, the divisor splatted). The roles that give the
 * average ('last', 'only') also add its values times 0 into $q: an overflow of the sum shows there.
 */
const STORE: Record<FoldRole, string> = {
  first: 'local.get $acc local.get $v v128.store',
  add: 'local.get $acc local.get $acc v128.load local.get $v f32x4.add v128.store',
  last: 'local.get $acc local.get $acc v128.load local.get $v f32x4.add local.get $c f32x4.div local.tee $o v128.store',
  only: 'local.get $acc local.get $v local.get $c f32x4.div local.tee $o v128.store',
};
const PROBES_OUTPUT: Record<FoldRole, boolean> = { first: false, add: false, last: true, only: true };

/** The sum of a v128 local's four f32 lanes. */
const laneSum = (v: string) =>
  `local.get ${v} f32x4.extract_lane 0 local.get ${v} f32x4.extract_lane 1 f32.add
    local.get ${v} f32x4.extract_lane 2 f32.add local.get ${v} f32x4.extract_lane 3 f32.add`;

/**
 * fold_<role>(acc, g, n, count) over n float32x4 vectors at byte offsets acc and g: foldInto's arithmetic four lanes
 * at a time (IEEE binary32 add and divide round exactly as Math.fround of the float64 operation does). Returns the
 * sum of the lanes of sum(g * 0), NaN exactly when g holds a NaN or an infinity; for 'last' and 'only', plus
 * Infinity when g is finite but a stored average is not (the float32 sum overflowed).
 */
const FUNCTIONS: WasmFunction[] = (Object.keys(STORE) as FoldRole[]).map((role) => ({
  name: `fold_${role}`,
  text: `
    (param $acc i32) (param $g i32) (param $n i32) (param $count f32) (result f32)
    (local $k i32) (local $v v128) (local $p v128) (local $z v128) (local $c v128) (local $o v128) (local $q v128) (local $qs f32)
    f32.const 0 f32x4.splat local.set $z
    local.get $z local.set $p
    local.get $z local.set $q
    local.get $count f32x4.splat local.set $c
    ${vectorLoop(
      '$vec',
      '$k',
      '$n',
      ['$acc', '$g'],
      `
      local.get $g v128.load local.set $v
      local.get $p local.get $v local.get $z f32x4.mul f32x4.add local.set $p
      ${STORE[role]}
      ${PROBES_OUTPUT[role] ? 'local.get $q local.get $o local.get $z f32x4.mul f32x4.add local.set $q' : ''}`,
    )}
    ${laneSum('$q')} local.set $qs
    ${laneSum('$p')}
    ;; + (qs > -1 ? 0 : Infinity): qs is a sum of zeros, or NaN (comparisons with NaN are false)
    f32.const 0 f32.const Infinity local.get $qs f32.const -1 f32.gt select
    f32.add`,
}));

type Fold = (acc: number, g: number, n: number, count: number) => number;
let compiled: object | undefined;

/**
 * The running sum of a gradient reduction in WebAssembly memory, folded with SIMD: `acc` (the average, `size`
 * values) and a one-bucket staging area `staging` (at least `bucketElems` values) into which a bucket's bytes are
 * copied (a memcpy, whatever their alignment in the frame) before `fold` sums them in place. The JS loops of
 * reduce.ts remain the reference the tests hold this to, bit for bit.
 */
export class SimdAccumulator {
  readonly acc: Float32Array;
  readonly staging: Float32Array;
  private readonly folds: Record<FoldRole, Fold>;

  constructor(
    readonly size: number,
    bucketElems: number,
  ) {
    const stagingElems = Math.min(size, bucketElems);
    const bytes = 4 * (size + stagingElems) + 16;
    const memory = new WA.Memory({ initial: Math.max(1, Math.ceil(bytes / 65536)) });
    compiled ??= new WA.Module(assemble(FUNCTIONS));
    const exports = new WA.Instance(compiled, { env: { memory } }).exports as Record<string, Fold>;
    this.folds = { first: exports.fold_first, add: exports.fold_add, last: exports.fold_last, only: exports.fold_only };
    this.acc = new Float32Array(memory.buffer, 0, size);
    this.staging = new Float32Array(memory.buffer, 4 * size, stagingElems);
  }

  /**
   * Folds the first `n` values of `staging` into acc[at, at + n) as `role` (reduce.ts' foldInto). Returns the
   * finiteness probe: NaN when a staged value is not finite; otherwise, for 'last' and 'only' (the roles that store
   * the average), Infinity when a stored average value is not (the float32 sum overflowed); otherwise 0.
   */
  fold(at: number, n: number, role: FoldRole, count: number): number {
    const vecs = n >> 2;
    let probe = this.folds[role](4 * at, this.staging.byteOffset, vecs, count);
    // The last 0-3 values, in JS (the same arithmetic).
    if (n > 4 * vecs) {
      probe += foldInto(this.acc, at + 4 * vecs, this.staging.subarray(4 * vecs, n), role, count);
      if (PROBES_OUTPUT[role]) for (let i = at + 4 * vecs; i < at + n; i++) if (!Number.isFinite(this.acc[i])) probe += Infinity;
    }
    return probe;
  }
}
