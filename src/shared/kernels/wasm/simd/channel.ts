/**
 * Channel kernels (wasm text) for BatchNorm's training passes and the ReLU / clip gradients; their contract is
 * documented on `SimdKernels` in simd/module.ts.
 */
import type { WasmFunction } from './assembler.js';
import { countedLoop, nextVectors, vectorLoop } from './wasm_text.js';

/**
 * A loop over `n` vectors with `$k` cycling through [0, period) in steps of
 * 16 bytes; `pointers` advance by 16 bytes per vector.
 */
function cyclicLoop(pointers: string[], body: string): string {
  return `
    i32.const 0 local.set $k
    ${countedLoop(
      '$v',
      '$i',
      '$n',
      `
      ${body}
      ${nextVectors(pointers)}
      local.get $k i32.const 16 i32.add local.tee $k local.get $period i32.eq
      if i32.const 0 local.set $k end`,
    )}`;
}

const at = (base: string) => `local.get ${base} local.get $k i32.add`;

export const channelFunctions: WasmFunction[] = [
  {
    name: 'sumCyclic',
    text: `(param $x i32) (param $n i32) (param $acc i32) (param $period i32)
      (local $k i32) (local $i i32) (local $p i32)
      ${cyclicLoop(
        ['$x'],
        `
        ${at('$acc')} local.tee $p
        local.get $p v128.load local.get $x v128.load f32x4.add
        v128.store`,
      )}`,
  },
  {
    name: 'sqDevSumCyclic',
    text: `(param $x i32) (param $n i32) (param $mean i32) (param $acc i32) (param $period i32)
      (local $k i32) (local $i i32) (local $p i32) (local $d v128)
      ${cyclicLoop(
        ['$x'],
        `
        local.get $x v128.load ${at('$mean')} v128.load f32x4.sub local.set $d
        ${at('$acc')} local.tee $p
        local.get $p v128.load local.get $d local.get $d f32x4.mul f32x4.add
        v128.store`,
      )}`,
  },
  {
    name: 'affineCyclic',
    text: `(param $x i32) (param $n i32) (param $scale i32) (param $shift i32) (param $y i32) (param $period i32)
      (local $k i32) (local $i i32)
      ${cyclicLoop(
        ['$x', '$y'],
        `
        local.get $y
        local.get $x v128.load ${at('$scale')} v128.load f32x4.mul
        ${at('$shift')} v128.load f32x4.add
        v128.store`,
      )}`,
  },
  {
    name: 'gradSumsCyclic',
    text: `(param $dy i32) (param $x i32) (param $n i32) (param $mean i32) (param $accDy i32) (param $accDyXc i32)
      (param $period i32)
      (local $k i32) (local $i i32) (local $p i32) (local $g v128)
      ${cyclicLoop(
        ['$dy', '$x'],
        `
        local.get $dy v128.load local.set $g
        ${at('$accDy')} local.tee $p
        local.get $p v128.load local.get $g f32x4.add
        v128.store
        ${at('$accDyXc')} local.tee $p
        local.get $p v128.load
        local.get $x v128.load ${at('$mean')} v128.load f32x4.sub local.get $g f32x4.mul
        f32x4.add
        v128.store`,
      )}`,
  },
  {
    name: 'affine2Cyclic',
    text: `(param $dy i32) (param $x i32) (param $n i32) (param $a i32) (param $b i32) (param $c i32) (param $out i32)
      (param $period i32)
      (local $k i32) (local $i i32)
      ${cyclicLoop(
        ['$dy', '$x', '$out'],
        `
        local.get $out
        local.get $dy v128.load ${at('$a')} v128.load f32x4.mul
        local.get $x v128.load ${at('$b')} v128.load f32x4.mul
        f32x4.add
        ${at('$c')} v128.load f32x4.add
        v128.store`,
      )}`,
  },
  {
    name: 'reluGrad',
    text: `(param $dy i32) (param $y i32) (param $n i32) (param $out i32)
      (local $i i32) (local $zero v128)
      ${vectorLoop(
        '$v',
        '$i',
        '$n',
        ['$dy', '$y', '$out'],
        `
        local.get $out
        local.get $dy v128.load
        local.get $y v128.load local.get $zero f32x4.gt
        v128.and
        v128.store`,
      )}`,
  },
  {
    name: 'clipGrad',
    text: `(param $dy i32) (param $x i32) (param $n i32) (param $lo f32) (param $hi f32) (param $loInclusive i32)
      (param $out i32)
      (local $i i32) (local $l v128) (local $h v128) (local $v v128)
      local.get $lo f32x4.splat local.set $l
      local.get $hi f32x4.splat local.set $h
      ${vectorLoop(
        '$v',
        '$i',
        '$n',
        ['$dy', '$x', '$out'],
        `
        local.get $x v128.load local.set $v
        local.get $out
        local.get $dy v128.load
        local.get $v local.get $h f32x4.le v128.and
        local.get $v local.get $l f32x4.ge local.get $v local.get $l f32x4.gt
        local.get $loInclusive select
        v128.and
        v128.store`,
      )}`,
  },
];
