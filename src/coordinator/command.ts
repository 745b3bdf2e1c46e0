import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { hostname } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Dashboard } from '../dashboard/dashboard.js';
import { RunFeed } from '../dashboard/feed.js';
import { listenDashboard } from '../dashboard/listen.js';
import { writeReport } from '../dashboard/report.js';
import { initBackend, type BackendChoice } from '../shared/backend.js';
import { loadConfigReady } from '../shared/config/load.js';
import { configNotes } from '../shared/config/notes.js';
import type { Config } from '../shared/config/schema.js';
import { dataFingerprint } from '../shared/data/index.js';
import { GdpError } from '../shared/errors.js';
import { MIN_TOKEN_LENGTH, isLoopbackHost } from '../shared/protocol/auth.js';
import { listenWs, type WsListener } from '../shared/protocol/ws_listener.js';
import '../shared/tfjs_quiet.js';
import './all_stages.js';
import type { Coordinator } from './cluster.js';
import { continuationPlan, nothingToTrain } from './continuation.js';
import { coordinatorFor, startInProcess } from './in_process.js';
import { LocalWorkers } from './local_workers.js';
import { readResumePoint, resumedConfig, type ResumePoint } from './resume_point.js';
import { checkResumable, runDir, runStages } from './run.js';
import { RunFiles } from './run_files.js';
import { clearRunFolder, runFolder } from './run_folder.js';
import { FeedObserver } from './run_observer.js';
import { runStartChecks } from './start_checks.js';
import { assertStagesAvailable } from './stages.js';

/** What gdp-coord does once its flags have parsed (main.ts imports this module then: it loads TF.js and the rest). */

export const DEFAULT_CONFIG = fileURLToPath(new URL('../../../configs/mnist-resnet20.json', import.meta.url));

function log(line: string): void {
  process.stdout.write(line + '\n');
}

export function parseListen(v: string): { host: string; port: number } {
  const i = v.lastIndexOf(':');
  const host = i > 0 ? v.slice(0, i) : '';
  const port = Number(v.slice(i + 1));
  if (!host || !Number.isInteger(port) || port < 0 || port > 65535) throw new GdpError('BAD_FLAG', `--listen expects HOST:PORT (port 0-65535), got '${v}'`);
  return { host, port };
}

export interface CoordOptions {
  /** Required except with --dry-run. */
  workers?: number;
  minWorkers: number;
  maxConnections: number;
  token?: string;
  cert?: string;
  key?: string;
  config?: string;
  listen: string;
  local?: boolean;
  inProcess?: boolean;
  backend: string;
  set: string[];
  dataDir?: string;
  dryRun?: boolean;
  resume?: string;
  /** Start afresh in a run folder that holds an earlier run, deleting its files first (not with --resume). */
  overwrite?: boolean;
  /** A base.epoch continuation may replace the resume point of an interrupted run in its folder (not with --resume). */
  discardResume?: boolean;
  /** false with --no-dashboard. */
  dashboard: boolean;
}

function readPem(flag: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new GdpError('BAD_FLAG', `${flag} ${file}: ${(err as Error).message}`);
  }
}

/** The network settings, checked before anything starts: a bad flag never surfaces after training began. */
export function resolveNetwork(o: Pick<CoordOptions, 'listen' | 'token' | 'cert' | 'key' | 'minWorkers' | 'workers'>, env: NodeJS.ProcessEnv = process.env) {
  const { host, port } = parseListen(o.listen);
  const token = o.token ?? env.GDP_TOKEN;
  if (token !== undefined && token.length < MIN_TOKEN_LENGTH) {
    throw new GdpError('BAD_FLAG', `--token / GDP_TOKEN must be at least ${MIN_TOKEN_LENGTH} characters (e.g. the output of 'openssl rand -hex 16')`);
  }
  if (!isLoopbackHost(host) && token === undefined) {
    throw new GdpError(
      'BAD_FLAG',
      `--listen ${o.listen} is reachable from other machines: set a shared token with --token or GDP_TOKEN (e.g. GDP_TOKEN=$(openssl rand -hex 16))`,
    );
  }
  if ((o.cert === undefined) !== (o.key === undefined)) throw new GdpError('BAD_FLAG', '--cert and --key go together');
  const tls = o.cert && o.key ? { cert: readPem('--cert', o.cert), key: readPem('--key', o.key) } : undefined;
  if (o.workers !== undefined && o.minWorkers > o.workers) throw new GdpError('BAD_FLAG', `--min-workers ${o.minWorkers} is more than --workers ${o.workers}`);
  return { host, port, token, tls };
}

