/**
 * A minimal WebAssembly assembler for the hand-written SIMD kernels: turns
 * functions written in the flat (non-folded) text syntax into a module
 * binary that imports its memory (tfjs' wasm heap), so kernels work on
 * tensors in place. It knows only the instructions the kernels use.
 *
 * Syntax per function: `(param $name type)*`, `(result type)?`,
 * `(local $name type)*`, then one instruction per line or separated by
 * whitespace, immediates after the name: `local.get $x`, `i32.const 4`,
 * `v128.load offset=16`, `br_if $label`, `block $label`, `loop $label`,
 * `end`. `;;` starts a comment. Labels are resolved to depths.
 */

import { GdpError } from '../../../errors.js';

const TYPES: Record<string, number> = { i32: 0x7f, f32: 0x7d, v128: 0x7b };

type Imm = 'none' | 'local' | 'label' | 'block' | 'i32' | 'f32' | 'mem' | 'lane';

/** Opcode bytes (0xfd prefix for SIMD) and immediate kind, with natural alignment (log2) for memory ops. */
const OPS: Record<string, [number[], Imm, number?]> = {
  block: [[0x02], 'block'],
  loop: [[0x03], 'block'],
  if: [[0x04], 'block'],
  else: [[0x05], 'none'],
  end: [[0x0b], 'none'],
  br: [[0x0c], 'label'],
  br_if: [[0x0d], 'label'],
  return: [[0x0f], 'none'],
  drop: [[0x1a], 'none'],
  select: [[0x1b], 'none'],
  'local.get': [[0x20], 'local'],
  'local.set': [[0x21], 'local'],
  'local.tee': [[0x22], 'local'],
  'i32.load': [[0x28], 'mem', 2],
  'f32.load': [[0x2a], 'mem', 2],
  'i32.store': [[0x36], 'mem', 2],
  'f32.store': [[0x38], 'mem', 2],
  'i32.const': [[0x41], 'i32'],
  'f32.const': [[0x43], 'f32'],
  'i32.eqz': [[0x45], 'none'],
  'i32.eq': [[0x46], 'none'],
  'i32.ne': [[0x47], 'none'],
  'i32.lt_s': [[0x48], 'none'],
  'i32.lt_u': [[0x49], 'none'],
  'i32.gt_s': [[0x4a], 'none'],
  'i32.gt_u': [[0x4b], 'none'],
  'i32.le_s': [[0x4c], 'none'],
  'i32.ge_s': [[0x4e], 'none'],
  'f32.gt': [[0x5e], 'none'],
  'i32.add': [[0x6a], 'none'],
  'i32.sub': [[0x6b], 'none'],
  'i32.mul': [[0x6c], 'none'],
  'i32.and': [[0x71], 'none'],
  'i32.shl': [[0x74], 'none'],
  'f32.neg': [[0x8c], 'none'],
  'f32.sqrt': [[0x91], 'none'],
  'f32.add': [[0x92], 'none'],
  'f32.sub': [[0x93], 'none'],
  'f32.mul': [[0x94], 'none'],
  'f32.div': [[0x95], 'none'],
  'f32.max': [[0x97], 'none'],
  'v128.load': [[0xfd, 0x00], 'mem', 4],
  'v128.load32_splat': [[0xfd, 0x09], 'mem', 2],
  'v128.store': [[0xfd, 0x0b], 'mem', 4],
  'f32x4.splat': [[0xfd, 0x13], 'none'],
  'f32x4.extract_lane': [[0xfd, 0x1f], 'lane'],
  'f32x4.gt': [[0xfd, 0x44], 'none'],
  'f32x4.le': [[0xfd, 0x45], 'none'],
  'f32x4.ge': [[0xfd, 0x46], 'none'],
  'v128.and': [[0xfd, 0x4e], 'none'],
  'f32x4.neg': [[0xfd, 0xe1, 0x01], 'none'],
  'f32x4.add': [[0xfd, 0xe4, 0x01], 'none'],
  'f32x4.sub': [[0xfd, 0xe5, 0x01], 'none'],
  'f32x4.mul': [[0xfd, 0xe6, 0x01], 'none'],
  'f32x4.div': [[0xfd, 0xe7, 0x01], 'none'],
  'f32x4.max': [[0xfd, 0xe9, 0x01], 'none'],
};

function uleb(v: number, out: number[]): void {
  do {
    let b = v & 0x7f;
    v >>>= 7;
    if (v !== 0) b |= 0x80;
    out.push(b);
  } while (v !== 0);
}

