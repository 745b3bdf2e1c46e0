import * as tf from '@tensorflow/tfjs-core';
// The union package registers every op's gradient (tfjs-core's node bundle registers none) and brings
// tfjs-layers / tfjs-converter for export; all of them share tfjs-core's global registries.
import '@tensorflow/tfjs';
import { BACKEND_CHOICES, type BackendChoice } from './backend_choice.js';
import { GdpError } from './errors.js';

export type { BackendChoice };

export interface BackendInfo {
  /** What the user asked for. */
  requested: BackendChoice;
  /** tfjs backend name actually active: 'tensorflow', 'wasm' or 'cpu'. */
  name: string;
  /** Human description printed at start, e.g. "wasm (SIMD, 1 thread)". */
  description: string;
  /** GPU index pinned with CUDA_VISIBLE_DEVICES, if any. */
  gpu?: number;
}

const INSTALL_HINT =
  'The tensorflow backend needs the optional native package, which downloads libtensorflow when installed:\n' +
  '  npm install @tensorflow/tfjs-node-gpu@4.22.0   # NVIDIA GPU with CUDA 11.2 / cuDNN 8.1\n' +
  '  npm install @tensorflow/tfjs-node@4.22.0       # CPU build of TensorFlow\n' +
  'or run with --backend wasm.';

/** Loads a package that may be absent; a name in a variable keeps tsc from requiring its types. */
async function importOptional(name: string): Promise<boolean> {
  try {
    await import(name);
    return true;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') return false;
    throw new GdpError('BACKEND_LOAD_FAILED', `${name} is installed but failed to load: ${(err as Error).message}`);
  }
}

async function tryTensorflow(gpu: number | undefined): Promise<BackendInfo | undefined> {
  if (gpu !== undefined) {
    // tfjs-node-gpu has no device placement: the only way to pin a GPU is to hide the others before it loads.
    process.env.CUDA_VISIBLE_DEVICES = String(gpu);
    if (await importOptional('@tensorflow/tfjs-node-gpu')) {
      await tf.setBackend('tensorflow');
      return { requested: 'tensorflow', name: 'tensorflow', description: `tensorflow (tfjs-node-gpu, GPU ${gpu})`, gpu };
    }
  }
  if (await importOptional('@tensorflow/tfjs-node')) {
    await tf.setBackend('tensorflow');
    return { requested: 'tensorflow', name: 'tensorflow', description: 'tensorflow (tfjs-node, CPU)', gpu };
  }
  return undefined;
}

async function useWasm(): Promise<BackendInfo> {
  await import('@tensorflow/tfjs-backend-wasm');
  const { registerWasmTrainingKernels } = await import('./kernels/wasm/register_all.js');
  if (!(await tf.setBackend('wasm'))) throw new GdpError('BACKEND_INIT_FAILED', 'the wasm backend failed to initialise');
  registerWasmTrainingKernels();
  const simd = tf.env().getBool('WASM_HAS_SIMD_SUPPORT');
  return { requested: 'wasm', name: 'wasm', description: `wasm (${simd ? 'SIMD' : 'no SIMD'}, 1 thread)` };
}

async function useCpu(): Promise<BackendInfo> {
  await import('@tensorflow/tfjs-backend-cpu');
  await tf.setBackend('cpu');
  return { requested: 'cpu', name: 'cpu', description: 'cpu (pure JavaScript, slow: for tests and last resort)' };
}

/**
 * Activates a tensor backend. `auto` prefers native TensorFlow (GPU when `gpu` is given), then wasm, then cpu.
 * Must run before any tensor is created.
 */
export async function initBackend(choice: BackendChoice, opts: { gpu?: number } = {}): Promise<BackendInfo> {
  if (!(BACKEND_CHOICES as readonly string[]).includes(choice)) {
    throw new GdpError('BAD_FLAG', `--backend must be one of ${BACKEND_CHOICES.join('|')}, got '${choice}'`);
  }
  let info: BackendInfo | undefined;
  if (choice === 'tensorflow') {
    info = await tryTensorflow(opts.gpu);
    if (!info) throw new GdpError('BACKEND_MISSING', `--backend tensorflow was asked for but is not installed.\n${INSTALL_HINT}`);
  } else if (choice === 'wasm') {
    info = await useWasm();
  } else if (choice === 'cpu') {
    info = await useCpu();
  } else {
    info = await tryTensorflow(opts.gpu);
    if (!info) {
      try {
        info = await useWasm();
      } catch {
        info = await useCpu();
      }
    }
  }
  await tf.ready();
  // The cpu backend prints a "use tfjs-node" banner on its first tensor (helper tensors land there even when
  // another backend is active); the backend choice is printed by our own CLIs instead.
  const cpu = tf.findBackend('cpu') as unknown as { firstUse?: boolean } | null;
  if (cpu && 'firstUse' in cpu) cpu.firstUse = false;
  return { ...info, requested: choice, gpu: opts.gpu };
}
