import { writeFile } from 'node:fs/promises';
import * as tf from '@tensorflow/tfjs-core';
import { GdpError } from '../shared/errors.js';
import { modelCost } from '../shared/graph/flops.js';
import { exportedInputMetadata, layerWidths, saveModelFile, type LoadedModel } from '../shared/io/model_file.js';
import { nchwToNhwc, readF32, writeF32 } from '../shared/io/raw_tensor.js';
import { exportTfjs } from '../shared/io/tfjs_export.js';
import { tfjsDirWriter } from '../shared/io/tfjs_files.js';
import { predictLogits } from '../shared/models/infer.js';
import { archSpec, buildModel, modelInputShape } from '../shared/models/registry.js';
import { effectiveCost } from '../shared/pruning/cost.js';
import { channelStructure } from '../shared/pruning/groups.js';
import { melt } from '../shared/pruning/melt.js';
import { BatchNorm2d } from '../shared/nn/layers.js';
import { measureLatency } from './bench.js';
import { describeResumePoint, resumePointInfo } from './resume_info.js';
import { checkIsModelFile, RESUME_FORMAT } from '../shared/io/run_file_kinds.js';
import { fmt, mega, say, type Common } from './cli_common.js';
import { importTfjsFile } from './import_tfjs.js';
import { chooseNormalisation, type NormFlags } from './input_norm.js';
import { describeNormalisation } from '../shared/data/transforms.js';
import { checkBatch, load, peekMetadata, peekModelMetadata, startBackend, withModel } from './run_common.js';
import { exportGraphTfjs } from '../shared/io/tfjs_graph_export.js';
import { exportGraphKeras } from '../shared/io/keras_export.js';
import { GRAPH_ARCH, GraphModel } from '../shared/models/graph_model.js';
import { writeReport } from '../dashboard/report.js';
import { writeWidthPage } from '../dashboard/width_page.js';

/**
 * What gdp-model's commands do once their flags have parsed (cli.ts imports this module then: it loads TF.js and the
 * model code). One function per command, taking the command's options; eval has its own file, eval_command.ts.
 */

/** Channels whose GBN mask is 0: pruned in place, still present until melting. */
function maskedChannels(m: LoadedModel): number {
  let n = 0;
  for (const [, mod] of m.model.namedModules()) {
    if (mod instanceof BatchNorm2d && mod.mask) n += (mod.mask.value.dataSync() as Float32Array).filter((v) => v === 0).length;
  }
  return n;
}

export type InfoOptions = Common & { weights: string; arch?: string; html?: string };
export type FlopsOptions = Common & { arch: string; numClass?: number; widthMult?: number; inputSize?: number };
export type PredictOptions = Common &
  NormFlags & { arch?: string; weights: string; input: string; shape: string; out: string; batch: number; pixels?: boolean };
export type MeltOptions = Common & { arch?: string; weights: string; out: string; record?: string };
export type ExportOptions = Common & { weights: string; arch?: string; out?: string; keras?: string };
export type ImportOptions = Common & { tfjs?: string; keras?: string; out: string };
export type BenchOptions = Common & { weights?: string; arch?: string; batches: string; runs: number };

/**
 * `gdp-model info`: weights file: layers, widths, MACs, parameters; for a gated checkpoint, its masked channels and the
 * MACs and parameters its melted form has (`effectiveCost`); with --html, the width page. A resume point is described
 * instead (resume_info.ts: its run, where it stands, the run's model files), from its header, without a backend.
 * Throws NOT_A_MODEL for --html with a resume point, or a momentum file; BAD_RESUME for a resume point's malformed
 * metadata; what withModel throws.
 */
