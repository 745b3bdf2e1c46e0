import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { coordinatorFor } from '../src/coordinator/in_process.js';
import { LocalWorkers } from '../src/coordinator/local_workers.js';
import { loadConfig } from '../src/shared/config/load.js';
import { loadMnist } from '../src/shared/data/mnist.js';
import { listenWs } from '../src/shared/protocol/ws_listener.js';
import { Rng } from '../src/shared/rng.js';
import { onAbort } from './cleanup.js';

const CONFIG = fileURLToPath(new URL('../../configs/mnist-resnet20.json', import.meta.url));

export interface LocalScaling {
  workers: number;
  batch: number;
  steps: number;
  imgPerSec: number;
  msPerStep: number;
  /** Per step, the slowest worker's round trip: `compute` sent -> its last gradient bucket received. */
  workerRoundTripMs: number;
  /** Per step, the rest: average, `apply` + averaged buckets posted, the coordinator's own SGD update. */
  coordinatorMs: number;
  /**
   * CPU time per timed step (user + system, all threads, ms) of this process (the coordinator) and of each worker
   * process; undefined where /proc is not there. Their sum over the cores bounds the step from below however busy
   * the machine is, so it tells the work added by running distributed from the waiting.
   */
  cpuMsPerStep?: { coordinator: number; workers: number[] };
}

/** CPU ms (user + system, every thread) a process used so far, from /proc/PID/stat; undefined without /proc. */
function processCpuMs(pid: number): number | undefined {
  try {
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th, in clock ticks (100/s).
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return undefined;
  }
}

/**
 * Images/s of local mode: the real coordinator in this process, `n` real gdp-worker child processes connected
 * over ws on 127.0.0.1 (port 0), MNIST, global batch `batch`, `steps` timed `cluster.step` calls after
 * `warmup` untimed ones (kernel set-up, first allocations); `set` overrides keys of the config (`key.path=value`).
 */
export async function localScaling(
  n: number,
  backend: string,
  opts: { batch: number; steps: number; warmup: number; set?: readonly string[] },
): Promise<LocalScaling> {
  const config = loadConfig(CONFIG, [`data.batch_size=${opts.batch}`, ...(opts.set ?? [])]);
  const logs: string[] = [];
  const log = (line: string) => logs.push(line);
  const coordinator = coordinatorFor(config, log);
  const listener = await listenWs('127.0.0.1', 0, (t) => coordinator.accept(t));
  const local = new LocalWorkers(log);
  const unregister = onAbort(() => local.killNow());
  try {
    local.start(n, `ws://${listener.host}:${listener.port}`, backend);
    await coordinator.waitForWorkers(n, 120000, () => local.checkAlive());
    const trainSize = loadMnist().train.size;
    const rng = new Rng(3);
    const batchIndices = () => Int32Array.from({ length: opts.batch }, () => rng.int(trainSize));
    const sgd = { lr: 0.01, momentum: 0.9, weightDecay: 5e-4, nesterov: false };
    for (let i = 0; i < opts.warmup; i++) await coordinator.step(batchIndices(), 'all', sgd);
    const pids = [process.pid, ...local.pids];
    const cpuBefore = pids.map(processCpuMs);
    let roundTrip = 0;
    let stepMs = 0;
    for (let i = 0; i < opts.steps; i++) {
      const indices = batchIndices();
      const t0 = performance.now();
      const r = await coordinator.step(indices, 'all', sgd);
      const ms = performance.now() - t0;
      stepMs += ms;
      roundTrip += Math.max(...r.perWorker.map((w) => w.ms));
    }
    const cpu = pids.map((pid, i) => {
      const after = processCpuMs(pid);
      return after === undefined || cpuBefore[i] === undefined ? undefined : (after - cpuBefore[i]!) / opts.steps;
    });
    const msPerStep = stepMs / opts.steps;
    const workerRoundTripMs = roundTrip / opts.steps;
    return {
      workers: n,
      batch: opts.batch,
      steps: opts.steps,
      imgPerSec: (opts.batch * 1000) / msPerStep,
      msPerStep,
      workerRoundTripMs,
      coordinatorMs: msPerStep - workerRoundTripMs,
      cpuMsPerStep: cpu.every((c) => c !== undefined) ? { coordinator: cpu[0]!, workers: cpu.slice(1) as number[] } : undefined,
    };
  } catch (err) {
    process.stderr.write(logs.map((l) => `  ${l}\n`).join(''));
    throw err;
  } finally {
    coordinator.shutdown('bench finished');
    await local.stop();
    await listener.close();
    unregister();
  }
}
