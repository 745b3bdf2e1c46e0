import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const COORD = join(ROOT, 'bin', 'gdp-coord.js');
const WORKER = join(ROOT, 'bin', 'gdp-worker.js');

export interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
  err: string;
}

/**
 * Runs gdp-coord; `onOutput` may act on the output so far (e.g. send SIGINT). Killed after `timeoutMs`. With
 * `group`, it leads its own process group and `kill` signals the whole group, as Ctrl-C in a terminal does.
 */
export function coord(
  args: string[],
  timeoutMs: number,
  onOutput?: (out: string, kill: (s: NodeJS.Signals) => void) => void,
  env?: NodeJS.ProcessEnv,
  group = false,
): Promise<Result> {
  return run(COORD, args, timeoutMs, onOutput, env, group);
}

/** Runs gdp-worker, like `coord`. */
export function worker(args: string[], timeoutMs: number, env?: NodeJS.ProcessEnv): Promise<Result> {
  return run(WORKER, args, timeoutMs, undefined, env);
}

function run(
  bin: string,
  args: string[],
  timeoutMs: number,
  onOutput?: (out: string, kill: (s: NodeJS.Signals) => void) => void,
  env?: NodeJS.ProcessEnv,
  group = false,
): Promise<Result> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { cwd: tmpdir(), stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env, detached: group });
    const signal = (s: NodeJS.Signals) => (group ? process.kill(-child.pid!, s) : child.kill(s));
    let out = '';
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      onOutput?.(out, signal);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out, err });
    });
  });
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function workerPids(out: string): number[] {
  return [...out.matchAll(/started worker local\d \(pid (\d+)\)/g)].map((m) => Number(m[1]));
}

/** The smoke config as shipped (training stage only until the pruning stages are registered), on wasm. */
export function smokeArgs(logDir: string): string[] {
  return [
    '--workers', '2', '--local', '--listen', '127.0.0.1:0', '--backend', 'wasm', '--config', join(ROOT, 'configs', 'smoke.json'),
    '--set', 'stages=["train"]', '--set', `base.log_dir=${logDir}`,
  ];
}

/** The smoke config cut further (batch 16, 2 steps per epoch, 50 test images): every stage in seconds, as `--set` flags. */
export const SMALL_SMOKE = ['--set', 'data.batch_size=16', '--set', 'train.max_steps_per_epoch=2', '--set', 'data.test_subset=50'];