function sleb(v: number, out: number[]): void {
  for (;;) {
    const b = v & 0x7f;
    v >>= 7;
    if ((v === 0 && (b & 0x40) === 0) || (v === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return;
    }
    out.push(b | 0x80);
  }
}

function str(s: string, out: number[]): void {
  const bytes = new TextEncoder().encode(s);
  uleb(bytes.length, out);
  out.push(...bytes);
}

function section(id: number, body: number[], out: number[]): void {
  out.push(id);
  uleb(body.length, out);
  out.push(...body);
}

export interface WasmFunction {
  name: string;
  /** Declarations and body in the syntax described above. */
  text: string;
}

interface Parsed {
  params: number[];
  results: number[];
  code: number[];
}

function parseFunction(f: WasmFunction): Parsed {
  const tokens = f.text.replace(/;;[^\n]*/g, '').match(/\([^()]*\)|[^\s()]+/g) ?? [];
  const locals = new Map<string, number>();
  const params: number[] = [];
  const results: number[] = [];
  const localTypes: number[] = [];
  let t = 0;
  for (; t < tokens.length && tokens[t].startsWith('('); t++) {
    const [kind, a, b] = tokens[t].slice(1, -1).trim().split(/\s+/);
    if (kind === 'result') {
      results.push(TYPES[a]);
      continue;
    }
    if ((kind !== 'param' && kind !== 'local') || !(b in TYPES) || locals.has(a)) {
      throw new GdpError('INTERNAL', `${f.name}: bad declaration ${tokens[t]}`);
    }
    locals.set(a, locals.size);
    (kind === 'param' ? params : localTypes).push(TYPES[b]);
  }
  const body: number[] = [];
  // Locals are declared one group per entry (count 1); fine for a few dozen.
  uleb(localTypes.length, body);
  for (const ty of localTypes) body.push(1, ty);
  const labels: (string | null)[] = [];
  const need = (what: string) => {
    const v = tokens[++t];
    if (v === undefined) throw new GdpError('INTERNAL', `${f.name}: missing ${what}`);
    return v;
  };
  for (; t < tokens.length; t++) {
    const name = tokens[t];
    const op = OPS[name];
    if (!op) throw new GdpError('INTERNAL', `${f.name}: unknown instruction '${name}'`);
    const [bytes, imm, align] = op;
    body.push(...bytes);
    switch (imm) {
      case 'none':
        if (name === 'end') labels.pop();
        break;
      case 'block': {
        const next = tokens[t + 1];
        labels.push(next?.startsWith('$') ? (t++, next) : null);
        body.push(0x40);
        break;
      }
      case 'label': {
        const l = need('label');
        const depth = labels.length - 1 - labels.lastIndexOf(l);
        if (depth >= labels.length) throw new GdpError('INTERNAL', `${f.name}: unknown label ${l}`);
        uleb(depth, body);
        break;
      }
      case 'local': {
        const l = need('local');
        const i = locals.get(l);
        if (i === undefined) throw new GdpError('INTERNAL', `${f.name}: unknown local ${l}`);
        uleb(i, body);
        break;
      }
      case 'i32':
        sleb(Number(need('i32 constant')) | 0, body);
        break;
      case 'f32': {
        const b = new Uint8Array(new Float32Array([Number(need('f32 constant'))]).buffer);
        body.push(...b);
        break;
      }
      case 'lane':
        body.push(Number(need('lane')));
        break;
      case 'mem': {
        let offset = 0;
        const next = tokens[t + 1];
        if (next?.startsWith('offset=')) {
          offset = Number(next.slice(7));
          t++;
        }
        // Alignment is a hint; the heap offsets of tfjs tensors are 4-byte aligned only.
        uleb(Math.min(align ?? 0, 2), body);
        uleb(offset, body);
        break;
      }
    }
  }
  if (labels.length !== 0) throw new GdpError('INTERNAL', `${f.name}: unclosed block`);
  body.push(0x0b);
  return { params, results, code: body };
}

/** Module binary: memory imported as env.memory, every function exported under its name. */
export function assemble(functions: readonly WasmFunction[]): Uint8Array {
  const parsed = functions.map(parseFunction);
  const out = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
  const types: number[] = [];
  uleb(parsed.length, types);
  for (const p of parsed) {
    types.push(0x60);
    uleb(p.params.length, types);
    types.push(...p.params);
    uleb(p.results.length, types);
    types.push(...p.results);
  }
  section(1, types, out);
  const imports: number[] = [1];
  str('env', imports);
  str('memory', imports);
  imports.push(0x02, 0x00, 0x00); // memory, limits: min 0, no max
  section(2, imports, out);
  const funcs: number[] = [];
  uleb(parsed.length, funcs);
  parsed.forEach((_, i) => uleb(i, funcs));
  section(3, funcs, out);
  const exports: number[] = [];
  uleb(functions.length, exports);
  functions.forEach((f, i) => {
    str(f.name, exports);
    exports.push(0x00);
    uleb(i, exports);
  });
  section(7, exports, out);
  const code: number[] = [];
  uleb(parsed.length, code);
  for (const p of parsed) {
    uleb(p.code.length, code);
    code.push(...p.code);
  }
  section(10, code, out);
  return new Uint8Array(out);
}
