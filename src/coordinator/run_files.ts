import { join } from 'node:path';
import type { Config } from '../shared/config/schema.js';
import { packBlob } from '../shared/protocol/codec.js';
import type { Cluster } from './cluster.js';
import { writeFileAtomic } from './atomic_write.js';

/** One line of logs/<task_name>/log.json. */
export interface EpochRecord {
  stage: string;
  epoch: number;
  lr: number;
  train_loss: number;
  train_acc: number;
  test_loss: number;
  'acc@1': number;
  'acc@5': number;
  img_s: number;
  /** Images per second of each worker's own compute (from its answer times). */
  worker_img_s: Record<string, number>;
}

/** logs/<task_name>/: cfg.json, log.json (one record per epoch) and checkpoints; every file written atomically. */
export class RunFiles {
  readonly dir: string;
  private records: EpochRecord[] = [];

  constructor(config: Config) {
    this.dir = join(config.base.log_dir, config.base.task_name);
  }

  writeConfig(config: Config): void {
    writeFileAtomic(join(this.dir, 'cfg.json'), JSON.stringify(config, null, 2) + '\n');
  }

  appendEpoch(r: EpochRecord): void {
    this.records.push(r);
    writeFileAtomic(join(this.dir, 'log.json'), JSON.stringify(this.records, null, 2) + '\n');
  }

  /**
   * Saves the coordinator replica's full state (after averaging BN statistics over workers) with the model-update
   * log that rebuilds the architecture. msgpack of named float32 tensors plus JSON state, until the safetensors
   * writer lands in src/shared/io/.
   */
  async saveCheckpoint(cluster: Cluster, name: string, state: Record<string, unknown>): Promise<string> {
    await cluster.syncBatchNormStats();
    const tensors = [...cluster.model.namedSlots()].map(([n, s]) => {
      const v = s.value.dataSync() as Float32Array;
      return { name: n, shape: s.value.shape, data: new Uint8Array(v.buffer, v.byteOffset, v.byteLength) };
    });
    const momentum = cluster.replica.momentumState().map(([n, b]) => ({ name: n, shape: [b.length], data: new Uint8Array(b.buffer, b.byteOffset, b.byteLength) }));
    const path = join(this.dir, `${name}.ckpt`);
    writeFileAtomic(
      path,
      packBlob({ format: 'gdp-checkpoint-msgpack/1', config: cluster.config, updates: cluster.updates, state, tensors, momentum }),
    );
    return path;
  }
}
