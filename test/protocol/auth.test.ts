import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bearerToken, isLoopbackHost, tokenMatches } from '../../src/shared/protocol/auth.js';

test('tokens match exactly, whatever their lengths', () => {
  const t = '0123456789abcdef0123456789abcdef';
  assert.equal(tokenMatches(t, t), true);
  for (const other of [undefined, '', t.slice(0, -1), `${t}0`, t.toUpperCase(), ` ${t}`]) assert.equal(tokenMatches(t, other), false, String(other));
});

test('the bearer token of an Authorization header', () => {
  assert.equal(bearerToken('Bearer abc def'), 'abc def');
  for (const h of [undefined, '', 'Bearer ', 'bearer abc', 'Basic abc', 'abc']) assert.equal(bearerToken(h), undefined, String(h));
});

test('loopback addresses are told from the others', () => {
  for (const h of ['127.0.0.1', '127.1.2.3', 'localhost', 'LOCALHOST', '::1', '[::1]', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1'])
    assert.equal(isLoopbackHost(h), true, h);
  for (const h of ['0.0.0.0', '::', '192.168.1.10', '10.0.0.1', 'example.org', 'localhost.example.org', '128.0.0.1', '::ffff:10.0.0.1'])
    assert.equal(isLoopbackHost(h), false, h);
});
