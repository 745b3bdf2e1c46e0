import { configSchema } from '../shared/config/schema.js';
import { loadDataset, resolveNormalisation } from '../shared/data/index.js';
import { MNIST_SHAPE } from '../shared/data/mnist.js';
import { CIFAR_SIDE, describeNormalisation } from '../shared/data/transforms.js';
import { GdpError } from '../shared/errors.js';
import { Rng } from '../shared/rng.js';
import { Replica, addStats, emptyStats } from '../shared/train/replica.js';
import { say, type Common } from './cli_common.js';
import { chooseNormalisation, type NormFlags } from './input_norm.js';
import { checkBatch, withModel } from './run_common.js';

export interface EvalOptions extends Common, NormFlags {
  weights: string;
  arch?: string;
  data: string;
  dataDir?: string;
  batchSize: number;
  recalibrateBn?: number;
  testSubset?: number;
  seed: string;
}

/**
 * The `data` section eval loads: `--data`, `--data-dir`, and for `folder` the image size and channels of the model's
 * input (HWC `inputShape`; folder images are square), so a model pruned on its own images is evaluated on them.
 * Throws BAD_FLAG for a dataset other than mnist without --data-dir, and SHAPE_MISMATCH for a dataset of one image
 * shape (mnist, CIFAR) that is not the model's input, or a folder and a model whose input is not square or has
 * neither 1 nor 3 channels.
 */
export function evalData(o: Pick<EvalOptions, 'data' | 'dataDir' | 'batchSize' | 'testSubset'>, inputShape: readonly number[]): Record<string, unknown> {
  // loadDataset's own message names the config key data.dir, which eval does not read.
  if (o.data !== 'mnist' && o.dataDir === undefined) throw new GdpError('BAD_FLAG', `--data ${o.data} needs the dataset folder: pass --data-dir <dir>`);
  const data = { type: o.data, batch_size: o.batchSize, test_batch_size: o.batchSize, dir: o.dataDir, num_workers: 1, test_subset: o.testSubset };
  // Datasets of one image shape, checked before anything reads them (the default --data is mnist).
  const fixed: Record<string, readonly number[]> = { mnist: MNIST_SHAPE, cifar10: [CIFAR_SIDE, CIFAR_SIDE, 3], cifar100: [CIFAR_SIDE, CIFAR_SIDE, 3] };
  const shape = fixed[o.data];
  if (shape && shape.join('x') !== inputShape.join('x')) {
    throw new GdpError(
      'SHAPE_MISMATCH',
      `--data ${o.data} gives ${shape.join('x')} images (HWC), the model takes ${inputShape.join('x')}: pick its dataset with --data (your own images: --data folder --data-dir DIR)`,
    );
  }
  if (o.data !== 'folder') return data;
  const [h, w, c] = inputShape;
  if (h !== w || (c !== 1 && c !== 3)) {
    throw new GdpError('SHAPE_MISMATCH', `--data folder gives square images of 1 or 3 channels; the model takes ${inputShape.join('x')} (HWC)`);
  }
  return { ...data, image_size: h, channels: c };
}

/**
 * The batches `--recalibrate-bn` draws: `asked` batches of `batchSize`, at most as many whole batches as the training
 * set holds, and one batch of the whole set when it is smaller than a batch. `images` is their total.
 */
function recalibrationPlan(asked: number, batchSize: number, trainSize: number): { batches: number; batchSize: number; images: number } {
  const size = Math.min(batchSize, trainSize);
  const batches = Math.min(asked, Math.floor(trainSize / size));
  return { batches, batchSize: size, images: batches * size };
}

/**
 * `gdp-model eval`: top-1 / top-5 accuracy and mean loss of a weights file on a dataset's test set, after an
 * optional re-estimation of BN running statistics over `recalibrateBn` shuffled training batches. Images are
 * normalised with --mean/--std, else the normalisation the file records, else the dataset's own (its constants, or
 * computed from a folder's training images), and eval says which. Throws BAD_FLAG (a non-integer seed, a missing
 * --data-dir, bad --mean/--std), SHAPE_MISMATCH (the dataset's images do not fit the model), BATCH_TOO_LARGE, and
 * the errors of loading the model file and the dataset.
 */
