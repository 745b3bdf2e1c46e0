import type { Config } from '../shared/config/schema.js';
import type { DatasetPair } from '../shared/data/dataset.js';
import { computesNormalisation } from '../shared/data/index.js';
import { configModel } from '../shared/models/registry.js';
import { memoryPair } from '../shared/protocol/transport.js';
import { exchangeBucketElements } from '../shared/protocol/version.js';
import { Replica } from '../shared/train/replica.js';
import { WorkerSession } from '../worker/session.js';
import { Coordinator, type ClusterOptions } from './cluster.js';
import { initialWeightsPath, loadInitialWeights } from './initial_weights.js';
import { restoreCoordinator, type ResumePoint } from './resume_point.js';
import { decideNormalisation } from './start_checks.js';

export interface InProcessOptions {
  workers: number;
  backend?: string;
  loadData?: (config: Config) => Promise<DatasetPair>;
  log?: (line: string) => void;
  /**
   * The token of the workers' ring listeners (127.0.0.1, any free port; opened when dist.allreduce is not 'star').
   * Tests set one to check refusals.
   */
  ringToken?: string;
  /** Continue from this resume point: the coordinator is restored before the workers join. */
  resume?: ResumePoint;
  /** Told of the workers joining and lost (ClusterOptions.observer). */
  observer?: ClusterOptions['observer'];
}

export interface InProcessCluster {
  coordinator: Coordinator;
  workers: WorkerSession[];
  /** Ends every session; resolves when they are closed. */
  close(): Promise<void>;
}

/**
 * The coordinator's model and replica, built from the config as every worker builds its own; then either restored
 * to a resume point, or loaded with the run's starting weights (model.weights).
 */
export function coordinatorFor(
  config: Config,
  log: (line: string) => void,
  extra: Pick<ClusterOptions, 'minWorkers' | 'pauseMs' | 'dataFingerprint' | 'observer'> = {},
  resume?: ResumePoint,
): Coordinator {
  const { model, inputShape } = configModel(config.model, config.base.seed);
  const replica = new Replica(model, inputShape);
  const bucketElems = exchangeBucketElements(config.dist.bucket_mib, replica.layout('all').size);
  const coordinator = new Coordinator({ config, model, replica, bucketElems, log, ...extra });
  const weights = initialWeightsPath(config);
  if (resume) restoreCoordinator(coordinator, resume);
  else if (weights) {
    const { gated, pruned } = loadInitialWeights(coordinator, weights);
    const form = [pruned && 'pruned', gated && 'gated'].filter(Boolean).join(', ');
    log(`gdp-coord: starting from ${weights}${form ? ` (${form} form)` : ''}`);
  }
  return coordinator;
}

/**
 * A coordinator and N workers in this process, linked by in-memory transports: the same messages and code as
 * separate processes, for tests and single-process training. A folder run without `data.mean`/`data.std` first has
 * its normalisation decided as gdp-coord's start decides it (decideNormalisation: computed from the training images
 * of `data.dir` and written into `config`), so that its checkpoints record it. Throws decideNormalisation's errors
 * (BAD_DATA...), WORKERS_MISSING when the workers are not all active within 60 s, and a worker's error that ends the
 * run (Membership: e.g. BAD_DATA) as it comes, after closing them.
 */
export async function startInProcess(config: Config, opts: InProcessOptions): Promise<InProcessCluster> {
  const log = opts.log ?? (() => {});
  // Only a computed one needs deciding: a known one (the config's, the dataset's constants) reads no data, and
  // gdp-coord --in-process has decided it at start already.
  if (computesNormalisation(config)) await decideNormalisation(config, { note: (l) => log(`gdp-coord: ${l}`) });
  // No in-process worker comes back once gone: losing every worker fails at once rather than pausing.
  const coordinator = coordinatorFor(config, log, { pauseMs: 0, observer: opts.observer }, opts.resume);
  const workers: WorkerSession[] = [];
  const runs: Promise<void>[] = [];
  for (let i = 0; i < opts.workers; i++) {
    const [c, w] = memoryPair([`memory:coordinator`, `memory:w${i}`]);
    coordinator.accept(c);
    const session = new WorkerSession(w, {
      workerId: `w${i}`,
      backend: opts.backend ?? 'in-process',
      gpu: null,
      host: 'in-process',
      pid: process.pid,
      loadData: opts.loadData,
      // In-process workers share the coordinator's machine, so its data folder is theirs (as gdp-worker --data-dir).
      dataDir: config.data.dir,
      ring: { host: '127.0.0.1', port: 0, token: opts.ringToken },
      log: (line) => log(`[w${i}] ${line}`),
    });
    workers.push(session);
    runs.push(session.run().catch((err) => log(`[w${i}] ended: ${(err as Error).message}`)));
  }
  const close = async (reason: string) => {
    coordinator.shutdown(reason);
    await Promise.all(runs);
  };
  try {
    await coordinator.waitForWorkers(opts.workers, 60000);
  } catch (err) {
    // A worker that failed to start (its data, e.g. BAD_DATA) or too few in time: no session is left running.
    await close('in-process workers failed to start');
    throw err;
  }
  return { coordinator, workers, close: () => close('in-process run finished') };
}