async function resolveConfig(o: CoordOptions, resume?: ResumePoint): Promise<Config> {
  if (resume && o.config) throw new GdpError('BAD_FLAG', `--resume takes the config saved in ${resume.file}; drop --config`);
  const config = resume ? resumedConfig(resume, o.set) : await loadConfigReady(o.config ?? DEFAULT_CONFIG, o.set);
  if (o.dataDir) config.data.dir = o.dataDir;
  assertStagesAvailable(config.stages);
  if (resume) checkResumable(config, resume.run, resume.file);
  return config;
}

/**
 * Runs gdp-coord with its parsed options: checks the config, flags, data and model, then trains and prunes with the
 * workers (or, with --dry-run, prints the resolved config, and on stderr what a continuation's start will say). A
 * `base.epoch` continuation with nothing left to do (nothingToTrain) says so and returns before any worker joins,
 * its folder untouched. Throws GdpError for bad input and a failed run.
 */
export async function runCoordinator(o: CoordOptions): Promise<void> {
  const resume = o.resume === undefined ? undefined : readResumePoint(o.resume);
  const config = await resolveConfig(o, resume);
  const { host, port, token, tls } = resolveNetwork(o);
  if (o.workers === undefined && !o.dryRun) throw new GdpError('BAD_FLAG', '--workers <n> is required (only --dry-run runs without workers)');
  const backend = await initBackend(o.backend as BackendChoice);
  // A dry run's stdout is the resolved config alone.
  const note = o.dryRun ? (l: string) => process.stderr.write(`${l}\n`) : log;
  note(`gdp-coord: backend ${backend.description}`);
  for (const line of configNotes(config)) note(`gdp-coord: ${line}`);
  const workerBackend = o.local || o.inProcess ? backend.name : undefined;
  const data = await runStartChecks(config, {
    dataDir: o.dataDir,
    workers: o.workers,
    workerBackend,
    resumed: resume !== undefined,
    overwrite: o.overwrite,
    discardResume: o.discardResume,
    note: (l) => note(`gdp-coord: ${l}`),
  });
  // A continuation with nothing left to train: said, and the folder left as it is (a resumed run has its position).
  // runStages would say it too, but only once the workers had joined, and after cfg.json was written.
  const idle = resume ? undefined : nothingToTrain(config);
  if (o.dryRun || o.workers === undefined) {
    // What the start will say of a continuation.
    if (idle) note(`gdp-coord: ${idle}`);
    else if (!resume) for (const line of continuationPlan(config)) note(`gdp-coord: ${line}`);
    log(JSON.stringify(config, null, 2));
    return;
  }
  if (idle) return log(`gdp-coord: ${idle}`);

  let coordinator: Coordinator | undefined;
  let listener: WsListener | undefined;
  // The dashboard refuses an address off loopback without a token (BAD_FLAG) before anything starts.
  const dash = o.dashboard ? new Dashboard({ host, token, log: (l) => log(`gdp-coord: dashboard: ${l}`) }) : undefined;
  const observer =
    dash &&
    new FeedObserver(
      new RunFeed(dash, { log }),
      () => coordinator?.steps ?? 0,
      () => coordinator!.model,
    );
  const showDashboard = (l: WsListener) => dash && log(`gdp-coord: dashboard ${dash.url(l.scheme === 'wss' ? 'https' : 'http', l.host, l.port)}`);
  let closeInProcess: (() => Promise<void>) | undefined;
  const local = new LocalWorkers(log);
  let stopping: Promise<unknown> | undefined;
  // Idempotent: the signal handler and the run's own ending both wait for the same, complete stop.
  const stop = (reason: string) => {
    coordinator?.shutdown(reason);
    stopping ??= Promise.all([local.stop(), listener?.close(), closeInProcess?.()]);
    return stopping;
  };
  let interruptedBy: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    interruptedBy = sig;
    log(`gdp-coord: ${sig}: stopping the workers`);
    // The run below then fails for want of workers and reports the signal; this exit is the fallback for a
    // coordinator that is only waiting (for workers that never come).
    void stop(`coordinator received ${sig}`).finally(() => setTimeout(() => process.exit(sig === 'SIGINT' ? 130 : 143), 2000).unref());
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.once('exit', () => local.killNow());

  try {
    if (o.inProcess) {
      log(`gdp-coord: ${o.workers} in-process worker(s)`);
      if (dash) {
        // Without workers to listen for, a busy port costs the page, not the run.
        listener = await listenDashboard(dash, host, port, { token, tls, log: (l) => log(`gdp-coord: ${l}`) }).catch((err: Error) => {
          log(`gdp-coord: dashboard not served: ${err.message}`);
          return undefined;
        });
        if (listener) showDashboard(listener);
      }
      const c = await startInProcess(config, { workers: o.workers, backend: backend.name, log, resume, observer });
      coordinator = c.coordinator;
      closeInProcess = c.close;
    } else {
      const coord = coordinatorFor(config, log, { minWorkers: o.minWorkers, dataFingerprint: dataFingerprint(data), observer }, resume);
      coordinator = coord;
      listener = await listenWs(host, port, (t) => coord.accept(t), {
        token,
        tls,
        maxConnections: o.maxConnections,
        log: (l) => log(`gdp-coord: ${l}`),
        routes: dash,
      });
      const url = `${listener.scheme}://${listener.host}:${listener.port}`;
      // Listening on every interface: workers on other machines need this machine's name, not 0.0.0.0.
      const shown = listener.host === '0.0.0.0' || listener.host === '::' ? `${listener.scheme}://${hostname()}:${listener.port}` : url;
      log(`gdp-coord: listening on ${url}${token !== undefined ? ' (token required)' : ''}, waiting for ${o.workers} worker(s)`);
      showDashboard(listener);
      if (!isLoopbackHost(host) && !tls) log('gdp-coord: warning: without --cert/--key the token and all traffic cross the network unencrypted');
      if (o.local) {
        local.start(o.workers, url, backend.name, { token, ca: o.cert, dataDir: config.data.dir });
        coord.pauseCheck = () => local.checkAlive(o.minWorkers);
      } else {
        log(`start each worker with:\n  ${token !== undefined ? 'GDP_TOKEN=<the token> ' : ''}gdp-worker --connect ${shown}${tls ? ' [--ca CERT.pem]' : ''}`);
      }
      await coordinator.waitForWorkers(o.workers, o.local ? 300000 : Infinity, o.local ? () => local.checkAlive() : undefined);
    }
    if (o.overwrite && !resume) {
      // Only now, once the run is sure to start: a run that failed its checks or got no workers deleted nothing.
      const gone = clearRunFolder(runFolder(config));
      if (gone.length) log(`gdp-coord: --overwrite: deleted the earlier run's ${gone.length} file(s) from ${runFolder(config)}`);
    }
    const files = new RunFiles(config, resume && runDir(config, o.resume!), observer && ((r) => observer.epoch(r)));
    files.writeConfig(config);
    if (resume) {
      const r = resume.run;
      log(`gdp-coord: resuming ${resume.file} at stage '${config.stages[r.stage]}', step ${r.steps}`);
      if (r.workers !== o.workers)
        log(`gdp-coord: note: the run had ${r.workers} worker(s), now ${o.workers}: its numbers will differ from an uninterrupted run's`);
    }
    // A resumed run's page starts with the epochs, Ticks and Tocks logged before its resume point.
    const resumed = resume && { step: resume.run.steps, records: resume.run.files.records, prune: resume.run.files.logs['prune_log.json'] ?? [] };
    observer?.start(config.base.task_name, config.stages, o.workers, resumed);
    try {
      await runStages({
        coordinator,
        config,
        trainSize: data.train.size,
        testSize: data.test.size,
        files,
        log,
        workers: o.workers,
        resume: resume?.run,
        observer,
      });
      log(`gdp-coord: done; logs in ${files.dir}`);
    } finally {
      // A failed or interrupted run gets its report too: what it did until then.
      reportRun(files.dir, dash);
    }
  } catch (err) {
    // The workers hear why the run ended (`stop` is idempotent: a signal has already given its reason).
    await stop(err instanceof GdpError ? `the run failed: ${err.code}` : 'the run failed');
    if (interruptedBy) throw new GdpError('INTERRUPTED', `stopped by ${interruptedBy}`);
    throw err;
  } finally {
    await stop('run finished');
  }
}

/** Writes the run's report.html (with the dashboard's history when there is one) and logs its path; a failure is only logged. */
function reportRun(dir: string, dash: Dashboard | undefined): void {
  // A run stopped before its first epoch ended has nothing to report yet.
  if (!existsSync(join(dir, 'log.json'))) return log(`gdp-coord: no report: the run stopped before its first epoch ended`);
  try {
    log(`report: ${writeReport(dir, { live: dash?.history.view() })}`);
  } catch (err) {
    log(`gdp-coord: no report: ${(err as Error).message}`);
  }
}
