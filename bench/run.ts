/**
 * `npm run bench [-- --out FILE.json] [--backend NAME] [--quick] [--only SECTIONS]`: prints one table and writes
 * the same figures as JSON. Sections: one replica's training throughput, beside PyTorch's on one thread when a
 * Python with torch is installed (`train`); a mobilenet_v2 step and its
 * depthwise share (`mobilenet`); local mode with 1 and 2 worker processes (`local`); raw ws and protocol
 * gradient-exchange throughput (`comm`); star against ring all-reduce with N synthetic workers (`exchange`); latency
 * of the paper's ResNet-56 before and after pruning + melting (`latency`). A section that fails prints its error and stores null; the exit
 * code is then 1.
 */
import { backendOption } from '../src/shared/cli_options.js';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import os from 'node:os';
import { Command, Option } from 'commander';
import { initBackend, type BackendChoice } from '../src/shared/backend.js';
import { installAbortHandlers } from './cleanup.js';
import { gradExchange, rawWsThroughput } from './comm.js';
import { localScaling, type LocalScaling } from './local_scaling.js';
import { meltedLatency } from './melted_latency.js';
import { mobileNetStep } from './mobilenet_step.js';
import { findTorchPython, pytorchTrain } from './pytorch_reference.js';
import { trainThroughput, type TrainThroughput } from './train_throughput.js';

/** torchvision ResNet-50 (1000 classes): 25,557,032 parameters, i.e. one full gradient. */
const RESNET50_PARAMS = 25_557_032;
const MIB = 2 ** 20;
const SECTIONS = ['train', 'mobilenet', 'local', 'comm', 'exchange', 'latency'] as const;
type Section = (typeof SECTIONS)[number];

const program = new Command()
  .name('npm run bench --')
  .option('--out <file>', 'also write the figures as JSON')
  .addOption(backendOption())
  .option('--quick', 'fewer timed steps and bytes (noisier figures; under ~3 minutes on 2 cores)')
  .addOption(new Option('--only <sections...>', 'run only these sections').choices(SECTIONS))
  .parse();
const opts = program.opts<{ out?: string; backend: BackendChoice; quick?: boolean; only?: Section[] }>();
const quick = !!opts.quick;
const runs = (s: Section) => !opts.only || opts.only.includes(s);

installAbortHandlers();
const info = await initBackend(opts.backend);
const rows: [string, string][] = [];
const result: Record<string, unknown> = {
  date: new Date().toISOString(),
  quick,
  machine: { cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model, mem_gib: Math.round(os.totalmem() / 2 ** 30), node: process.version },
  backend: info.description,
};
console.log(`backend: ${info.description}; ${os.cpus().length} cores (${os.cpus()[0]?.model})${quick ? '; quick' : ''}`);
let failed = false;

