import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BrowserContext } from 'playwright-core';
import { CHROMIUM, launchChromium } from '../browser/chromium.js';

/** The reason to skip browser tests, or false. */
export const noChromium: string | false = existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (apt-get install -y chromium)`;

/** Runs `fn` with a headless Chromium (test/browser/chromium.ts launchChromium); closes it afterwards. */
export async function withChromium<T>(fn: (context: BrowserContext) => Promise<T>): Promise<T> {
  const work = await mkdtemp(join(tmpdir(), 'gdp-dash-browser-'));
  const context = await launchChromium(join(work, 'profile'));
  try {
    return await fn(context);
  } finally {
    await context.close();
    await rm(work, { recursive: true, force: true });
  }
}