export async function info(o: InfoOptions): Promise<void> {
  const meta = peekMetadata(o.weights);
  if (meta?.format === RESUME_FORMAT) {
    // The width page draws a model's layers, which a resume point does not name.
    if (o.html) checkIsModelFile(meta, o.weights);
    describeResumePoint(o, resumePointInfo(o.weights, meta));
    return;
  }
  await withModel(o, async (m) => {
    if (o.html) say(o, `width profile: ${writeWidthPage(o.weights, o.html, m.arch, m.numClasses)}`);
    const cost = modelCost(m.model, m.inputShape);
    const widths = layerWidths(m.model);
    const layers = cost.layers.map((l) => ({ path: l.path, kind: l.kind, in: widths[l.path][0], out: widths[l.path][1], macs: l.macs }));
    const masked = m.gated ? maskedChannels(m) : 0;
    // A gated checkpoint's masks already decide the network melting gives: its cost, without melting.
    const melted = m.gated ? effectiveCost(m.model, channelStructure(m.model, m.inputShape)) : undefined;
    if (o.json) {
      const out = {
        arch: m.arch,
        numClasses: m.numClasses,
        inputShape: m.inputShape,
        gated: m.gated,
        ...(m.norm ? { normalisation: { mean: m.norm.mean, std: m.norm.std } } : {}),
        maskedChannels: masked,
        macs: cost.macs,
        params: cost.params,
        ...(melted ? { melted: { macs: melted.macs, params: melted.params } } : {}),
        layers,
      };
      process.stdout.write(`${JSON.stringify(out)}\n`);
      return;
    }
    const w = Math.max(...layers.map((l) => l.path.length), 5);
    say(o, `${'layer'.padEnd(w)}  kind    in    out  MACs`);
    for (const l of layers) say(o, `${l.path.padEnd(w)}  ${l.kind.padEnd(6)} ${String(l.in).padStart(4)}  ${String(l.out).padStart(5)}  ${fmt(l.macs)}`);
    say(o, `MACs ${fmt(cost.macs)} (${mega(cost.macs)})  params ${fmt(cost.params)} (${mega(cost.params)})`);
    if (melted) {
      say(o, `masked channels (GBN mask 0, removed by melting): ${masked}`);
      const pct = (a: number, b: number) => `${((100 * a) / b).toFixed(1)}%`;
      say(
        o,
        `melted: MACs ${fmt(melted.macs)} (${pct(melted.macs, cost.macs)})  params ${fmt(melted.params)} (${pct(melted.params, cost.params)}): \`gdp-model melt\` gives that network`,
      );
    }
    say(o, m.norm ? `input normalisation (pixel in [0, 1] - mean) / std: ${describeNormalisation(m.norm)}` : 'input normalisation: not recorded');
  });
}

/** `gdp-model flops`: MACs and parameters of an unpruned architecture. */
export async function flops(o: FlopsOptions): Promise<void> {
  const spec = archSpec(o.arch);
  const opts = { numClasses: o.numClass ?? spec.defaultClasses, widthMult: o.widthMult, inputSize: o.inputSize };
  const inputShape = modelInputShape(o.arch, opts);
  await startBackend(o);
  const numClasses = opts.numClasses;
  const model = buildModel(o.arch, opts);
  try {
    const { macs, params } = modelCost(model, inputShape);
    if (o.json) process.stdout.write(`${JSON.stringify({ arch: o.arch, numClasses, inputShape, macs, params })}\n`);
    else say(o, `${o.arch} (${numClasses} classes, input ${inputShape.join('x')}): MACs ${fmt(macs)} (${mega(macs)})  params ${fmt(params)} (${mega(params)})`);
  } finally {
    model.dispose();
  }
}

/**
 * `gdp-model predict`: eval-mode logits of raw NCHW float32 images; `shape` is --shape parsed, N,C,H,W. The input is
 * fed as given (already normalised), or with --pixels taken as pixels in [0, 1] and normalised with --mean/--std or
 * the file's normalisation. Throws BAD_FLAG for a --shape the model does not take, --mean/--std without --pixels,
 * and --pixels without a normalisation; chooseNormalisation's errors.
 */
export async function predict(o: PredictOptions, shape: number[]): Promise<void> {
  await withModel(o, async (m) => {
    const [n, c, h, w] = shape;
    const [ih, iw, ic] = m.inputShape;
    if (c !== ic || h !== ih || w !== iw) {
      throw new GdpError('BAD_FLAG', `--shape ${o.shape} does not fit ${m.arch}, which takes N,${ic},${ih},${iw}`);
    }
    if (!o.pixels && (o.mean !== undefined || o.std !== undefined))
      throw new GdpError('BAD_FLAG', '--mean/--std normalise pixels: add --pixels (without it --input is fed as already normalised)');
    const chosen = chooseNormalisation(o, m, o.weights);
    if (o.pixels && !chosen.norm) throw new GdpError('BAD_FLAG', `--pixels: ${chosen.line}: pass --mean and --std`);
    if (o.pixels) say(o, chosen.line);
    else if (m.norm) say(o, `--input fed as given; the model expects (pixel - mean) / std with ${describeNormalisation(m.norm)} (--pixels applies it)`);
    checkBatch(m, Math.min(o.batch, n), '--batch');
    const x = nchwToNhwc(await readF32(o.input, shape), shape);
    if (o.pixels) normaliseNhwc(x, chosen.norm!);
    const logits = predictLogits(m.model, x, [n, h, w, c], o.batch);
    await writeF32(o.out, logits);
    say(o, `wrote ${n}x${m.numClasses} logits to ${o.out}`);
  });
}

/** Normalises NHWC pixels in [0, 1] in place: (x - mean[c]) / std[c]. */
function normaliseNhwc(x: Float32Array, norm: { mean: readonly number[]; std: readonly number[] }): void {
  const c = norm.mean.length;
  for (let i = 0; i < x.length; i++) x[i] = (x[i] - norm.mean[i % c]) / norm.std[i % c];
}

