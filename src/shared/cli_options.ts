import { Option, type Command } from 'commander';
import { BACKEND_CHOICES } from './backend.js';
import { GdpError } from './errors.js';

/** `--backend auto|tensorflow|wasm|cpu`, checked by commander at parse time, for every gdp command line. */
export function backendOption(): Option {
  return new Option('--backend <name>', 'tensor backend').choices([...BACKEND_CHOICES]).default('auto');
}

/**
 * Parses `argv` with `program` (built with exitOverride) and runs `run` on its options; returns the exit status:
 * commander's for a bad command line (2 when it gives none), 0 on success, the error catalogue's status for a
 * GdpError (printed as `NAME: error [CODE]: message`). Any other error is rethrown: a bug, with its stack.
 */
export async function runCommand<O>(program: Command, argv: string[], run: (opts: O) => Promise<void>): Promise<number> {
  try {
    program.parse(argv, { from: 'user' });
  } catch (err) {
    return (err as { exitCode?: number }).exitCode ?? 2;
  }
  try {
    await run(program.opts<O & Record<string, unknown>>());
    return 0;
  } catch (err) {
    if (!(err instanceof GdpError)) throw err;
    process.stderr.write(`${program.name()}: error [${err.code}]: ${err.message}\n`);
    return err.exitStatus;
  }
}
