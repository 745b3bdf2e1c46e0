/**
 * Ring all-reduce micro-benchmark (not run by tests):
 *   node dist/bench/ring.js [--workers 2,4] [--model resnet56,resnet50] [--reps 3] [--bucket-mib 16]
 *                           [--link-gbit G] [--emulate 1,10]
 * N rank processes (bench/ring_rank.ts) all-reduce synthetic gradients of ResNet-56 size (855,770 floats) and
 * ResNet-50 size (25,557,032 floats) over ws. On loopback it prints the time per all-reduce (and, with --link-gbit,
 * the bound for that link speed). With --emulate (root), the ranks run in network namespaces joined by veth pairs
 * rate-limited with tc tbf (bench/netns.ts), one pass per rate in Gbit/s, and each row has its bound:
 * 2 (N - 1) / N x M x 4 bytes / link rate (the ring's bytes per rank over one link: Patarasuk and Yuan, 2009).
 * Time per all-reduce: the slowest rank's median over the repetitions after the first (a warm-up). Each ring row
 * also gives the CPU seconds (user + system, from process.cpuUsage) a rank spent per all-reduce (the mean over ranks
 * of each rank's median), which the machine's other load moves far less than the time; the CPU floor, the time all
 * ranks' CPU takes on this machine's cores (N x CPU per rank / cores: with all ranks on one machine no all-reduce is
 * faster); and the 1-minute load average at the end.
 * `--topology ring,star` also times the star with as many synthetic workers (bench/star.ts), whose
 * bound on a link of `--link-gbit` is the coordinator's link: N gradients in, then N averages out, 2 N M x 4 bytes
 * (the broadcast starts once the sum is done, so the two directions do not overlap). With --emulate the star's coordinator gets a namespace (and a link) of its
 * own. `--json` ends with one line
 * `exchange_table: [...]` (the rows), which `npm run bench` reads.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { availableParallelism, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { ringBytesPerRank } from '../src/shared/collective/ring_schedule.js';
import { bucketElements } from '../src/shared/protocol/version.js';
import { installAbortHandlers, onAbort } from './cleanup.js';
import { emulatedLinks } from './netns.js';
import type { RingRankJob } from './ring_rank.js';
import { starAllReduceMs } from './star.js';

const STAR = fileURLToPath(new URL('./star.js', import.meta.url));

const MODELS: Record<string, number> = { resnet56: 855_770, resnet50: 25_557_032 };
const RANK = fileURLToPath(new URL('./ring_rank.js', import.meta.url));

const list = (s: string) =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
const program = new Command()
  .name('node dist/bench/ring.js')
  .option('--workers <list>', 'ring sizes', '2,4')
  .option('--model <list>', `gradient sizes: ${Object.keys(MODELS).join(', ')}`, 'resnet56,resnet50')
  .option('--reps <n>', 'all-reduces per measurement (the first is a warm-up)', '3')
  .option('--bucket-mib <mib>', 'largest chunk frame', '16')
  .option('--link-gbit <g>', 'loopback: also print the bound for a link of this speed')
  .option('--emulate <list>', 'rates in Gbit/s of emulated links (root: network namespaces, tc)')
  .option('--topology <list>', 'ring, star', 'ring')
  .option('--json', "end with one line 'exchange_table: [rows]'")
  .parse();
const opts = program.opts<{
  workers: string;
  model: string;
  reps: string;
  bucketMib: string;
  linkGbit?: string;
  emulate?: string;
  topology: string;
  json?: boolean;
}>();
const topologies = list(opts.topology);
for (const t of topologies) if (t !== 'ring' && t !== 'star') throw new Error(`--topology ${t}: ring or star`);
const workers = list(opts.workers).map(Number);
const models = list(opts.model);
for (const m of models) if (!MODELS[m]) throw new Error(`--model ${m}: one of ${Object.keys(MODELS).join(', ')}`);
const reps = Math.max(2, Number(opts.reps));
const bucketElems = bucketElements(Number(opts.bucketMib));
installAbortHandlers();

interface Row {
  topology: 'ring' | 'star';
  workers: number;
  model: string;
  link_gbit: number | null;
  ms: number;
  bound_ms: number | null;
  /** Ring: CPU seconds per rank per all-reduce, user and system. */
  cpu_user_s?: number;
  cpu_sys_s?: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Starts the ranks (inside namespaces when given), runs one measurement and stops them. */
async function measure(places: { ns?: string; host: string }[], elems: number): Promise<{ ms: number; user: number; sys: number }> {
  const token = randomBytes(16).toString('hex');
  const children: ChildProcess[] = places.map(({ ns, host }) => {
    const cmd = ns ? ['ip', 'netns', 'exec', ns, process.execPath] : [process.execPath];
    // The ranks get this process' node flags: `node --cpu-prof --cpu-prof-dir=D dist/bench/ring.js` profiles each rank.
    return spawn(cmd[0], [...cmd.slice(1), ...process.execArgv, RANK, host], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, GDP_TOKEN: token },
    });
  });
  const unregister = onAbort(() => children.forEach((c) => c.kill('SIGKILL')));
  try {
    const exited = Promise.race(children.map((c) => once(c, 'exit').then(([code]) => Promise.reject(new Error(`a rank exited early (${code})`)))));
    exited.catch(() => undefined);
    const urls = await Promise.race([Promise.all(children.map(async (c) => ((await once(c, 'message')) as [{ url: string }])[0].url)), exited]);
    const n = places.length;
    const answers = children.map((c) => once(c, 'message'));
    children.forEach((c, rank) => c.send({ spec: { ring: 1, rank, size: n, prev: urls[(rank + n - 1) % n] }, elems, reps, bucketElems } satisfies RingRankJob));
    const results = (await Promise.race([Promise.all(answers), exited])) as [{ ms?: number[]; user: number[]; sys: number[]; error?: string }][];
    const per = results.map(([r]) => {
      if (!r.ms) throw new Error(`a rank failed: ${r.error}`);
      return { ms: median(r.ms.slice(1)), user: median(r.user.slice(1)), sys: median(r.sys.slice(1)) };
    });
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    return { ms: Math.max(...per.map((p) => p.ms)), user: mean(per.map((p) => p.user)), sys: mean(per.map((p) => p.sys)) };
  } finally {
    for (const c of children) c.disconnect?.();
    await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? once(c, 'exit') : undefined)));
    unregister();
  }
}

