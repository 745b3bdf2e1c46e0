import { shardRanges } from '../../src/coordinator/collectives.js';
import type { StepResult } from '../../src/coordinator/cluster.js';
import type { PruneCluster } from '../../src/coordinator/prune_options.js';
import type { Batch, Dataset } from '../../src/shared/data/dataset.js';
import type { ModelUpdate } from '../../src/shared/protocol/model_update.js';
import '../../src/shared/pruning/updates.js';
import { Rng } from '../../src/shared/rng.js';
import { addStats, emptyStats, type ParamSet, type Replica, type StepSgdOptions } from '../../src/shared/train/replica.js';

/**
 * The pruner's cluster operations on one in-process replica: what the coordinator does, without workers. With
 * `shards` > 1 each batch is cut into the coordinator's contiguous shards and their gradient sums are added in
 * shard order (BN statistics per shard), i.e. one process computing what that many workers would.
 */
export class LocalCluster implements PruneCluster {
  readonly updates: ModelUpdate[] = [];
  syncs = 0;
  constructor(
    readonly replica: Replica,
    private readonly train: Dataset,
    private readonly test: Dataset,
    private readonly shards = 1,
  ) {}
  async step(indices: Int32Array, set: ParamSet, sgd: StepSgdOptions): Promise<StepResult> {
    const layout = this.replica.layout(set);
    const avgGrad = new Float32Array(layout.size);
    let stats = emptyStats();
    for (const [s, e] of shardRanges(indices.length, this.shards)) {
      if (e === s) continue;
      const batch = await this.train.load(indices.subarray(s, e), { augment: false, seed: 0 });
      const r = this.replica.gradients(batch, layout);
      for (let i = 0; i < avgGrad.length; i++) avgGrad[i] += r.grad[i];
      stats = addStats(stats, r.stats);
    }
    for (let i = 0; i < avgGrad.length; i++) avgGrad[i] /= indices.length;
    this.replica.applyGradient(layout, avgGrad, sgd);
    return { avgGrad, layout, stats, perWorker: [] };
  }
  async evaluate(indices: Int32Array) {
    return addStats(emptyStats(), this.replica.evaluate(await this.test.load(indices, { augment: false, seed: 0 })));
  }
  async syncBatchNormStats() {
    this.syncs++;
  }
  async broadcastModelUpdate(u: ModelUpdate) {
    this.updates.push(u);
    // As the coordinator does: the replica's own replay (custom updates through the registered handlers).
    this.replica.applyUpdate(u);
  }
}

/** Random images whose label is carried by the mean of one channel band: learnable, tiny, deterministic. */
export function syntheticDataset(size: number, shape: [number, number, number], seed: number, classes = 10): Dataset {
  const rng = new Rng(seed);
  const per = shape[0] * shape[1] * shape[2];
  const labels = Int32Array.from({ length: size }, () => rng.int(classes));
  const x = Float32Array.from({ length: size * per }, (_, i) => rng.normal() * 0.5 + labels[Math.floor(i / per)] / classes);
  return {
    name: 'synthetic',
    size,
    shape,
    numClasses: classes,
    labels,
    async load(indices: ArrayLike<number>): Promise<Batch> {
      const n = indices.length;
      const bx = new Float32Array(n * per);
      const by = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        bx.set(x.subarray(indices[i] * per, (indices[i] + 1) * per), i * per);
        by[i] = labels[indices[i]];
      }
      return { x: bx, y: by, n };
    },
  };
}
