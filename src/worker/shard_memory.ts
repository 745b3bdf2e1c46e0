import type { Config } from '../shared/config/schema.js';
import { checkShardFits, largestBatchWithin, type PassKind } from '../shared/train/memory.js';
import type { Replica } from '../shared/train/replica.js';

/**
 * A worker's check of every shard against its tensor backend's memory, before computing it: a shard too big
 * becomes a coded BATCH_TOO_LARGE answer instead of a wasm trap. The largest shard that fits is traced once per
 * pass kind and architecture (the update log's length: pruning and melting change it, nothing else does).
 */
export class ShardMemoryCheck {
  private cache = new Map<string, number>();

  /** `limit`: bytes the backend may hold (memory.ts backendMemoryLimit); undefined: nothing is checked. */
  constructor(
    private readonly backend: string,
    private readonly limit: number | undefined,
  ) {}

  /**
   * Throws unless a pass of `kind` over `samples` samples fits.
   * @throws GdpError BATCH_TOO_LARGE naming `setting` (the config key the shard comes from), the shard size, the
   *   estimate and the limit.
   */
  check(replica: Replica, config: Config, samples: number, kind: PassKind, setting: 'data.batch_size' | 'data.test_batch_size'): void {
    if (this.limit === undefined) return;
    const key = `${kind}/${replica.updates.length}`;
    let fits = this.cache.get(key);
    if (fits === undefined) {
      fits = largestBatchWithin(replica.model, replica.inputShape, kind, this.limit);
      this.cache.set(key, fits);
    }
    if (samples <= fits) return;
    const batch = config.data[setting === 'data.batch_size' ? 'batch_size' : 'test_batch_size'];
    const info = { model: replica.model, inputShape: replica.inputShape, arch: config.model.name };
    checkShardFits(
      info,
      samples,
      this.backend,
      kind,
      { batch: `${setting} ${batch}`, total: batch, advice: `more workers, or a smaller ${setting}` },
      this.limit,
    );
  }
}