const rows: Row[] = [];
/** The star's coordinator link: N gradients in, then N averages out (the broadcast starts once the sum is done). */
const starBound = (n: number, elems: number, gbit: number | null) => (gbit ? ((2 * n * elems * 4 * 8) / (gbit * 1e9)) * 1000 : null);
const bound = (n: number, elems: number, gbit: number | null) => (gbit ? ((ringBytesPerRank(elems, n) * 8) / (gbit * 1e9)) * 1000 : null);
function report(row: Row): void {
  rows.push(row);
  const b = row.bound_ms === null ? '' : `  bound ${row.bound_ms.toFixed(0)} ms (${(row.ms / row.bound_ms).toFixed(2)}x)`;
  const cpu =
    row.cpu_user_s === undefined
      ? ''
      : `  cpu/rank ${(row.cpu_user_s + row.cpu_sys_s!).toFixed(2)} s (user ${row.cpu_user_s.toFixed(2)} sys ${row.cpu_sys_s!.toFixed(2)}), ` +
        `cpu floor ${((row.workers * (row.cpu_user_s + row.cpu_sys_s!)) / availableParallelism()).toFixed(2)} s`;
  console.log(
    `${row.topology}  ${row.workers} workers  ${row.model.padEnd(8)}  ${row.link_gbit === null ? 'loopback' : `${row.link_gbit} Gbit/s`}  ${row.ms.toFixed(1)} ms${b}${cpu}  load ${loadavg()[0].toFixed(2)}`,
  );
}
const ringRow = (workers: number, model: string, gbit: number | null, m: { ms: number; user: number; sys: number }, boundGbit: number | null): Row => ({
  topology: 'ring',
  workers,
  model,
  link_gbit: gbit,
  ms: m.ms,
  bound_ms: bound(workers, MODELS[model], boundGbit),
  cpu_user_s: m.user,
  cpu_sys_s: m.sys,
});

if (opts.emulate) {
  for (const gbit of list(opts.emulate).map(Number)) {
    for (const n of workers) {
      // One more namespace for the star's coordinator (place 0); the ring uses places 1..n.
      const links = emulatedLinks(n + 1, gbit);
      try {
        for (const model of models) {
          if (topologies.includes('ring')) {
            report(ringRow(n, model, gbit, await measure(links.ranks.slice(1), MODELS[model]), gbit));
          }
          if (topologies.includes('star')) {
            const [c, ...w] = links.ranks;
            const args = [
              'netns',
              'exec',
              c.ns,
              process.execPath,
              STAR,
              String(MODELS[model]),
              opts.bucketMib,
              String(reps - 1),
              c.host,
              ...w.map((p) => p.ns),
            ];
            const out = await new Promise<string>((resolve, reject) => {
              const child = spawn('ip', args, { stdio: ['ignore', 'pipe', 'inherit'] });
              let text = '';
              child.stdout!.setEncoding('utf8').on('data', (s: string) => (text += s));
              child.once('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`star in namespaces exited ${code}: ${text}`))));
            });
            const ms = Number(/star_ms: ([\d.]+)/.exec(out)?.[1]);
            report({ topology: 'star', workers: n, model, link_gbit: gbit, ms, bound_ms: starBound(n, MODELS[model], gbit) });
          }
        }
      } finally {
        links.remove();
      }
    }
  }
} else {
  const gbit = opts.linkGbit ? Number(opts.linkGbit) : null;
  for (const n of workers) {
    for (const model of models) {
      if (topologies.includes('ring')) {
        const places = Array.from({ length: n }, () => ({ host: '127.0.0.1' }));
        report(ringRow(n, model, null, await measure(places, MODELS[model]), gbit));
      }
      if (topologies.includes('star')) {
        const ms = await starAllReduceMs(MODELS[model], n, { bucketMib: Number(opts.bucketMib), reps: reps - 1 });
        report({ topology: 'star', workers: n, model, link_gbit: null, ms, bound_ms: starBound(n, MODELS[model], gbit) });
      }
    }
  }
}
const round2 = (x: number | undefined) => (x === undefined ? undefined : Math.round(x * 100) / 100);
const table = rows.map((r) => ({
  ...r,
  ms: Math.round(r.ms),
  bound_ms: r.bound_ms === null ? null : Math.round(r.bound_ms),
  cpu_user_s: round2(r.cpu_user_s),
  cpu_sys_s: round2(r.cpu_sys_s),
}));
console.table(table);
if (opts.json) console.log(`exchange_table: ${JSON.stringify(table)}`);
