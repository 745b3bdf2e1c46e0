import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadDataset } from '../../src/shared/data/index.js';
import { loadMnist, mnistNormalisation } from '../../src/shared/data/mnist.js';
import { stratifiedSubset } from '../../src/shared/data/subset.js';
import type { Normalisation } from '../../src/shared/data/transforms.js';
import { parseSafetensors } from '../../src/shared/io/safetensors.js';
import { saveModelFile } from '../../src/shared/io/model_file.js';
import { buildModel } from '../../src/shared/models/registry.js';
import type { Module } from '../../src/shared/nn/module.js';
import { Replica } from '../../src/shared/train/replica.js';
import { coord } from '../dist/cli_helpers.js';
import { useBackend } from '../helpers.js';
import { solidFolderConfig, writeSolidFolder, type SolidFolder } from '../data/folder_files.js';
import { gdpModel } from './gdp_model.js';

const all = (n: number) => Int32Array.from({ length: n }, (_, i) => i);

/** Top-1 and mean loss of `model` on the folder's val split loaded with `norm` (undefined: computed from the folder). */
async function reference(model: Module, folder: SolidFolder, norm?: Normalisation): Promise<{ top1: number; loss: number }> {
  const config = solidFolderConfig(folder.dir);
  const data = await loadDataset(config, { norm });
  try {
    const s = new Replica(model, [32, 32, 3]).evaluate(await data.test.load(all(data.test.size), { augment: false, seed: 0 }));
    return { top1: s.correct1 / s.count, loss: s.lossSum / s.count };
  } finally {
    await data.close?.();
  }
}

const evalFolder = (file: string, folder: SolidFolder, ...flags: string[]) =>
  gdpModel('eval', '--weights', file, '--data', 'folder', '--data-dir', folder.dir, '--batch-size', '4', '--json', '--backend', 'wasm', ...flags);

