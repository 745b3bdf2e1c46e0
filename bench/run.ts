/**
 * `npm run bench [-- --out FILE.json] [--backend NAME] [--quick]`: prints one table and writes the same figures
 * as JSON.
 */
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { Command } from 'commander';
import { initBackend, type BackendChoice } from '../src/shared/backend.js';
import { trainThroughput } from './train_throughput.js';

const program = new Command()
  .name('npm run bench --')
  .option('--out <file>', 'also write the figures as JSON')
  .option('--backend <name>', 'auto|tensorflow|wasm|cpu', 'auto')
  .option('--quick', 'fewer timed steps (noisier figures)')
  .parse();
const opts = program.opts<{ out?: string; backend: BackendChoice; quick?: boolean }>();

const info = await initBackend(opts.backend);
const steps = opts.quick ? 2 : 5;
const rows: [string, string][] = [];
const result: Record<string, unknown> = {
  date: new Date().toISOString(),
  machine: { cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model, mem_gib: Math.round(os.totalmem() / 2 ** 30), node: process.version },
  backend: info.description,
};
console.log(`backend: ${info.description}; ${os.cpus().length} cores (${os.cpus()[0]?.model})`);

const train: Record<string, number> = {};
for (const [key, arch] of [
  ['mnist_resnet20', 'mnist.resnet20'],
  ['cifar_resnet56', 'cifar.resnet56'],
] as const) {
  const r = trainThroughput(arch, 64, steps);
  train[key] = Number(r.imgPerSec.toFixed(2));
  rows.push([`train ${arch} b64, 1 worker`, `${r.imgPerSec.toFixed(1)} img/s (${r.msPerStep.toFixed(0)} ms/step; tensors ${r.tensorsBefore} -> ${r.tensorsAfter})`]);
}
result.train_img_s = train;

const width = Math.max(...rows.map(([k]) => k.length));
console.log('');
for (const [k, v] of rows) console.log(`${k.padEnd(width)}  ${v}`);
if (opts.out) {
  writeFileSync(opts.out, JSON.stringify(result, null, 2) + '\n');
  console.log(`\nwrote ${opts.out}`);
}
