import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Whether openssl is on the PATH (TLS tests skip without it). */
export const hasOpenssl = spawnSync('openssl', ['version']).status === 0;

/**
 * Runs `fn` with a fresh self-signed EC certificate for 127.0.0.1 (PEM cert and key, in a temporary folder removed
 * afterwards). Throws if openssl fails.
 */
export async function withSelfSignedCert<T>(fn: (pem: { cert: Buffer; key: Buffer }) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'gdp-tls-'));
  try {
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    const r = spawnSync('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '2',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ]);
    if (r.status !== 0) throw new Error(`openssl could not make a certificate: ${r.stderr.toString()}`);
    return await fn({ cert: readFileSync(cert), key: readFileSync(key) });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
