import { writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { exportTorchState } from '../shared/io/torch_state.js';
import { buildModel } from '../shared/models/registry.js';
import { renderPage } from './page.js';
import { RunHistory } from './run_history.js';
import { fileWidths, stateDictWidths, widthsEvent, type LayerWidth } from './widths.js';

/** The layer widths of architecture `arch` at full width (a fresh build; needs a TF.js backend initialised). */
export function archWidths(arch: string, numClasses: number): LayerWidth[] {
  const model = buildModel(arch, { numClasses });
  try {
    return stateDictWidths(exportTorchState(model));
  } finally {
    model.dispose();
  }
}

/**
 * `gdp-model info --html OUT`: one self-contained page with the width profile of a weights file, output channels
 * per conv/linear layer beside the architecture's full widths (`arch`, from the file's metadata or --arch; without
 * one, the file's own tensor widths). A gated file shows its alive (unmasked) channels.
 * @returns the path written. @throws GdpError as fileWidths, UNKNOWN_ARCH for an architecture gdp lacks.
 */
export function writeWidthPage(weights: string, out: string, arch: string | undefined, numClasses: number | undefined): string {
  const f = fileWidths(weights);
  const name = arch ?? f.metadata.arch;
  const classes = numClasses ?? (f.metadata.num_class !== undefined ? Number(f.metadata.num_class) : undefined);
  const baseline = name ? archWidths(name, classes ?? f.layers[f.layers.length - 1]?.out ?? 1) : f.layers;
  const melted = f.layers.some((l, i) => baseline[i]?.path === l.path && baseline[i].out !== l.out);
  const h = new RunHistory();
  h.apply({ type: 'run', t: 0, task: `${basename(weights)}${name ? ` (${name})` : ''}`, stages: [], workers: 0 });
  h.apply(widthsEvent(baseline, f.layers, f.gated ? 'masked' : melted ? 'melted' : 'baseline', 0));
  writeFileSync(out, renderPage({ mode: 'report', view: h.view(), title: `gdp: widths of ${basename(weights)}` }));
  return out;
}
