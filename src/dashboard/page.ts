import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { GdpError } from '../shared/errors.js';
import { PAGE_SCRIPT } from './page_script.js';
import type { RunView } from './run_history.js';

let uplot: { js: string; css: string } | undefined;

/**
 * uPlot's minified browser build and stylesheet, read once from node_modules (never a CDN: the page and the report
 * work offline). @throws GdpError FILE_NOT_FOUND when the package is missing.
 */
function uplotAssets(): { js: string; css: string } {
  if (uplot) return uplot;
  const require = createRequire(import.meta.url);
  try {
    const js = readFileSync(require.resolve('uplot/dist/uPlot.iife.min.js'), 'utf8');
    const css = readFileSync(require.resolve('uplot/dist/uPlot.min.css'), 'utf8');
    uplot = { js, css };
    return uplot;
  } catch (err) {
    throw new GdpError('FILE_NOT_FOUND', `cannot read the uPlot package from node_modules (npm ci installs it): ${(err as Error).message}`);
  }
}

/** JSON safe inside a <script> element: no `</script>`, no `<!--`, no U+2028/2029 line ends. */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

/** Text safe inside an HTML element or a double-quoted attribute. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const STYLE = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em 2em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .2em; } h2 { font-size: 1.1em; margin: 1.2em 0 .4em; }
#conn { font-size: .8em; padding: 1px 6px; border-radius: 3px; background: #ddd; } #conn.live { background: #cfc; } #conn.down { background: #fcc; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; } td, th { padding: 2px 10px; text-align: right; border-bottom: 1px solid #eee; }
td:first-child, th:first-child { text-align: left; } tr.lost td { color: #a00; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; } .chart { width: 580px; }
.chart h3 { font-size: .95em; margin: .3em 0; font-weight: 600; } .plot { min-height: 10px; }
#log { font: 12px monospace; max-height: 10em; overflow: auto; background: #f7f7f7; padding: .4em; white-space: pre; }
progress { width: 30em; } details { margin: .5em 0; }
`;

function chartBox(name: string, title: string): string {
  return `<div class="chart" data-chart="${name}" data-points="0" hidden><h3>${escapeHtml(title)}</h3><div class="plot"></div></div>`;
}

export interface PageOptions {
  /** 'live': the dashboard, which opens /events; 'report': self-contained, `view` embedded. */
  mode: 'live' | 'report';
  view?: RunView;
  title: string;
}

/**
 * One HTML document with everything inline (styles, uPlot, the page script, the data), so report.html opens from
 * disk with no network. @throws GdpError FILE_NOT_FOUND when uPlot is not installed.
 */
export function renderPage(o: PageOptions): string {
  const { js, css } = uplotAssets();
  const boot = o.mode === 'live' ? { live: true } : { live: false, view: o.view };
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>${escapeHtml(o.title)}</title>
<style>${css}</style><style>${STYLE}</style>
</head><body>
<h1>gdp: <span id="task"></span> <span id="conn">connecting</span></h1>
<div id="stages"></div>
<div id="resumed" hidden></div>
<div id="live-box"><div id="stage-box"${o.mode === 'live' ? '' : ' hidden'}><h2>Stage</h2><div id="stage"></div><progress id="stage-bar" max="1" value="0"></progress></div>
<h2>Workers</h2><table id="workers"></table>
<details><summary>joined / lost</summary><div id="log"></div></details></div>
<h2>Training</h2>
<div class="grid">${chartBox('steps', 'loss per step (mean, min, max of each bucket)')}${chartBox('step-acc', 'train top-1 per step')}${chartBox('lr', 'learning rate')}
${chartBox('epoch-loss', 'loss per epoch (train, test)')}${chartBox('epoch-acc', 'top-1 / top-5 per epoch')}</div>
<details><summary>epochs</summary><table id="epochs"></table></details>
<h2>Tick-Tock trajectory</h2>
<div class="grid">${chartBox('trajectory', 'test top-1 vs MACs ratio: one point per Tick; Tocks and save points marked')}${chartBox('widths', 'output channels per layer: baseline and now')}</div>
<details><summary>Ticks</summary><table id="ticks"></table></details>
<details><summary>layer widths</summary><table id="widths-table"></table></details>
<div id="final-box" hidden><h2>Baseline vs pruned</h2><table id="final"></table></div>
<script>${js}</script>
<script id="gdp-data" type="application/json">${scriptJson(boot)}</script>
<script>${PAGE_SCRIPT}</script>
</body></html>
`;
}