const round = (x: number, digits = 2) => Number(x.toFixed(digits));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** Runs one section (unless --only leaves it out); on failure prints a row naming it, and its keys stay null. */
async function section(id: Section, name: string, keys: string[], fn: () => Promise<void> | void): Promise<void> {
  if (!runs(id)) return;
  const t0 = performance.now();
  try {
    await fn();
  } catch (err) {
    failed = true;
    for (const k of keys) result[k] ??= null;
    rows.push([`${name}: FAILED`, (err as Error).message]);
  }
  process.stderr.write(`  ${name}: ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
}

// --- one replica, no communication ---
const train: Record<string, TrainThroughput> = {};
await section('train', 'train throughput', ['train_img_s', 'train_vs_pytorch'], async () => {
  const out: Record<string, number> = {};
  const vsPytorch: Record<string, number | null> = { mnist_resnet20: null, cifar_resnet56: null };
  const torch = await findTorchPython();
  for (const [key, arch] of [
    ['mnist_resnet20', 'mnist.resnet20'],
    ['cifar_resnet56', 'cifar.resnet56'],
  ] as const) {
    const steps = quick ? 2 : 5;
    const r = trainThroughput(arch, 64, steps);
    train[key] = r;
    out[key] = round(r.imgPerSec);
    rows.push([
      `train ${arch} b64, 1 replica`,
      `${r.imgPerSec.toFixed(1)} img/s (${r.msPerStep.toFixed(0)} ms/step, cpu ${r.cpuMsPerStep.toFixed(0)} ms; tensors ${r.tensorsBefore} -> ${r.tensorsAfter})`,
    ]);
    if (torch.python == null) continue;
    let p;
    try {
      p = await pytorchTrain(torch.python, arch, 64, steps);
    } catch (err) {
      // The reference failing leaves gdp's own figures standing; the ratio stays null.
      rows.push([`  PyTorch, same net: FAILED`, (err as Error).message.split('\n')[0]]);
      continue;
    }
    // Cpu time on both sides: both run on one thread, and cpu time is what other processes on the cores disturb least.
    vsPytorch[key] = round(p.cpu_ms_per_step / r.cpuMsPerStep, 3);
    rows.push([
      `  PyTorch ${p.torch}, ${p.threads} thread, same net`,
      `${p.img_s.toFixed(1)} img/s (${p.ms_per_step.toFixed(0)} ms/step, cpu ${p.cpu_ms_per_step.toFixed(0)} ms); gdp / PyTorch (cpu time) ${vsPytorch[key]}x`,
    ]);
  }
  if (torch.python == null) rows.push(['train vs PyTorch', `skipped: ${torch.reason}`]);
  result.train_img_s = out;
  result.train_vs_pytorch = vsPytorch;
});

// --- local mode: real coordinator, real gdp-worker processes over ws ---
// --- MobileNetV2 (width 0.35, 96x96, batch 32): depthwise convolutions and their wasm gradient kernels ---
await section('mobilenet', 'mobilenet_v2 step', ['train_img_s_mobilenet_v2', 'depthwise_share_mobilenet_v2'], async () => {
  const r = await mobileNetStep(32, quick ? 2 : 5);
  result.train_img_s_mobilenet_v2 = round(r.imgPerSec);
  result.depthwise_share_mobilenet_v2 = round(r.depthwiseShare, 3);
  rows.push([
    'train mobilenet_v2 w0.35 96x96 b32, 1 replica',
    `${r.imgPerSec.toFixed(1)} img/s (${r.msPerStep.toFixed(0)} ms/step; depthwise kernels ${(100 * r.depthwiseShare).toFixed(1)}% of a profiled step's kernel time)`,
  ]);
});

await section('local', 'local mode', ['local_img_s_1w', 'local_img_s_2w', 'scaling_efficiency', 'local_step_ms'], async () => {
  const runs: LocalScaling[] = [];
  for (const n of [1, 2]) {
    // Warm-up steps leave the first JIT compilations and GC sizing out of the timed ones: in 2 workers they take
    // cores the other worker computes on, and a training run spends nearly all its steps past them.
    const r = await localScaling(n, info.name, { batch: 64, steps: quick ? 3 : 10, warmup: quick ? 3 : 4 });
    runs.push(r);
    const cpu = r.cpuMsPerStep;
    rows.push([
      `local mnist.resnet20 b64, ${n} worker${n > 1 ? 's' : ''}`,
      `${r.imgPerSec.toFixed(1)} img/s (${r.msPerStep.toFixed(0)} ms/step: slowest worker round trip ${r.workerRoundTripMs.toFixed(0)} ms, coordinator ${r.coordinatorMs.toFixed(0)} ms; ${r.steps} steps)` +
        (cpu ? `; CPU ms/step: coordinator ${cpu.coordinator.toFixed(0)}, workers ${cpu.workers.map((w) => w.toFixed(0)).join(' + ')}` : ''),
    ]);
  }
  // The cluster reports each worker's round trip (compute + gradient upload) but not the split; the protocol
  // exchange of this model's gradient, measured alone, gives the communication part of a step.
  const exchange = await gradExchange(train.mnist_resnet20?.gradElems ?? 272_186, { bucketMib: 16, rounds: quick ? 5 : 20, warmup: 1 });
  rows.push([
    `  of which communication (resnet20 grad)`,
    `~${exchange.ms.toFixed(0)} ms per step (protocol exchange of ${((exchange.elems * 4) / 1e6).toFixed(2)} MB up and down, measured alone)`,
  ]);
  const [one, two] = runs;
  const efficiency = two.imgPerSec / (2 * one.imgPerSec);
  result.local_img_s_1w = round(one.imgPerSec);
  result.local_img_s_2w = round(two.imgPerSec);
  result.scaling_efficiency = round(efficiency, 3);
  result.local_step_ms = Object.fromEntries(
    runs.map((r) => [
      `${r.workers}w`,
      {
        step: round(r.msPerStep, 1),
        worker_round_trip: round(r.workerRoundTripMs, 1),
        coordinator: round(r.coordinatorMs, 1),
        communication_estimate: round(exchange.ms, 1),
        compute_estimate: round(r.workerRoundTripMs - exchange.ms, 1),
        cpu: r.cpuMsPerStep && { coordinator: round(r.cpuMsPerStep.coordinator, 1), workers: r.cpuMsPerStep.workers.map((w) => round(w, 1)) },
      },
    ]),
  );
  rows.push(['scaling efficiency (2w / 2x 1w)', efficiency.toFixed(3)]);
});

