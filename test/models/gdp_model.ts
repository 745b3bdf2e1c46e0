import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../io/fixture.js';

const BIN = join(REPO_ROOT, 'bin', 'gdp-model.js');

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the gdp-model command line as a user would; a non-zero exit is returned, not thrown. */
export async function gdpModel(...args: string[]): Promise<Run> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [BIN, ...args], { maxBuffer: 1 << 24 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const r = e as { code: number; stdout: string; stderr: string };
    return { code: r.code, stdout: r.stdout, stderr: r.stderr };
  }
}
