/**
 * PyTorch's one-thread training throughput on the same networks, for the side-by-side figure of bench/run.ts'
 * `train` section: runs bench/pytorch_train.py with the first Python that imports torch (`/usr/bin/python3`, then
 * `python3` on the PATH).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
/** The script sits in bench/ of the source tree; this module runs from dist/bench/. */
const SCRIPT = fileURLToPath(new URL('../../bench/pytorch_train.py', import.meta.url));
const PYTHONS = ['/usr/bin/python3', 'python3'];

export interface PytorchTrain {
  arch: string;
  torch: string;
  threads: number;
  batch: number;
  /** Wall-clock images/s. */
  img_s: number;
  ms_per_step: number;
  /** Process cpu time per step. */
  cpu_ms_per_step: number;
}

/** The first Python that imports torch, or null (with the reason) when none does or the script is missing. */
export async function findTorchPython(): Promise<{ python: string | null; reason: string }> {
  if (!existsSync(SCRIPT)) return { python: null, reason: `${SCRIPT} not found` };
  for (const python of PYTHONS) {
    try {
      await run(python, ['-c', 'import torch'], { timeout: 60_000 });
      return { python, reason: '' };
    } catch {
      // Not installed, or no torch in this interpreter: try the next one.
    }
  }
  return { python: null, reason: `no Python with torch (tried ${PYTHONS.join(', ')})` };
}

/** One-thread PyTorch training steps of `arch` (mnist.resnet20 or cifar.resnet56) at batch `batch`. */
export async function pytorchTrain(python: string, arch: string, batch: number, steps: number): Promise<PytorchTrain> {
  const { stdout } = await run(python, [SCRIPT, arch, '--batch', String(batch), '--steps', String(steps), '--threads', '1'], {
    timeout: 600_000,
    env: { ...process.env, OMP_NUM_THREADS: '1', MKL_NUM_THREADS: '1' },
  });
  const last = stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(last) as PytorchTrain;
}
