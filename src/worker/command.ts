import { hostname } from 'node:os';
import { initBackend, type BackendChoice } from '../shared/backend.js';
import { GdpError } from '../shared/errors.js';
import { workerIdSchema } from '../shared/protocol/messages.js';
import { connectWs } from '../shared/protocol/ws_transport.js';
import '../shared/tfjs_quiet.js';
import type { RingListenSettings } from './ring_member.js';
import { Reconnector } from './reconnect.js';
import { WorkerSession } from './session.js';

/** What gdp-worker does once its flags have passed their checks (main.ts imports this module then: it loads TF.js and the rest). */

function log(line: string): void {
  process.stdout.write(line + '\n');
}

/**
 * Runs a worker: starts its backend, connects to the coordinator at --connect and serves it until the run ends (or the
 * coordinator stays away longer than --retry-for). `net` is what main.ts resolved from the flags: the token, the CA
 * file's bytes, the ring listener. Throws BAD_FLAG for a bad --id, the backend's codes, and a failed run's.
 */
export async function runWorker(
  o: { connect: string; gpu?: number; backend: string; id?: string; dataDir?: string; retryFor: number },
  net: { token: string | undefined; ca: Buffer | undefined; ring: RingListenSettings | undefined },
): Promise<void> {
  const { token, ca, ring } = net;
  // initBackend sets CUDA_VISIBLE_DEVICES before the GPU build of TensorFlow loads.
  const backend = await initBackend(o.backend as BackendChoice, { gpu: o.gpu });
  const id = o.id ?? `${hostname()}-${process.pid}`;
  if (!workerIdSchema.safeParse(id).success) throw new GdpError('BAD_FLAG', `--id '${id}': a worker id is 1-128 letters, digits or ._:@-`);
  log(`gdp-worker ${id}: backend ${backend.description}; connecting to ${o.connect}`);
  // A coordinator that goes away without a 'shutdown' (killed, restarting with --resume) is waited for.
  const worker = new Reconnector({
    url: o.connect,
    connect: (url) => connectWs(url, { token, ca }),
    session: (t) =>
      new WorkerSession(t, {
        workerId: id,
        backend: backend.description,
        gpu: o.gpu ?? null,
        host: hostname(),
        pid: process.pid,
        dataDir: o.dataDir,
        ring,
        log,
      }),
    retryForMs: o.retryFor * 1000,
    log: (line) => log(`gdp-worker ${id}: ${line}`),
  });
  const onSignal = (sig: NodeJS.Signals) => {
    log(`gdp-worker ${id}: ${sig}: leaving`);
    worker.stop(`worker received ${sig}`);
    setTimeout(() => process.exit(sig === 'SIGINT' ? 130 : 143), 200).unref();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  await worker.run();
}
