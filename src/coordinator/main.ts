import { backendOption, runCommand } from '../shared/cli_options.js';
import { Command, InvalidArgumentError, Option } from 'commander';
import type { CoordOptions } from './command.js';

function positiveInt(flag: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${flag} must be a positive integer, got '${v}'`);
    return n;
  };
}

export async function main(argv: string[]): Promise<number> {
  const program = new Command('gdp-coord')
    .description('Coordinator of gdp data-parallel training and Gate Decorator pruning')
    .option('--workers <n>', 'number of workers to wait for (required, except with --dry-run)', positiveInt('--workers'))
    .option('--config <file>', 'config file (default: configs/mnist-resnet20.json of the package)')
    .option('--listen <host:port>', 'address to listen on (port 0: any free port); other than loopback needs a token', '127.0.0.1:7070')
    .option('--token <secret>', 'shared token workers must present (default: $GDP_TOKEN); required off loopback')
    .option('--cert <file>', 'PEM certificate: serve wss:// (TLS), with --key')
    .option('--key <file>', 'PEM private key of --cert')
    .option('--max-connections <n>', 'open connections at most; more are refused', positiveInt('--max-connections'), 64)
    .option('--min-workers <n>', 'with fewer active workers, pause and wait for workers to join', positiveInt('--min-workers'), 1)
    // Commander refuses the pair (BAD_FLAG, naming both): each starts the workers its own way.
    .addOption(new Option('--local', 'start the workers as child processes of this one').conflicts('inProcess'))
    .option('--in-process', 'run the workers inside this process (single-process training)')
    .addOption(backendOption())
    .option('--set <key.path=value>', 'override a config key (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--data-dir <dir>', "dataset folder (overrides the config's data.dir)")
    .option(
      '--dry-run',
      'run every start-up check that needs no worker (config, flags, run folder, data, model, weights, batch size), print the config resolved as JSON and exit',
    )
    .option('--no-dashboard', 'serve no live dashboard (by default its page is on the --listen address, its URL printed at the start)')
    .option('--resume <dir>', 'continue the run in DIR (its logs/<task_name> folder) from its resume point, with its config')
    .addOption(
      new Option('--overwrite', "start afresh even if the run's logs/<task_name> folder holds an earlier run: its files are deleted first").conflicts('resume'),
    )
    .addOption(
      new Option(
        '--discard-resume',
        'a base.epoch continuation goes on although its folder holds an interrupted run, whose resume point it replaces as its first stage starts',
      ).conflicts('resume'),
    );
  // The run's modules (TF.js, the wasm backend, zod schemas) take about a second of CPU to load: imported only once the
  // flags have parsed, so --help and a flag error never pay it.
  return runCommand<CoordOptions>(program, argv, async (o) => (await import('./command.js')).runCoordinator(o));
}
