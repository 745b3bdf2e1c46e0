import { createHash, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';

/** Shortest shared token accepted: 16 characters, e.g. `openssl rand -hex 16` gives 32. */
export const MIN_TOKEN_LENGTH = 16;

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/**
 * Whether `presented` is the shared token. Both are hashed first, so the comparison runs over two 32-byte digests:
 * its time depends neither on where they differ nor on the presented length.
 */
export function tokenMatches(expected: string, presented: string | undefined): boolean {
  return timingSafeEqual(digest(expected), digest(presented ?? '')) && presented !== undefined;
}

/** The token of an `Authorization: Bearer <token>` header, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  const m = /^Bearer (.+)$/.exec(header ?? '');
  return m?.[1];
}

/** Addresses only this machine can reach: 127.0.0.0/8, ::1 (also IPv4-mapped) and the name localhost. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || /^::ffff:127\./.test(h) || /^(0{1,4}:){7}0{0,3}1$/.test(h);
  return false;
}
