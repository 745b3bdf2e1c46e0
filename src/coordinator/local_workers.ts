import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { GdpError } from '../shared/errors.js';

const WORKER_CLI = fileURLToPath(new URL('../worker/cli.js', import.meta.url));
/**
 * Seconds a local worker keeps reconnecting after its connection ends (gdp-worker --retry-for): one dropped while
 * alive (stalled past its silence allowance on a loaded machine) rejoins the run; one whose coordinator died without
 * cleaning up exits after this long (a resumed --local run starts its own workers).
 */
const LOCAL_RETRY_S = 60;

/** Whether a child process has neither exited nor been ended by a signal. */
const isRunning = (c: ChildProcess): boolean => c.exitCode === null && c.signalCode === null;

/**
 * Worker processes this coordinator started (--local). They are ended with the coordinator: on normal exit, on
 * error and on SIGINT/SIGTERM; and should the coordinator die without cleaning up, each worker exits by itself
 * LOCAL_RETRY_S after its socket closes.
 */
export class LocalWorkers {
  private readonly children: ChildProcess[] = [];

  constructor(private readonly log: (line: string) => void) {}

  /**
   * Starts `n` workers connecting to `url`. The token goes in the environment (GDP_TOKEN), never on a command line
   * that every user of the machine can read; `ca` is the coordinator's own certificate file for wss://.
   */
  start(n: number, url: string, backend: string, opts: { token?: string; ca?: string; dataDir?: string } = {}): void {
    const env = { ...process.env };
    if (opts.token !== undefined) env.GDP_TOKEN = opts.token;
    else delete env.GDP_TOKEN;
    const extra = [...(opts.ca ? ['--ca', opts.ca] : []), ...(opts.dataDir ? ['--data-dir', opts.dataDir] : [])];
    for (let i = 0; i < n; i++) {
      const id = `local${i}`;
      // Its ring listener (used only when dist.allreduce is not 'star') is on loopback, whatever the coordinator's address.
      const child = spawn(
        process.execPath,
        [WORKER_CLI, '--connect', url, '--backend', backend, '--id', id, '--retry-for', String(LOCAL_RETRY_S), '--listen', '127.0.0.1:0', ...extra],
        {
          stdio: ['ignore', 'pipe', 'pipe'],
          env,
          // Its own process group: Ctrl-C in a terminal reaches the coordinator alone, which ends the run and then
          // its workers (stop), instead of every worker leaving on its own while the coordinator redoes the step.
          detached: true,
        },
      );
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

  /** Throws when fewer than `min` started worker processes still run (nothing left to wait for). */
  checkAlive(min = 1): void {
    const running = this.children.filter(isRunning).length;
    if (this.children.length && running < min) {
      throw new GdpError('WORKERS_EXITED', `${running} of ${this.children.length} local worker processes still run, ${min} needed (see their output above)`);
    }
  }

  /**
   * Ends every child still running: first `politeMs` for them to end on the coordinator's shutdown message (so that
   * each says why the session ended), then SIGTERM, then SIGKILL after `graceMs`.
   */
  async stop(graceMs = 3000, politeMs = 1000): Promise<void> {
    const exited = (c: ChildProcess) => new Promise<void>((resolve) => (isRunning(c) ? c.once('exit', () => resolve()) : resolve()));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(this.children.map(exited)), new Promise<void>((resolve) => (timer = setTimeout(resolve, politeMs)))]);
    clearTimeout(timer);
    const running = this.children.filter(isRunning);
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
    for (const c of this.children) if (isRunning(c)) c.kill('SIGKILL');
  }
}
