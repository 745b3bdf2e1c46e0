import { CommanderError, Option, type Command } from 'commander';
import { BACKEND_CHOICES } from './backend_choice.js';
import { ERROR_CODES, GdpError } from './errors.js';

/** `--backend auto|tensorflow|wasm|cpu`, checked by commander at parse time, for every gdp command line. */
export function backendOption(): Option {
  return new Option('--backend <name>', 'tensor backend').choices([...BACKEND_CHOICES]).default('auto');
}

/**
 * Makes commander's own parse errors (unknown option or command, invalid choice or argument, missing required option
 * or argument) read like every other bad input: `NAME: error [BAD_FLAG]: message`, thrown as a CommanderError instead
 * of exiting. Applies to `program` and all its subcommands, so call it once the command tree is built.
 */
function reportParseErrorsAsBadFlag(program: Command, name = program.name()): void {
  program.exitOverride();
  program.configureOutput({
    outputError: (str, write) => write(`${name}: error [BAD_FLAG]: ${str.replace(/^error: /, '')}`),
  });
  for (const sub of program.commands) reportParseErrorsAsBadFlag(sub, name);
}

/**
 * Parses `argv` (user arguments, without node and the script) with `program`, then runs `run` on the root options
 * when given (a program whose subcommands have actions needs none); returns the exit status: 0 on success and for
 * --help / --version, BAD_FLAG's status (2) for a command line commander rejects, the error catalogue's status for a
 * GdpError (printed as `NAME: error [CODE]: message`). Any other error is rethrown: a bug, with its stack.
 * Loads nothing heavy itself: a command imports TF.js and the rest when it runs (and tfjs_quiet.ts with them).
 */
export async function runCommand<O>(program: Command, argv: string[], run?: (opts: O) => Promise<void>): Promise<number> {
  reportParseErrorsAsBadFlag(program);
  try {
    await program.parseAsync(argv, { from: 'user' });
    if (run) await run(program.opts<O & Record<string, unknown>>());
    return 0;
  } catch (err) {
    // Commander has printed its message (or the help) already; exit code 0 is --help, --version or `help`.
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : ERROR_CODES.BAD_FLAG.exit;
    if (!(err instanceof GdpError)) throw err;
    process.stderr.write(`${program.name()}: error [${err.code}]: ${err.message}\n`);
    return err.exitStatus;
  }
}
