import { writeFile } from 'node:fs/promises';
import { Command, Option } from 'commander';
import * as tf from '@tensorflow/tfjs-core';
import { backendOption, runCommand } from '../shared/cli_options.js';
import { GdpError } from '../shared/errors.js';
import { modelCost } from '../shared/graph/flops.js';
import { layerWidths, saveModelFile, type LoadedModel } from '../shared/io/model_file.js';
import { nchwToNhwc, parseShape, readF32, writeF32 } from '../shared/io/raw_tensor.js';
import { exportTfjs } from '../shared/io/tfjs_export.js';
import { tfjsDirWriter } from '../shared/io/tfjs_files.js';
import { predictLogits } from '../shared/models/infer.js';
import { archSpec, buildModel, modelInputShape } from '../shared/models/registry.js';
import { melt } from '../shared/pruning/melt.js';
import { BatchNorm2d } from '../shared/nn/layers.js';
import { measureLatency } from './bench.js';
import { archOption, checkBatch, fmt, load, mega, positiveInt, positiveNumber, say, startBackend, type Common } from './cli_common.js';
import { evalCommand, type EvalOptions } from './eval_command.js';
import { importTfjsFile } from './import_tfjs.js';
import { exportGraphTfjs } from '../shared/io/tfjs_graph_export.js';
import { exportGraphKeras } from '../shared/io/keras_export.js';
import { isKerasFile, KERAS_SUFFIXES } from '../shared/io/keras_files.js';
import { GraphModel } from '../shared/models/graph_model.js';
import { writeReport } from '../dashboard/report.js';
import { writeWidthPage } from '../dashboard/width_page.js';

/** Channels whose GBN mask is 0: pruned in place, still present until melting. */
function maskedChannels(m: LoadedModel): number {
  let n = 0;
  for (const [, mod] of m.model.namedModules()) {
    if (mod instanceof BatchNorm2d && mod.mask) n += (mod.mask.value.dataSync() as Float32Array).filter((v) => v === 0).length;
  }
  return n;
}