// --- communication: raw ws ceiling, then gradients through the real protocol ---
await section(
  'comm',
  'communication',
  ['raw_ws_mb_s', 'raw_ws_down_mb_s', 'grad_exchange_mb_s', 'grad_exchange_ms', 'grad_exchange_fp16', 'comm_share_resnet56', 'grad_exchange_vs_raw'],
  async () => {
    const total = (quick ? 256 : 1024) * MIB;
    for (const direction of ['up', 'down'] as const) {
      const raw = await rawWsThroughput(direction, total, 16 * MIB);
      // The key the issue names is the upload direction: the one every worker's gradient takes (gdp's client socket options: zero mask).
      result[direction === 'up' ? 'raw_ws_mb_s' : 'raw_ws_down_mb_s'] = round(raw.mbPerSec, 1);
      const what = direction === 'up' ? 'worker -> coordinator' : 'coordinator -> worker';
      rows.push([
        `raw ws 127.0.0.1, 16 MiB frames, ${direction}`,
        `${raw.mbPerSec.toFixed(1)} MB/s ${what} (${total / MIB} MiB in ${(raw.ms / 1000).toFixed(2)} s)`,
      ]);
    }
    const mbs: Record<string, number> = {};
    const ms: Record<string, number> = {};
    const resnet56Elems = train.cifar_resnet56?.gradElems ?? 855_770;
    for (const [key, elems, rounds] of [
      ['cifar_resnet56', resnet56Elems, quick ? 5 : 20],
      ['resnet50', RESNET50_PARAMS, quick ? 1 : 3],
    ] as const) {
      const r = await gradExchange(elems, { bucketMib: 16, rounds, warmup: 1 });
      mbs[key] = round(r.mbPerSec, 1);
      ms[key] = round(r.ms, 1);
      rows.push([
        `gradient exchange ${key} (${((elems * 4) / 1e6).toFixed(1)} MB)`,
        `${r.mbPerSec.toFixed(1)} MB/s up+down (${r.ms.toFixed(0)} ms per exchange; ${rounds} rounds)`,
      ]);
    }
    result.grad_exchange_mb_s = mbs;
    result.grad_exchange_ms = ms;
    // dist.grad_dtype float16: workers upload half the bytes (the averaged gradient still comes back as float32).
    const half = await gradExchange(resnet56Elems, { bucketMib: 16, rounds: quick ? 5 : 20, warmup: 1, dtype: 'float16' });
    result.grad_exchange_fp16 = { cifar_resnet56_ms: round(half.ms, 1), cifar_resnet56_mb_s: round(half.mbPerSec, 1) };
    rows.push([
      'gradient exchange cifar_resnet56, float16 upload',
      `${half.mbPerSec.toFixed(1)} MB/s up+down as float32 (${half.ms.toFixed(0)} ms per exchange vs ${ms.cifar_resnet56.toFixed(0)} ms float32)`,
    ]);
    // The exchange against raw ws moving the same bytes (each of 2 workers' gradient up, the average down to each),
    // interleaved round by round in this run so that the load of the machine weighs on both alike; medians.
    const vsRaw: Record<string, number> = {};
    for (const [key, elems, reps] of [
      ['cifar_resnet56', resnet56Elems, quick ? 3 : 5],
      ['resnet50', RESNET50_PARAMS, 3],
    ] as const) {
      const raws: number[] = [];
      const exchanges: number[] = [];
      for (let i = 0; i < reps; i++) {
        const up = await rawWsThroughput('up', elems * 4, 16 * MIB, 2);
        const down = await rawWsThroughput('down', elems * 4, 16 * MIB, 2);
        raws.push(up.ms + down.ms);
        exchanges.push((await gradExchange(elems, { bucketMib: 16, rounds: key === 'resnet50' ? 1 : 5, warmup: 1, workers: 2 })).ms);
      }
      const raw = median(raws);
      const exchange = median(exchanges);
      vsRaw[key] = round(exchange / raw, 3);
      rows.push([
        `gradient exchange ${key}, 2 workers vs raw ws`,
        `${(exchange / raw).toFixed(2)}x (${exchange.toFixed(0)} ms vs ${raw.toFixed(0)} ms raw up + down; medians of ${reps}: ${exchanges.map((x) => x.toFixed(0)).join('/')} vs ${raws.map((x) => x.toFixed(0)).join('/')})`,
      ]);
    }
    result.grad_exchange_vs_raw = vsRaw;
    const step = train.cifar_resnet56?.msPerStep;
    result.comm_share_resnet56 = step ? round(ms.cifar_resnet56 / step, 4) : null;
    rows.push([
      'comm share cifar.resnet56 b64',
      step
        ? `${(ms.cifar_resnet56 / step).toFixed(4)} (exchange ${ms.cifar_resnet56.toFixed(0)} ms / train step ${step.toFixed(0)} ms)`
        : 'no train step figure',
    ]);
  },
);

