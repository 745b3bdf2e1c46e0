import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BrowserContext } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
/** The reason to skip browser tests, or false. */
export const noChromium: string | false = existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (apt-get install -y chromium)`;

/** Runs `fn` with a headless Chromium (as test/browser/tfjs_browser.test.ts launches it); closes it afterwards. */
export async function withChromium<T>(fn: (context: BrowserContext) => Promise<T>): Promise<T> {
  const work = await mkdtemp(join(tmpdir(), 'gdp-dash-browser-'));
  const { chromium } = await import('playwright-core');
  const context = await chromium.launchPersistentContext(join(work, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  try {
    return await fn(context);
  } finally {
    await context.close();
    await rm(work, { recursive: true, force: true });
  }
}