export async function evalCommand(o: EvalOptions): Promise<void> {
  const seed = Number(o.seed);
  if (!Number.isInteger(seed)) throw new GdpError('BAD_FLAG', `--seed must be an integer, got '${o.seed}'`);
  await withModel(o, async (m) => {
    const config = configSchema.parse({
      base: { task_name: 'eval', seed },
      model: { name: m.arch, num_class: m.numClasses },
      train: { max_epoch: 0 },
      data: evalData(o, m.inputShape),
      loss: { criterion: 'softmax' },
    });
    const chosen = chooseNormalisation(o, m, o.weights);
    let norm = chosen.norm;
    const source = chosen.norm ? (o.mean !== undefined ? 'flags' : 'file') : 'dataset';
    if (norm) say(o, chosen.line);
    else {
      const own = await resolveNormalisation(config);
      norm = own.norm;
      say(o, `${chosen.line}: using ${config.data.type}'s own, ${own.source}: ${describeNormalisation(norm)}`);
    }
    const data = await loadDataset(config, { norm, classesOf: `${o.weights} (evaluated on --data ${o.data})` });
    try {
      const shape = data.test.shape;
      if (shape.join('x') !== m.inputShape.join('x')) {
        throw new GdpError('SHAPE_MISMATCH', `${o.data} images are ${shape.join('x')} (HWC), ${m.arch} takes ${m.inputShape.join('x')}`);
      }
      // The largest pass: a recalibration batch (training images), else a test batch.
      checkBatch(m, Math.min(o.batchSize, Math.max(data.test.size, o.recalibrateBn ? data.train.size : 0)), '--batch-size', o.batchSize);
      const replica = new Replica(m.model, m.inputShape);
      let recalibrated = 0;
      if (o.recalibrateBn) {
        const order = Int32Array.from({ length: data.train.size }, (_, i) => i);
        new Rng(seed).shuffle(order);
        const plan = recalibrationPlan(o.recalibrateBn, o.batchSize, data.train.size);
        if (plan.batches < o.recalibrateBn) {
          say(
            o,
            `warning: --recalibrate-bn ${o.recalibrateBn} asks for ${o.recalibrateBn} batches of ${o.batchSize} (${o.recalibrateBn * o.batchSize} images); ` +
              `${data.train.name} has ${data.train.size} images: ${plan.batches} batch${plan.batches === 1 ? '' : 'es'} of ${plan.batchSize} used`,
          );
        }
        const batches = (async function* () {
          for (let b = 0; b < plan.batches; b++)
            yield await data.train.load(order.subarray(b * plan.batchSize, (b + 1) * plan.batchSize), { augment: false, seed });
        })();
        recalibrated = await replica.recalibrateBatchNorm(batches);
        say(
          o,
          `BN statistics re-estimated over ${recalibrated} training batch${recalibrated === 1 ? '' : 'es'} of ${plan.batchSize} images (${plan.images} images)`,
        );
      }
      let stats = emptyStats();
      for (let s = 0; s < data.test.size; s += o.batchSize) {
        const idx = Int32Array.from({ length: Math.min(o.batchSize, data.test.size - s) }, (_, i) => s + i);
        stats = addStats(stats, replica.evaluate(await data.test.load(idx, { augment: false, seed: 0 })));
      }
      const r = {
        weights: o.weights,
        data: data.test.name,
        samples: stats.count,
        top1: stats.correct1 / stats.count,
        top5: stats.correct5 / stats.count,
        loss: stats.lossSum / stats.count,
        recalibrated_batches: recalibrated,
        normalisation: { mean: norm.mean, std: norm.std, source },
      };
      if (o.json) {
        process.stdout.write(`${JSON.stringify(r)}\n`);
        return;
      }
      say(o, `${data.test.name}: ${r.samples} images, top-1 ${(100 * r.top1).toFixed(2)}%, top-5 ${(100 * r.top5).toFixed(2)}%, loss ${r.loss.toFixed(4)}`);
    } finally {
      await data.close?.();
    }
  });
}
