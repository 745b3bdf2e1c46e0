import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { GdpError } from '../shared/errors.js';

const WORKER_CLI = fileURLToPath(new URL('../worker/cli.js', import.meta.url));

/**
 * Worker processes this coordinator started (--local). They are ended with the coordinator: on normal exit, on
 * error and on SIGINT/SIGTERM; and should the coordinator die without cleaning up, each worker exits by itself
 * when its socket closes.
 */
export class LocalWorkers {
  private readonly children: ChildProcess[] = [];

  constructor(private readonly log: (line: string) => void) {}

  start(n: number, url: string, backend: string): void {
    for (let i = 0; i < n; i++) {
      const id = `local${i}`;
      // --retry-for 0: a local worker lives and dies with this coordinator (a resumed run starts its own).
      const child = spawn(process.execPath, [WORKER_CLI, '--connect', url, '--backend', backend, '--id', id, '--retry-for', '0'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      for (const stream of [child.stdout, child.stderr]) {
        let rest = '';
        stream?.setEncoding('utf8');
        stream?.on('data', (chunk: string) => {
          const lines = (rest + chunk).split('\n');
          rest = lines.pop() ?? '';
          for (const line of lines) if (line) this.log(`[${id}] ${line}`);
        });
      }
      child.on('exit', (code, signal) => {
        if (code !== 0 && code !== null) this.log(`[${id}] worker process exited with code ${code}`);
        else if (signal && signal !== 'SIGTERM') this.log(`[${id}] worker process ended by ${signal}`);
      });
      this.log(`started worker ${id} (pid ${child.pid})`);
      this.children.push(child);
    }
  }

  get pids(): number[] {
    return this.children.map((c) => c.pid!).filter((p) => p !== undefined);
  }

  /** Throws when every started worker process has exited (nothing left to wait for). */
  checkAlive(): void {
    if (this.children.length && this.children.every((c) => c.exitCode !== null || c.signalCode !== null)) {
      throw new GdpError('WORKERS_EXITED', 'every local worker process exited before the run could start (see their output above)');
    }
  }

  /** Ends every child still running: SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 3000): Promise<void> {
    const running = this.children.filter((c) => c.exitCode === null && c.signalCode === null);
    await Promise.all(
      running.map(
        (c) =>
          new Promise<void>((resolve) => {
            const t = setTimeout(() => c.kill('SIGKILL'), graceMs);
            c.once('exit', () => {
              clearTimeout(t);
              resolve();
            });
            c.kill('SIGTERM');
          }),
      ),
    );
  }

  /** Last resort from a synchronous 'exit' handler: no waiting possible. */
  killNow(): void {
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
}
