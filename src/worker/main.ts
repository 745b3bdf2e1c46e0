import { backendOption, runCommand } from '../shared/cli_options.js';
import { Command, InvalidArgumentError } from 'commander';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { initBackend, type BackendChoice } from '../shared/backend.js';
import { GdpError } from '../shared/errors.js';
import { workerIdSchema } from '../shared/protocol/messages.js';
import { connectWs } from '../shared/protocol/ws_transport.js';
import { Reconnector } from './reconnect.js';
import { WorkerSession } from './session.js';

interface Options {
  connect: string;
  token?: string;
  ca?: string;
  gpu?: number;
  backend: string;
  id?: string;
  dataDir?: string;
  retryFor: number;
}

function log(line: string): void {
  process.stdout.write(line + '\n');
}

async function run(o: Options): Promise<void> {
  if (!/^wss?:\/\/[^/]+/.test(o.connect)) throw new GdpError('BAD_FLAG', `--connect expects ws://HOST:PORT or wss://HOST:PORT, got '${o.connect}'`);
  const token = o.token ?? process.env.GDP_TOKEN;
  let ca: Buffer | undefined;
  if (o.ca !== undefined) {
    if (!o.connect.startsWith('wss://')) throw new GdpError('BAD_FLAG', `--ca is for wss:// coordinators; --connect is '${o.connect}'`);
    try {
      ca = readFileSync(o.ca);
    } catch (err) {
      throw new GdpError('BAD_FLAG', `--ca ${o.ca}: ${(err as Error).message}`);
    }
  }
  // initBackend sets CUDA_VISIBLE_DEVICES before the GPU build of TensorFlow loads.
  const backend = await initBackend(o.backend as BackendChoice, { gpu: o.gpu });
  const id = o.id ?? `${hostname()}-${process.pid}`;
  if (!workerIdSchema.safeParse(id).success) throw new GdpError('BAD_FLAG', `--id '${id}': a worker id is 1-128 letters, digits or ._:@-`);
  log(`gdp-worker ${id}: backend ${backend.description}; connecting to ${o.connect}`);
  // A coordinator that goes away without a 'shutdown' (killed, restarting with --resume) is waited for.
  const worker = new Reconnector({
    url: o.connect,
    connect: (url) => connectWs(url, { token, ca }),
    session: (t) => new WorkerSession(t, { workerId: id, backend: backend.description, gpu: o.gpu ?? null, host: hostname(), pid: process.pid, dataDir: o.dataDir, log }),
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

export async function main(argv: string[]): Promise<number> {
  const program = new Command('gdp-worker')
    .description('A gdp worker: computes gradients and evaluations for a coordinator')
    .requiredOption('--connect <url>', 'coordinator address, ws://HOST:PORT or wss://HOST:PORT (TLS)')
    .option('--token <secret>', "the coordinator's shared token (default: $GDP_TOKEN, which other users cannot read in ps)")
    .option('--ca <file>', "PEM certificate to trust for wss:// (e.g. the coordinator's self-signed one)")
    .option('--gpu <k>', 'GPU index (sets CUDA_VISIBLE_DEVICES for the tensorflow backend)', (v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`--gpu must be a GPU index, got '${v}'`);
      return n;
    })
    .addOption(backendOption())
    .option('--id <id>', 'worker id shown in logs (default HOST-PID)')
    .option('--data-dir <dir>', "this machine's dataset folder (overrides the config's data.dir)")
    .option('--retry-for <seconds>', 'when the coordinator goes away without ending the run, keep reconnecting this long (0: exit)', (v: string) => {
      const n = Number(v);
      if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`--retry-for must be a number of seconds >= 0, got '${v}'`);
      return n;
    }, 600)
    .exitOverride();
  return runCommand<Options>(program, argv, run);
}