// --- star against ring: one all-reduce of synthetic gradients (no compute) with N worker processes, loopback ---
await section('exchange', 'exchange table', ['exchange_table'], async () => {
  const script = fileURLToPath(new URL('./ring.js', import.meta.url));
  const args = [
    script,
    '--topology',
    'ring,star',
    '--workers',
    quick ? '2,4' : '2,4,8',
    '--model',
    quick ? 'resnet56' : 'resnet56,resnet50',
    '--reps',
    quick ? '3' : '5',
    '--json',
  ];
  const { stdout } = await promisify(execFile)(process.execPath, args, { maxBuffer: 1 << 24 });
  const line = stdout.split('\n').find((l) => l.startsWith('exchange_table: '));
  if (!line) throw new Error(`bench/ring.js printed no exchange table:\n${stdout}`);
  const table = JSON.parse(line.slice('exchange_table: '.length)) as { topology: string; workers: number; model: string; ms: number }[];
  result.exchange_table = table;
  for (const r of table) rows.push([`all-reduce ${r.topology} ${r.workers} workers ${r.model} (loopback)`, `${r.ms} ms`]);
});

// --- inference: the paper's ResNet-56, baseline vs 70%-FLOPs-pruned and melted ---
await section('latency', 'melted latency', ['melted_speedup_resnet56_b64', 'latency_ms', 'melted_macs_ratio'], () => {
  const batches = [1, 64];
  const r = meltedLatency(batches, (b) => (b === 1 ? (quick ? 5 : 20) : quick ? 2 : 5));
  if (!r) {
    result.melted_speedup_resnet56_b64 = null;
    result.latency_ms = null;
    result.melted_macs_ratio = null;
    rows.push(['ResNet-56 melted latency', 'fixtures not found']);
    return;
  }
  const ratio = r.melted.macs / r.baseline.macs;
  rows.push([
    'ResNet-56 MACs baseline -> melted',
    `${(r.baseline.macs / 1e6).toFixed(1)} M -> ${(r.melted.macs / 1e6).toFixed(1)} M (${(100 * ratio).toFixed(1)}%; params ${r.baseline.params} -> ${r.melted.params}; melted vs PyTorch max |dlogit| ${r.meltMaxDiff.toExponential(1)})`,
  ]);
  for (const b of batches) {
    rows.push([
      `ResNet-56 eval b${b}: baseline / melted`,
      `${r.baseline.ms[b].toFixed(1)} ms / ${r.melted.ms[b].toFixed(1)} ms (x${(r.baseline.ms[b] / r.melted.ms[b]).toFixed(2)})`,
    ]);
  }
  result.latency_ms = {
    baseline: Object.fromEntries(batches.map((b) => [`b${b}`, round(r.baseline.ms[b], 2)])),
    melted: Object.fromEntries(batches.map((b) => [`b${b}`, round(r.melted.ms[b], 2)])),
  };
  result.melted_macs_ratio = round(ratio, 4);
  result.melted_speedup_resnet56_b64 = round(r.baseline.ms[64] / r.melted.ms[64], 3);
});

const width = Math.max(...rows.map(([k]) => k.length));
console.log('');
for (const [k, v] of rows) console.log(`${k.padEnd(width)}  ${v}`);
if (opts.out) {
  writeFileSync(opts.out, JSON.stringify(result, null, 2) + '\n');
  console.log(`\nwrote ${opts.out}`);
}
process.exitCode = failed ? 1 : 0;
