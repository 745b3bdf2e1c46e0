import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { coord, smokeArgs, workerPids } from '../dist/cli_helpers.js';
import { noChromium, withChromium } from './browser.js';

const TOKEN = 'live-dashboard-test-token-0123456789';

/** Page-side conditions (the tests' TypeScript has no DOM types). */
const POINTS = `Number(document.querySelector('[data-chart="steps"]')?.getAttribute('data-points') ?? 0)`;
const stateOf = (id: string) => `(document.querySelector('#workers tr[data-id="${id}"] td.state')?.textContent ?? '')`;

/** Resolves with the first match of `re` in the output seen so far, as the output grows. */
function waitFor(re: RegExp): { feed: (out: string) => void; found: Promise<RegExpMatchArray> } {
  let resolve!: (m: RegExpMatchArray) => void;
  const found = new Promise<RegExpMatchArray>((r) => (resolve = r));
  return {
    feed: (out) => {
      const m = out.match(re);
      if (m) resolve(m);
    },
    found,
  };
}

test(
  'chromium, during a --local smoke run of 2 worker processes: the page shows both workers, its loss curve grows, a killed worker shows as lost',
  { skip: noChromium, timeout: 300_000 },
  async () => {
    const logs = await mkdtemp(join(tmpdir(), 'gdp-live-'));
    const url = waitFor(/gdp-coord: dashboard (\S+)/);
    const started = waitFor(/worker local0 joined[\s\S]*worker local1 joined|worker local1 joined[\s\S]*worker local0 joined/);
    let output = '';
    // Small batches and many of them: the run lasts long enough to watch it (about a step a second here). The
    // evaluation after the watching need not be long: 100 test images.
    const args = [...smokeArgs(logs), '--token', TOKEN, '--set', 'train.max_steps_per_epoch=60', '--set', 'data.batch_size=8', '--set', 'data.test_subset=100'];
    const run = coord(args, 280_000, (out) => {
      output = out;
      url.feed(out);
      started.feed(out);
    });
    try {
      const page = (await url.found)[1];
      assert.match(page, new RegExp(`\\?token=${TOKEN}$`), 'with a token, the printed URL carries it');
      // The coordinator's own listener keeps the dashboard's token rule.
      assert.equal((await fetch(page.replace(/\?token=.*/, ''))).status, 401);
      assert.equal((await fetch(page.replace(/\?token=.*/, '?token=wrong-token-wrong-token-wrong'))).status, 401);
      assert.equal((await fetch(page)).status, 200);
      await started.found;
      const [, pid1] = workerPids(output);
      await withChromium(async (context) => {
        const tab = await context.newPage();
        const errors: string[] = [];
        tab.on('pageerror', (e) => errors.push(e.message));
        await tab.goto(page);
        await tab.waitForFunction(`document.querySelectorAll('#workers tr[data-id]').length === 2`);
        await tab.waitForFunction(`${POINTS} >= 2`, undefined, { timeout: 120_000 });
        const before = (await tab.evaluate(POINTS)) as number;
        await tab.waitForFunction(`${POINTS} > ${before}`, undefined, { timeout: 120_000 });
        assert.match((await tab.textContent(`#workers tr[data-id="local0"] td.state`)) ?? '', /active/);
        process.kill(pid1, 'SIGKILL');
        await tab.waitForFunction(`/lost at step \\d+/.test(${stateOf('local1')})`, undefined, { timeout: 120_000 });
        assert.match((await tab.textContent(`#workers tr[data-id="local0"] td.state`)) ?? '', /active/);
        // Training goes on with the one left, and the page keeps drawing it.
        const after = (await tab.evaluate(POINTS)) as number;
        await tab.waitForFunction(`${POINTS} > ${after}`, undefined, { timeout: 120_000 });
        assert.deepEqual(errors, []);
      });
      const r = await run;
      assert.equal(r.code, 0, r.err + r.out.slice(-2000));
      assert.match(r.out, /worker local1 lost at step \d+/);
      const report = r.out.match(/^report: (\S+)$/m);
      assert.ok(report && existsSync(report[1]) && report[1] === join(logs, 'smoke', 'report.html'), 'the run ends by printing the path of its report');
    } finally {
      await run;
      await rm(logs, { recursive: true, force: true });
    }
  },
);

test('off loopback without a token, gdp-coord refuses to start (neither the workers nor the dashboard go unprotected)', async () => {
  const env = { ...process.env };
  delete env.GDP_TOKEN;
  const r = await coord(['--workers', '2', '--listen', '0.0.0.0:0'], 30_000, undefined, env);
  assert.notEqual(r.code, 0);
  assert.match(r.err, /BAD_FLAG.*token/);
});
