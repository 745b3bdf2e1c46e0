import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseSafetensors } from '../../src/shared/io/safetensors.js';
import { ROOT, SMALL_SMOKE, coord } from '../dist/cli_helpers.js';
import { gdpModel } from './gdp_model.js';

interface Info {
  arch: string;
  numClasses: number;
  gated: boolean;
  maskedChannels: number;
  macs: number;
  params: number;
  layers: { path: string; in: number; out: number }[];
}

test('the files a smoke run saves are gdp model files: pruned.safetensors loads with gdp-model info without a config', { timeout: 180000 }, async () => {
  const logDir = mkdtempSync(join(tmpdir(), 'gdp-pruned-file-'));
  try {
    // The smoke config cut further (as the resume tests cut it): every stage in seconds.
    const r = await coord(
      [
        '--workers',
        '2',
        '--in-process',
        '--backend',
        'wasm',
        '--config',
        join(ROOT, 'configs', 'smoke.json'),
        '--set',
        `base.log_dir=${logDir}`,
        ...SMALL_SMOKE,
      ],
      150000,
    );
    assert.equal(r.code, 0, r.out + r.err);
    const dir = join(logDir, 'smoke');
    const events = JSON.parse(readFileSync(join(dir, 'prune_log.json'), 'utf8')) as { type: string; macs?: number; params?: number }[];
    const melt = events.find((e) => e.type === 'melt')!;
    const file = join(dir, 'pruned.safetensors');
    const meta = parseSafetensors(readFileSync(file), file).metadata;
    assert.equal(meta.format, 'gdp');
    assert.equal(meta.stage, 'prune');
    assert.equal(meta.arch, 'mnist.resnet20');
    assert.equal(meta.num_class, '10');
    const widths = JSON.parse(meta.widths) as Record<string, [number, number]>;

    const info = await gdpModel('info', '--weights', file, '--json', '--backend', 'cpu');
    assert.equal(info.code, 0, info.stderr);
    const out = JSON.parse(info.stdout) as Info;
    assert.equal(out.arch, 'mnist.resnet20');
    assert.equal(out.numClasses, 10);
    assert.equal(out.gated, false, 'melted: no gates left');
    // The widths recorded are the layers gdp-model builds, and its cost is the melt's as the run logged it.
    assert.deepEqual(Object.fromEntries(out.layers.map((l) => [l.path, [l.in, l.out]])), widths);
    assert.equal(out.macs, melt.macs);
    assert.equal(out.params, melt.params);
    assert.ok(out.macs < 31_021_952, `pruned MACs ${out.macs} below the baseline's`);

    // The gated save point carries the same fields and loads as well, its masks intact.
    const saved = await gdpModel('info', '--weights', join(dir, 'gbn_90.safetensors'), '--json', '--backend', 'cpu');
    assert.equal(saved.code, 0, saved.stderr);
    const gated = JSON.parse(saved.stdout) as Info;
    assert.equal(gated.gated, true);
    assert.ok(gated.maskedChannels > 0);
    assert.equal(gated.macs, 31_021_952, 'a save point keeps the full widths');
  } finally {
    rmSync(logDir, { recursive: true, force: true });
  }
});
