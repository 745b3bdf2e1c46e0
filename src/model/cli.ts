import { Command, Option } from 'commander';
import { backendOption, runCommand } from '../shared/cli_options.js';
import { GdpError } from '../shared/errors.js';
import { parseShape } from '../shared/io/raw_tensor.js';
import { archOption, kerasFile, positiveInt, positiveNumber } from './cli_common.js';
import type { BenchOptions, ExportOptions, FlopsOptions, ImportOptions, InfoOptions, MeltOptions, PredictOptions } from './commands.js';
import type { EvalOptions } from './eval_command.js';

// The commands' modules (TF.js, the wasm backend, h5wasm, zod schemas) take about a second of CPU to load: they are
// imported when a command runs, so --help and a flag error (the command line's checks below included) never pay it.
const commands = () => import('./commands.js');

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
    .action(async (o: InfoOptions) => (await commands()).info(o));

  program
    .command('flops')
    .description('MACs and parameters of an unpruned architecture')
    .addOption(archOption(true))
    .option('--num-class <n>', "number of classes (default: the architecture's)", positiveInt('--num-class'))
    .option('--width-mult <x>', 'channel multiplier (mobilenet_v2; default 1)', positiveNumber('--width-mult'))
    .option('--input-size <n>', 'input height and width (mobilenet_v2; default 224)', positiveInt('--input-size'))
    .option('--json', 'print one JSON object')
    .addOption(backendOption())
    .action(async (o: FlopsOptions) => (await commands()).flops(o));

  program
    .command('predict')
    .description('eval-mode logits for raw float32 little-endian NCHW images')
    .addOption(archOption(false))
    .requiredOption('--weights <file>', 'safetensors file')
    .requiredOption('--input <file>', 'raw float32 LE, NCHW')
    .requiredOption('--shape <N,C,H,W>', 'shape of --input')
    .requiredOption('--out <file>', 'raw float32 LE logits [N, classes]')
    .option('--batch <n>', 'images per forward pass', positiveInt('--batch'), 64)
    .option('--pixels', "--input holds pixels in [0, 1]: normalise them with the file's input normalisation (or --mean/--std)")
    .option('--mean <list>', "with --pixels: per-channel mean, comma-separated (overrides the file's)")
    .option('--std <list>', "with --pixels: per-channel std, comma-separated (overrides the file's)")
    .addOption(backendOption())
    .action(async (o: PredictOptions) => {
      const shape = parseShape(o.shape);
      if (shape.length !== 4) throw new GdpError('BAD_FLAG', `--shape must have 4 dimensions N,C,H,W, got '${o.shape}'`);
      await (await commands()).predict(o, shape);
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
    .action(async (o: MeltOptions) => (await commands()).meltFile(o));

  program
    .command('export')
    .description('write a TF.js layers model (model.json + weights.bin, NHWC input) for tf.loadLayersModel, or a Keras file')
    .requiredOption('--weights <file>', 'safetensors file')
    .addOption(archOption(false))
    .addOption(new Option('--format <format>', 'output format').choices(['tfjs']).default('tfjs'))
    .option('--out <dir>', 'output directory (TF.js)')
    .option(
      '--keras <file>',
      "an imported ('graph') model as a Keras file instead: OUT.keras (Keras 3) or OUT.h5 (legacy Keras 2); other models export to TF.js only",
      kerasFile,
    )
    .addOption(backendOption())
    .action(async (o: ExportOptions) => {
      if ((o.out === undefined) === (o.keras === undefined)) throw new GdpError('BAD_FLAG', 'export takes one of --out DIR (TF.js) and --keras FILE');
      await (await commands()).exportModel(o);
    });

  program
    .command('import')
    .description('read a TF.js layers model or a Keras file (Sequential or functional) into a gdp model file: same layer names, weights and outputs')
    .option('--tfjs <path>', 'the model.json of a TF.js layers model (or its folder)')
    .option('--keras <file>', 'a Keras 3 .keras file or a legacy Keras 2 .h5 file (whole model: config and weights)', kerasFile)
    .requiredOption('--out <file>', 'gdp safetensors; its metadata carries the graph, so --weights and model.weights take it')
    .option('--json', 'print one JSON object')
    .addOption(backendOption())
    .action(async (o: ImportOptions) => {
      if ((o.tfjs === undefined) === (o.keras === undefined)) throw new GdpError('BAD_FLAG', 'import takes one of --tfjs PATH and --keras FILE');
      await (await commands()).importModel(o);
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
    .option('--mean <list>', "per-channel mean of pixels in [0, 1], comma-separated (default: the file's, else the dataset's)")
    .option('--std <list>', "per-channel std of pixels in [0, 1], comma-separated (default: the file's, else the dataset's)")
    .option('--json', 'print one JSON object')
    .addOption(backendOption())
    .action(async (o: EvalOptions) => (await import('./eval_command.js')).evalCommand(o));

  program
    .command('bench')
    .description('inference latency per image (median of timed runs after a warm-up)')
    .option('--weights <file>', 'safetensors file (or --arch alone: random weights)')
    .addOption(archOption(false))
    .option('--batches <list>', 'batch sizes', '1,64')
    .option('--runs <n>', 'timed runs per batch size', positiveInt('--runs'), 5)
    .option('--json', 'print one JSON object')
    .addOption(backendOption())
    .action(async (o: BenchOptions) => {
      if (!o.weights && !o.arch) throw new GdpError('BAD_FLAG', 'bench needs --weights or --arch');
      const batches = parseShape(o.batches, '--batches');
      await (await commands()).bench(o, batches);
    });

  program
    .command('report')
    .description("rebuild a run's report.html (plots and final table, self-contained) from its log folder")
    .requiredOption('--run <dir>', 'the run folder, logs/<task_name>')
    .option('--out <file>', 'where to write (default <dir>/report.html)')
    .action(async (o: { run: string; out?: string }) => (await commands()).report(o));

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