describe("gdp-model uses the model file's input normalisation", () => {
  let dir: string;
  let folder: SolidFolder;
  before(async () => {
    await useBackend('wasm');
    dir = await mkdtemp(join(tmpdir(), 'gdp-eval-norm-'));
    folder = await writeSolidFolder(3);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
    await rm(folder.dir, { recursive: true, force: true });
  });

  it('a run with data.mean/std [0]/[1] and eval of its checkpoint give the same top-1 and loss', async () => {
    const logs = join(dir, 'logs');
    const run = await coord(
      [
        '--in-process',
        '--workers',
        '1',
        '--no-dashboard',
        '--backend',
        'wasm',
        ...['stages=["train"]', 'data.type=folder', `data.dir=${folder.dir}`, 'model.name=cifar.resnet20', 'model.num_class=3'].flatMap((s) => ['--set', s]),
        ...['data.batch_size=4', 'data.test_batch_size=4', 'data.num_workers=0', 'train.max_epoch=1', 'base.task_name=norm', `base.log_dir=${logs}`].flatMap(
          (s) => ['--set', s],
        ),
        ...['data.mean=[0,0,0]', 'data.std=[1,1,1]'].flatMap((s) => ['--set', s]),
      ],
      120000,
    );
    assert.equal(run.code, 0, run.out + run.err);
    assert.match(run.out, /input normalisation .*data\.mean\/data\.std: mean \[0\.00000, 0\.00000, 0\.00000\], std \[1\.00000, 1\.00000, 1\.00000\]/);
    const [epoch] = JSON.parse(await readFile(join(logs, 'norm', 'log.json'), 'utf8'));
    const file = join(logs, 'norm', 'train-epoch1.safetensors');
    assert.equal(parseSafetensors(await readFile(file)).metadata.input_std, '[1,1,1]');
    const r = await evalFolder(file, folder);
    assert.equal(r.code, 0, r.stderr);
    const got = JSON.parse(r.stdout);
    assert.deepEqual(got.normalisation, { mean: [0, 0, 0], std: [1, 1, 1], source: 'file' });
    assert.match(r.stderr, /input normalisation recorded in .*train-epoch1\.safetensors: mean \[0\.00000/);
    assert.equal(got.top1, epoch['acc@1']);
    assert.ok(Math.abs(got.loss - epoch.test_loss) < 1e-5, `eval loss ${got.loss}, the run's ${epoch.test_loss}`);
  });

  it('eval of a file without a normalisation keeps computing it from the folder; --mean/--std override; contradictions are BAD_FLAG', async () => {
    const model = buildModel('cifar.resnet20', { seed: 5, numClasses: 3 });
    try {
      const plainFile = join(dir, 'plain.safetensors');
      await saveModelFile(plainFile, model, { arch: 'cifar.resnet20', numClasses: 3 });
      const plain = await evalFolder(plainFile, folder);
      assert.equal(plain.code, 0, plain.stderr);
      const ref = await reference(model, folder);
      const got = JSON.parse(plain.stdout);
      assert.equal(got.normalisation.source, 'dataset');
      assert.match(plain.stderr, /records no input normalisation: using folder's own, computed from the training images/);
      assert.equal(got.top1, ref.top1);
      assert.ok(Math.abs(got.loss - ref.loss) < 1e-5);

      const norm = { mean: [0.25, 0.5, 0.75], std: [0.5, 0.25, 2] };
      const withNorm = join(dir, 'with_norm.safetensors');
      await saveModelFile(withNorm, model, { arch: 'cifar.resnet20', numClasses: 3, norm });
      const refNorm = await reference(model, folder, norm);
      assert.ok(Math.abs(refNorm.loss - ref.loss) > 1e-3, 'the two normalisations give different numbers');
      const fromFile = JSON.parse((await evalFolder(withNorm, folder)).stdout);
      assert.ok(Math.abs(fromFile.loss - refNorm.loss) < 1e-5, `${fromFile.loss} vs ${refNorm.loss}`);
      const flagged = await evalFolder(plainFile, folder, '--mean', '0.25,0.5,0.75', '--std', '0.5,0.25,2');
      assert.equal(JSON.parse(flagged.stdout).loss, fromFile.loss);
      assert.equal(JSON.parse(flagged.stdout).normalisation.source, 'flags');
      const over = await evalFolder(withNorm, folder, '--mean', '0,0,0', '--std', '1,1,1');
      assert.match(over.stderr, /from --mean\/--std: .*overriding .*with_norm\.safetensors's mean \[0\.250000/);

      for (const [flags, msg] of [
        [['--mean', '0,0,0'], /BAD_FLAG.*--mean needs --std/],
        [['--mean', '0,0', '--std', '1,1'], /BAD_FLAG.*--mean has 2 value\(s\), the model's input has 3 channel/],
        [['--mean', '0,0,0', '--std', '1,0,1'], /BAD_FLAG.*--std must be positive, channel 1/],
        [['--mean', '0,x,0', '--std', '1,1,1'], /BAD_FLAG.*--mean takes comma-separated numbers/],
      ] as const) {
        const bad = await evalFolder(plainFile, folder, ...flags);
        assert.equal(bad.code, 2, bad.stderr);
        assert.match(bad.stderr, msg);
      }
    } finally {
      model.dispose();
    }
  });

  it("MNIST: eval normalises the digits with the file's constants", async () => {
    const model = buildModel('mnist.resnet20', { seed: 3 });
    try {
      const file = join(dir, 'digits.safetensors');
      const norm = { mean: [0.5], std: [0.5] };
      await saveModelFile(file, model, { arch: 'mnist.resnet20', numClasses: 10, norm });
      const r = await gdpModel('eval', '--weights', file, '--json', '--backend', 'wasm', '--batch-size', '100', '--test-subset', '100');
      assert.equal(r.code, 0, r.stderr);
      // --test-subset 100: 100 digits in class proportion, in the test set's order.
      const evalOn = async (pair: ReturnType<typeof loadMnist>) => {
        const s = new Replica(model, [28, 28, 1]).evaluate(await pair.test.load(stratifiedSubset(pair.test.labels, 100), { augment: false, seed: 0 }));
        return s.lossSum / s.count;
      };
      const want = await evalOn(loadMnist(norm));
      assert.ok(Math.abs(JSON.parse(r.stdout).loss - want) < 1e-5);
      assert.ok(Math.abs(want - (await evalOn(loadMnist(mnistNormalisation())))) > 1e-3, "the file's constants are not MNIST's own");
    } finally {
      model.dispose();
    }
  });

  it('--recalibrate-bn says how many batches of how many images it used, and warns when the set is smaller than asked', async () => {
    const model = buildModel('cifar.resnet20', { seed: 5, numClasses: 3 });
    const file = join(dir, 'recal.safetensors');
    await saveModelFile(file, model, { arch: 'cifar.resnet20', numClasses: 3 });
    model.dispose();
    const r = await gdpModel('eval', '--weights', file, '--data', 'folder', '--data-dir', folder.dir, '--json', '--backend', 'wasm', '--recalibrate-bn', '20');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /warning: --recalibrate-bn 20 asks for 20 batches of 500 \(10000 images\); folder\/train has 7 images: 1 batch of 7 used/);
    assert.match(r.stderr, /BN statistics re-estimated over 1 training batch of 7 images \(7 images\)/);
    assert.equal(JSON.parse(r.stdout).recalibrated_batches, 1);
  });

  it('info prints it, export writes it into model.json, predict --pixels applies it', async () => {
    const model = buildModel('cifar.resnet20', { seed: 6, numClasses: 3 });
    const norm = { mean: [0.4, 0.5, 0.6], std: [0.2, 0.25, 0.3] };
    const file = join(dir, 'export.safetensors');
    await saveModelFile(file, model, { arch: 'cifar.resnet20', numClasses: 3, norm });
    model.dispose();
    const info = await gdpModel('info', '--weights', file, '--json', '--backend', 'cpu');
    assert.deepEqual(JSON.parse(info.stdout).normalisation, norm);
    const human = await gdpModel('info', '--weights', file, '--backend', 'cpu');
    assert.match(human.stdout, /input normalisation \(pixel in \[0, 1\] - mean\) \/ std: mean \[0\.400000, 0\.500000, 0\.600000\], std \[0\.200000/);

    const out = join(dir, 'web');
    const e = await gdpModel('export', '--weights', file, '--out', out, '--backend', 'cpu');
    assert.equal(e.code, 0, e.stderr);
    const json = JSON.parse(await readFile(join(out, 'model.json'), 'utf8'));
    assert.deepEqual(json.userDefinedMetadata.gdp.input, { layout: 'NHWC', pixels: '[0, 1]', ...norm });

    // Pixels in [0, 1] with --pixels give the logits of the same pixels normalised by hand.
    const n = 2;
    const pixels = Float32Array.from({ length: n * 3 * 32 * 32 }, (_, i) => ((i * 37) % 256) / 255);
    const normalised = pixels.map((v, i) => (v - norm.mean[Math.floor(i / 1024) % 3]) / norm.std[Math.floor(i / 1024) % 3]);
    await writeFile(join(dir, 'pixels.f32'), pixels);
    await writeFile(join(dir, 'normalised.f32'), normalised);
    const predict = (input: string, outFile: string, ...flags: string[]) =>
      gdpModel('predict', '--weights', file, '--input', join(dir, input), '--shape', `${n},3,32,32`, '--out', join(dir, outFile), '--backend', 'cpu', ...flags);
    const p1 = await predict('pixels.f32', 'a.f32', '--pixels');
    assert.equal(p1.code, 0, p1.stderr);
    assert.match(p1.stdout, /input normalisation recorded in/);
    const p2 = await predict('normalised.f32', 'b.f32');
    assert.match(p2.stdout, /--input fed as given; the model expects .*--pixels applies it/);
    const a = new Float32Array((await readFile(join(dir, 'a.f32'))).buffer.slice(0));
    const b = new Float32Array((await readFile(join(dir, 'b.f32'))).buffer.slice(0));
    assert.ok(a.every((v, i) => Math.abs(v - b[i]) < 1e-4));
    const bad = await predict('pixels.f32', 'c.f32', '--mean', '0,0,0', '--std', '1,1,1');
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /BAD_FLAG.*add --pixels/);
  });
});