/** `gdp-model melt`: folds the GBN gates of a gated checkpoint and cuts its masked channels. */
export async function meltFile(o: MeltOptions): Promise<void> {
  await withModel(o, async (m) => {
    if (!m.gated) throw new GdpError('NOT_GATED', `${o.weights}: no BatchNorm is gated (no '<name>.g' / '<name>.bn_mask' tensors): nothing to melt`);
    const before = modelCost(m.model, m.inputShape);
    const record = melt(m.model, m.inputShape);
    const after = modelCost(m.model, m.inputShape);
    const inputSize = m.metadata.input_size !== undefined ? m.inputShape[0] : undefined;
    await saveModelFile(o.out, m.model, { arch: m.arch, numClasses: m.numClasses, inputSize, norm: m.norm });
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
  });
}

/**
 * Throws NOT_A_MODEL (peekModelMetadata), then BAD_FLAG, before anything loads, when --keras is asked of a model that is not an imported ('graph') one (by
 * the file's `arch`, else --arch): gdp writes Keras files of imported models only, whose layers came from Keras or
 * TF.js; the built-in architectures export to TF.js (--out). A header that cannot be read is left for loading to report.
 */
function checkKerasExportable(o: ExportOptions): void {
  const meta = peekModelMetadata(o.weights);
  if (meta === undefined) return;
  const arch = meta.arch ?? o.arch;
  if (arch === GRAPH_ARCH) return;
  const what = arch === undefined ? 'records no arch (a plain PyTorch state dict)' : `is a ${arch} model`;
  throw new GdpError(
    'BAD_FLAG',
    `--keras writes imported ('graph') models only (gdp-model import, model.name "graph"); ${o.weights} ${what}: export it to TF.js with --out DIR`,
  );
}

/**
 * `gdp-model export` (one of --out and --keras, checked by the command line, as --keras' suffix): a TF.js layers
 * model, or a Keras file of an imported model. Throws BAD_FLAG for --keras with another model before anything loads
 * (checkKerasExportable), UNSUPPORTED_EXPORT for a layer the format cannot express, and what withModel throws.
 */
export async function exportModel(o: ExportOptions): Promise<void> {
  if (o.keras !== undefined) checkKerasExportable(o);
  await withModel(o, async (m) => {
    const note = (line: string) => say(o, `note: ${line}`);
    if (o.keras !== undefined) {
      if (!(m.model instanceof GraphModel))
        throw new GdpError('UNSUPPORTED_EXPORT', `${o.weights}: --keras exports imported ('graph') models; ${m.arch} exports to TF.js with --out`);
      const r = await exportGraphKeras(m.model, o.keras, { log: note, norm: m.norm });
      say(o, `wrote ${o.keras} (${fmt(r.bytes)} bytes); input NHWC [N,${m.inputShape.join(',')}]`);
      if (m.norm) say(o, `input: (pixel in [0, 1] - mean) / std per channel, ${describeNormalisation(m.norm)} (${r.inputAt})`);
      else note(`${o.weights} records no input normalisation: ${o.keras} carries none`);
      return;
    }
    const out = o.out!;
    // An imported model goes back to its own topology (names, classes, fused activations); others are rebuilt.
    // The input preprocessing travels in model.json's userDefinedMetadata, which tf.loadLayersModel keeps.
    const meta = m.norm ? { gdp: exportedInputMetadata(m.norm) } : undefined;
    const writer = tfjsDirWriter(out, meta);
    const r = m.model instanceof GraphModel ? await exportGraphTfjs(m.model, writer, note) : await exportTfjs(m.model, m.inputShape, writer);
    say(o, `wrote ${out}/model.json and weights.bin (${fmt(r.modelArtifactsInfo.weightDataBytes ?? 0)} bytes); input NHWC [N,${m.inputShape.join(',')}]`);
    if (m.norm) say(o, `input: (pixel in [0, 1] - mean) / std per channel, ${describeNormalisation(m.norm)} (model.json userDefinedMetadata.gdp.input)`);
    else note(`${o.weights} records no input normalisation: model.json carries none`);
  });
}

/** `gdp-model import` (one of --tfjs and --keras, checked by the command line, as --keras' suffix): a TF.js layers model or a Keras file into a gdp model file. */
export async function importModel(o: ImportOptions): Promise<void> {
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
  say(
    o,
    r.normalisation ? `input normalisation (pixel in [0, 1] - mean) / std: ${describeNormalisation(r.normalisation)}` : 'input normalisation: not recorded',
  );
  say(o, `wrote ${o.out} (arch 'graph')`);
}

/** `gdp-model bench`: inference latency per image at each of `batches` (--batches parsed); --weights or --arch given. */
export async function bench(o: BenchOptions, batches: number[]): Promise<void> {
  if (o.weights) peekModelMetadata(o.weights);
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
}

/** `gdp-model report`: rebuilds a run's report.html from its log folder. */
export function report(o: { run: string; out?: string }): void {
  process.stdout.write(`report: ${writeReport(o.run, { out: o.out })}\n`);
}
