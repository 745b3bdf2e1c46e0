import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ERROR_CODES, GdpError, codeFromRemote, isErrorCode } from '../../src/shared/errors.js';

const root = join(import.meta.dirname, '..', '..', '..');

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : [];
  });
}

test("the README's error table lists the catalogue, entry for entry", () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const rows = [...readme.matchAll(/^\| `([A-Z0-9_]+)` \| (\d+) \| (yes|no) \| (.+) \|$/gm)].map((m) => [m[1], Number(m[2]), m[3] === 'yes', m[4]]);
  const catalogue = Object.entries(ERROR_CODES).map(([code, e]) => [code, e.exit, e.retryable, e.meaning]);
  assert.deepEqual(rows, catalogue);
});

test('every catalogued code is raised somewhere in src/ (no dead entries)', () => {
  const text = sources(join(root, 'src'))
    .filter((p) => !p.endsWith(join('shared', 'errors.ts')))
    .map((p) => readFileSync(p, 'utf8'))
    .join('\n');
  const unused = Object.keys(ERROR_CODES).filter((c) => c !== 'REMOTE_ERROR' && !text.includes(`'${c}'`));
  assert.deepEqual(unused, []);
});

test('exit status and retryability come from the catalogue; unknown remote codes become REMOTE_ERROR', () => {
  assert.equal(new GdpError('BAD_CONFIG', 'x').exitStatus, 2);
  assert.equal(new GdpError('REPLICA_DIVERGED', 'x').exitStatus, 1);
  assert.equal(new GdpError('INTERRUPTED', 'stopped by SIGTERM').exitStatus, 143);
  assert.equal(new GdpError('INTERRUPTED', 'stopped by SIGINT').exitStatus, 130);
  assert.equal(new GdpError('WORKER_LOST', 'x').retryable, true);
  assert.equal(new GdpError('BAD_DATA', 'x').retryable, false);
  assert.equal(codeFromRemote('BAD_DATA'), 'BAD_DATA');
  assert.equal(codeFromRemote('SOMETHING_ELSE'), 'REMOTE_ERROR');
  assert.equal(isErrorCode('toString'), false);
});
