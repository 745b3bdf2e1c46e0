import { backendOption, runCommand } from '../shared/cli_options.js';
import { Command, InvalidArgumentError } from 'commander';
import { readFileSync } from 'node:fs';
import { GdpError } from '../shared/errors.js';
import { isLoopbackHost } from '../shared/protocol/auth.js';
import type { RingListenSettings } from './ring_member.js';

interface Options {
  connect: string;
  token?: string;
  ca?: string;
  gpu?: number;
  backend: string;
  id?: string;
  dataDir?: string;
  retryFor: number;
  listen?: string;
  cert?: string;
  key?: string;
}

function readFlagFile(flag: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new GdpError('BAD_FLAG', `${flag} ${file}: ${(err as Error).message}`);
  }
}

/**
 * Where this worker's ring listener goes (opened only when the run's dist.allreduce is 'ring' or 'auto'): --listen
 * HOST:PORT, by default 127.0.0.1:0 when the coordinator is on loopback; with neither, no listener (star steps
 * only). HOST is also the address the other workers dial, so it must be one they can reach (not 0.0.0.0). The
 * rules of the coordinator's port apply: a token for any address but loopback; --cert/--key serve wss://.
 */
export function ringListen(
  o: Pick<Options, 'connect' | 'listen' | 'cert' | 'key'>,
  token: string | undefined,
  ca: Buffer | undefined,
): RingListenSettings | undefined {
  const coordinatorHost = new URL(o.connect).hostname.replace(/^\[|\]$/g, '');
  const listen = o.listen ?? (isLoopbackHost(coordinatorHost) ? '127.0.0.1:0' : undefined);
  if ((o.cert === undefined) !== (o.key === undefined)) throw new GdpError('BAD_FLAG', '--cert and --key go together');
  if (listen === undefined) {
    if (o.cert !== undefined) throw new GdpError('BAD_FLAG', '--cert/--key are for the ring listener: give --listen HOST:PORT too');
    return undefined;
  }
  const i = listen.lastIndexOf(':');
  const host = i > 0 ? listen.slice(0, i).replace(/^\[|\]$/g, '') : '';
  const port = Number(listen.slice(i + 1));
  if (!host || !Number.isInteger(port) || port < 0 || port > 65535)
    throw new GdpError('BAD_FLAG', `--listen expects HOST:PORT (port 0-65535), got '${listen}'`);
  if (host === '0.0.0.0' || host === '::')
    throw new GdpError('BAD_FLAG', `--listen ${listen}: give an address of this machine the other workers can reach; it is the address they dial`);
  if (!isLoopbackHost(host) && token === undefined)
    throw new GdpError('BAD_FLAG', `--listen ${listen} is reachable from other machines: it needs the run's token (--token or GDP_TOKEN)`);
  const tls = o.cert && o.key ? { cert: readFlagFile('--cert', o.cert), key: readFlagFile('--key', o.key) } : undefined;
  return { host, port, token, tls, ca };
}

async function run(o: Options): Promise<void> {
  if (!/^wss?:\/\/[^/]+/.test(o.connect)) throw new GdpError('BAD_FLAG', `--connect expects ws://HOST:PORT or wss://HOST:PORT, got '${o.connect}'`);
  const token = o.token ?? process.env.GDP_TOKEN;
  let ca: Buffer | undefined;
  if (o.ca !== undefined) {
    // Also the trust for wss:// ring peers (their --cert), so a ws:// coordinator with a --listen is fine.
    if (!o.connect.startsWith('wss://') && o.listen === undefined) {
      throw new GdpError('BAD_FLAG', `--ca is for wss:// coordinators and ring peers (with --listen); --connect is '${o.connect}'`);
    }
    ca = readFlagFile('--ca', o.ca);
  }
  const ring = ringListen(o, token, ca);
  // The backend, protocol and session modules (TF.js, the wasm backend, zod schemas) take about a second of CPU to
  // load: imported only once the flags have passed their checks, so --help and a flag error never pay it.
  await (await import('./command.js')).runWorker(o, { token, ca, ring });
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
    .option(
      '--listen <host:port>',
      "ring listener for the other workers when the run uses dist.allreduce 'ring' or 'auto' (default 127.0.0.1:0 with a loopback coordinator)",
    )
    .option('--cert <file>', 'PEM certificate: the ring listener serves wss://, with --key')
    .option('--key <file>', 'PEM private key of --cert')
    .option('--data-dir <dir>', "this machine's dataset folder (overrides the config's data.dir)")
    .option(
      '--retry-for <seconds>',
      'when the coordinator goes away without ending the run, keep reconnecting this long (0: exit)',
      (v: string) => {
        const n = Number(v);
        if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`--retry-for must be a number of seconds >= 0, got '${v}'`);
        return n;
      },
      600,
    );
  return runCommand<Options>(program, argv, run);
}