export function buildProgram(): Command {
  const program = new Command('gdp-model')
    .description('Inspect, convert, run and benchmark gdp / PyTorch (safetensors) models')
    .showHelpAfterError()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  program
    .command('info')
    .description('layers, widths, MACs and parameters of a weights file')
    .requiredOption('--weights <file>', 'safetensors file (gdp export or PyTorch state dict)')
    .addOption(archOption(false))
    .option('--json', 'print one JSON object')
    .option('--html <file>', 'also write a self-contained page drawing the width profile')
    .addOption(backendOption())
    .action(async (o: Common & { weights: string; arch?: string; html?: string }) => {
      await startBackend(o);
      const m = await load(o.weights, o.arch, o);
      try {
        if (o.html) say(o, `width profile: ${writeWidthPage(o.weights, o.html, m.arch, m.numClasses)}`);
        const cost = modelCost(m.model, m.inputShape);
        const widths = layerWidths(m.model);
        const layers = cost.layers.map((l) => ({ path: l.path, kind: l.kind, in: widths[l.path][0], out: widths[l.path][1], macs: l.macs }));
        const masked = m.gated ? maskedChannels(m) : 0;
        if (o.json) {
          const out = {
            arch: m.arch,
            numClasses: m.numClasses,
            inputShape: m.inputShape,
            gated: m.gated,
            maskedChannels: masked,
            macs: cost.macs,
            params: cost.params,
            layers,
          };
          process.stdout.write(`${JSON.stringify(out)}\n`);
          return;
        }
        const w = Math.max(...layers.map((l) => l.path.length), 5);
        say(o, `${'layer'.padEnd(w)}  kind    in    out  MACs`);
        for (const l of layers) say(o, `${l.path.padEnd(w)}  ${l.kind.padEnd(6)} ${String(l.in).padStart(4)}  ${String(l.out).padStart(5)}  ${fmt(l.macs)}`);
        say(o, `MACs ${fmt(cost.macs)} (${mega(cost.macs)})  params ${fmt(cost.params)} (${mega(cost.params)})`);
        if (m.gated) say(o, `masked channels (GBN mask 0, removed by melting): ${masked}`);
      } finally {
        m.model.dispose();
      }
    });

  program
    .command('flops')
    .description('MACs and parameters of an unpruned architecture')
    .addOption(archOption(true))
    .option('--num-class <n>', "number of classes (default: the architecture's)", positiveInt('--num-class'))
    .option('--width-mult <x>', 'channel multiplier (mobilenet_v2; default 1)', positiveNumber('--width-mult'))
    .option('--input-size <n>', 'input height and width (mobilenet_v2; default 224)', positiveInt('--input-size'))
    .option('--json', 'print one JSON object')
    .addOption(backendOption())
    .action(async (o: Common & { arch: string; numClass?: number; widthMult?: number; inputSize?: number }) => {
      const spec = archSpec(o.arch);
      const opts = { numClasses: o.numClass ?? spec.defaultClasses, widthMult: o.widthMult, inputSize: o.inputSize };
      const inputShape = modelInputShape(o.arch, opts);
      await startBackend(o);
      const numClasses = opts.numClasses;
      const model = buildModel(o.arch, opts);
      try {
        const { macs, params } = modelCost(model, inputShape);
        if (o.json) process.stdout.write(`${JSON.stringify({ arch: o.arch, numClasses, inputShape, macs, params })}\n`);
        else
          say(
            o,
            `${o.arch} (${numClasses} classes, input ${inputShape.join('x')}): MACs ${fmt(macs)} (${mega(macs)})  params ${fmt(params)} (${mega(params)})`,
          );
      } finally {
        model.dispose();
      }
    });

  program
    .command('predict')
    .description('eval-mode logits for raw float32 little-endian NCHW images')
    .addOption(archOption(false))
    .requiredOption('--weights <file>', 'safetensors file')
    .requiredOption('--input <file>', 'raw float32 LE, NCHW')
    .requiredOption('--shape <N,C,H,W>', 'shape of --input')
    .requiredOption('--out <file>', 'raw float32 LE logits [N, classes]')
    .option('--batch <n>', 'images per forward pass', positiveInt('--batch'), 64)
    .addOption(backendOption())
    .action(async (o: Common & { arch?: string; weights: string; input: string; shape: string; out: string; batch: number }) => {
      const shape = parseShape(o.shape);
      if (shape.length !== 4) throw new GdpError('BAD_FLAG', `--shape must have 4 dimensions N,C,H,W, got '${o.shape}'`);
      await startBackend(o);
      const m = await load(o.weights, o.arch, o);
      try {
        const [n, c, h, w] = shape;
        const [ih, iw, ic] = m.inputShape;
        if (c !== ic || h !== ih || w !== iw) {
          throw new GdpError('BAD_FLAG', `--shape ${o.shape} does not fit ${m.arch}, which takes N,${ic},${ih},${iw}`);
        }
        checkBatch(m, Math.min(o.batch, n), '--batch');
        const x = nchwToNhwc(await readF32(o.input, shape), shape);
        const logits = predictLogits(m.model, x, [n, h, w, c], o.batch);
        await writeF32(o.out, logits);
        say(o, `wrote ${n}x${m.numClasses} logits to ${o.out}`);
      } finally {
        m.model.dispose();
      }
    });

  program
    .command('melt')
    .description('fold the GBN gates of a gated checkpoint and cut its masked channels: a smaller plain network')
    .addOption(archOption(false))
    .requiredOption('--weights <file>', "gated safetensors (the paper's GBN form)")
    .requiredOption('--out <file>', 'melted safetensors, with arch, num_class and widths in its metadata')
    .option('--record <file>', 'also write the melt record (JSON: the kept channels per group)')
    .option('--json', 'print one JSON object')
    .addOption(backendOption())
    .action(async (o: Common & { arch?: string; weights: string; out: string; record?: string }) => {
      await startBackend(o);
      const m = await load(o.weights, o.arch, o);
      try {
        if (!m.gated) throw new GdpError('NOT_GATED', `${o.weights}: no BatchNorm is gated (no '<name>.g' / '<name>.bn_mask' tensors): nothing to melt`);
        const before = modelCost(m.model, m.inputShape);
        const record = melt(m.model, m.inputShape);
        const after = modelCost(m.model, m.inputShape);
        const inputSize = m.metadata.input_size !== undefined ? m.inputShape[0] : undefined;
        await saveModelFile(o.out, m.model, { arch: m.arch, numClasses: m.numClasses, inputSize });
        if (o.record) await writeFile(o.record, `${JSON.stringify(record)}\n`);
        const ratio = after.macs / before.macs;
        if (o.json) {
          process.stdout.write(
            `${JSON.stringify({ arch: m.arch, out: o.out, before: { macs: before.macs, params: before.params }, after: { macs: after.macs, params: after.params }, macsRatio: ratio })}\n`,
          );
          return;
        }
        say(o, `MACs   ${fmt(before.macs)} -> ${fmt(after.macs)} (${(100 * ratio).toFixed(1)}% kept, ${(100 * (1 - ratio)).toFixed(1)}% removed)`);
        say(o, `params ${fmt(before.params)} -> ${fmt(after.params)} (${((100 * after.params) / before.params).toFixed(1)}% kept)`);
        say(o, `wrote ${o.out}`);
      } finally {
        m.model.dispose();
      }
    });

  program
    .command('export')
    .description('write a TF.js layers model (model.json + weights.bin, NHWC input) for tf.loadLayersModel, or a Keras file')
    .requiredOption('--weights <file>', 'safetensors file')
    .addOption(archOption(false))
    .addOption(new Option('--format <format>', 'output format').choices(['tfjs']).default('tfjs'))
    .option('--out <dir>', 'output directory (TF.js)')
    .option('--keras <file>', 'an imported model as a Keras file instead: OUT.keras (Keras 3) or OUT.h5 (legacy Keras 2)')
    .addOption(backendOption())
    .action(async (o: Common & { weights: string; arch?: string; out?: string; keras?: string }) => {
      if ((o.out === undefined) === (o.keras === undefined)) throw new GdpError('BAD_FLAG', 'export takes one of --out DIR (TF.js) and --keras FILE');
      await startBackend(o);
      const m = await load(o.weights, o.arch, o);
      try {
        const note = (line: string) => say(o, `note: ${line}`);
        if (o.keras !== undefined) {
          if (!(m.model instanceof GraphModel))
            throw new GdpError('UNSUPPORTED_EXPORT', `${o.weights}: --keras exports imported ('graph') models; ${m.arch} exports to TF.js with --out`);
          const r = await exportGraphKeras(m.model, o.keras, note);
          say(o, `wrote ${o.keras} (${fmt(r.bytes)} bytes); input NHWC [N,${m.inputShape.join(',')}]`);
          return;
        }
        const out = o.out!;
        // An imported model goes back to its own topology (names, classes, fused activations); others are rebuilt.
        const r =
          m.model instanceof GraphModel
            ? await exportGraphTfjs(m.model, tfjsDirWriter(out), note)
            : await exportTfjs(m.model, m.inputShape, tfjsDirWriter(out));
        say(o, `wrote ${out}/model.json and weights.bin (${fmt(r.modelArtifactsInfo.weightDataBytes ?? 0)} bytes); input NHWC [N,${m.inputShape.join(',')}]`);
      } finally {
        m.model.dispose();
      }
    });

  program
    .command('import')
    .description('read a TF.js layers model or a Keras file (Sequential or functional) into a gdp model file: same layer names, weights and outputs')
    .option('--tfjs <path>', 'the model.json of a TF.js layers model (or its folder)')
    .option('--keras <file>', 'a Keras 3 .keras file or a legacy Keras 2 .h5 file (whole model: config and weights)')
    .requiredOption('--out <file>', 'gdp safetensors; its metadata carries the graph, so --weights and model.weights take it')
    .option('--json', 'print one JSON object')
    .addOption(backendOption())
    .action(async (o: Common & { tfjs?: string; keras?: string; out: string }) => {
      if ((o.tfjs === undefined) === (o.keras === undefined)) throw new GdpError('BAD_FLAG', 'import takes one of --tfjs PATH and --keras FILE');
      if (o.keras !== undefined && !isKerasFile(o.keras))
        throw new GdpError('BAD_FLAG', `--keras ${o.keras}: a Keras file ends in ${KERAS_SUFFIXES.join(', ')}`);
      await startBackend(o);
      const r = await importTfjsFile((o.tfjs ?? o.keras)!, o.out);
      if (o.json) {
        process.stdout.write(`${JSON.stringify({ out: o.out, ...r })}\n`);
        return;
      }
      say(
        o,
        `model '${r.name}': ${r.layers} layers, input ${r.inputShape.join('x')} (HWC), ${r.numClasses} classes${r.softmax ? ' (output softmax left out: gdp gives logits)' : ''}`,
      );
      say(o, `MACs ${fmt(r.macs)}, params ${fmt(r.params)}`);
      say(o, `wrote ${o.out} (arch 'graph')`);
    });

  program
    .command('eval')
    .description('top-1 / top-5 and loss on the test set of a dataset, optionally re-estimating BN statistics first')
    .requiredOption('--weights <file>', 'safetensors file (gdp or PyTorch; gated, masked or melted)')
    .addOption(archOption(false))
    .addOption(
      new Option('--data <type>', 'dataset (folder: DIR/train/<class>/*, DIR/val/<class>/*, sized as the model input)')
        .choices(['mnist', 'cifar10', 'cifar100', 'imagenet', 'folder'])
        .default('mnist'),
    )
    .option('--data-dir <dir>', 'dataset folder (CIFAR, ImageNet, folder)')
    .option('--batch-size <n>', 'images per forward pass', positiveInt('--batch-size'), 500)
    .option('--test-subset <n>', 'evaluate on N test images, every class in proportion (as data.test_subset)', positiveInt('--test-subset'))
    .option('--recalibrate-bn <batches>', 'first re-estimate BN running statistics over this many training batches', positiveInt('--recalibrate-bn'))
    .option('--seed <n>', 'seed of the training batches drawn for --recalibrate-bn', '0')
    .option('--json', 'print one JSON object')
    .addOption(backendOption())
    .action((o: EvalOptions) => evalCommand(o));

  program
    .command('bench')
    .description('inference latency per image (median of timed runs after a warm-up)')
    .option('--weights <file>', 'safetensors file (or --arch alone: random weights)')
    .addOption(archOption(false))
    .option('--batches <list>', 'batch sizes', '1,64')
    .option('--runs <n>', 'timed runs per batch size', positiveInt('--runs'), 5)
    .option('--json', 'print one JSON object')
    .addOption(backendOption())
    .action(async (o: Common & { weights?: string; arch?: string; batches: string; runs: number }) => {
      if (!o.weights && !o.arch) throw new GdpError('BAD_FLAG', 'bench needs --weights or --arch');
      const batches = parseShape(o.batches, '--batches');
      await startBackend(o);
      const m: Pick<LoadedModel, 'model' | 'arch' | 'inputShape'> = o.weights
        ? await load(o.weights, o.arch, o)
        : { model: buildModel(o.arch!), arch: o.arch!, inputShape: archSpec(o.arch!).inputShape };
      try {
        for (const b of batches) checkBatch(m, b, '--batches');
        const { macs } = modelCost(m.model, m.inputShape);
        const results = batches.map((b) => measureLatency(m.model, m.inputShape, b, { runs: o.runs }));
        if (o.json) {
          process.stdout.write(`${JSON.stringify({ arch: m.arch, backend: tf.getBackend(), macs, latency: results })}\n`);
          return;
        }
        say(o, `${m.arch}: MACs ${fmt(macs)} (${mega(macs)}) per image`);
        for (const r of results)
          say(
            o,
            `batch ${String(r.batch).padStart(3)}: ${r.perImageMs.toFixed(3)} ms/image (median ${r.medianMs.toFixed(1)} ms per batch over ${r.runsMs.length} runs)`,
          );
      } finally {
        m.model.dispose();
      }
    });

  program
    .command('report')
    .description("rebuild a run's report.html (plots and final table, self-contained) from its log folder")
    .requiredOption('--run <dir>', 'the run folder, logs/<task_name>')
    .option('--out <file>', 'where to write (default <dir>/report.html)')
    .action((o: { run: string; out?: string }) => {
      process.stdout.write(`report: ${writeReport(o.run, { out: o.out })}\n`);
    });

  return program;
}

/** Exit codes: 0 ok; a GdpError's or a rejected command line's status from the catalogue (2: bad input), printed with its code; 1 anything else. */
export async function main(argv: string[]): Promise<number> {
  try {
    return await runCommand(buildProgram(), argv);
  } catch (e) {
    process.stderr.write(`gdp-model: ${(e as Error).stack ?? String(e)}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
