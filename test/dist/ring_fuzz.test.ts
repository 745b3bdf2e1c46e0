import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { startInProcess } from '../../src/coordinator/in_process.js';
import { encodeRingMessage, RING_PROTOCOL_VERSION } from '../../src/shared/collective/ring_messages.js';
import { encodeFrame, encodeMessage } from '../../src/shared/protocol/codec.js';
import type { Transport } from '../../src/shared/protocol/transport.js';
import { toWire } from '../../src/shared/protocol/tensor.js';
import { PROTOCOL_VERSION } from '../../src/shared/protocol/version.js';
import { connectWs } from '../../src/shared/protocol/ws_transport.js';
import { Rng } from '../../src/shared/rng.js';
import { setup, tinyData } from './helpers.js';
import { batches, ringConfig } from './ring_helpers.js';

before(setup);

const SGD = { lr: 0.1, momentum: 0.9, weightDecay: 5e-4, nesterov: false };
const TOKEN = 'ring-fuzz-token-0123456789';
const FRAMES = Number(process.env.GDP_RING_FUZZ_FRAMES ?? 400);
const STEPS = batches(256, 9, 8, 7);

const rng = new Rng(20261130);
const pick = <T>(a: readonly T[]): T => a[rng.int(a.length)];
const floats = (n: number) => Float32Array.from({ length: n }, () => rng.normal());

/**
 * A frame a confused or hostile peer holding the token could send as its first or a later message: random bytes,
 * coordinator messages, ring messages out of place (a chunk or ready before any hello, an accept from the dialing
 * side), hellos of another protocol version or with impossible fields. Well-formed hellos of the current version
 * are left out: a peer holding the token may take part in a ring by design (see the report of the ring work).
 */
function frame(): Uint8Array {
  switch (rng.int(7)) {
    case 0:
      return Uint8Array.from({ length: rng.int(64) }, () => rng.int(256));
    case 1:
      return encodeMessage({ type: 'hello', protocol: PROTOCOL_VERSION, workerId: 'fuzz', backend: 'cpu', gpu: null, host: 'fuzz', pid: 1 });
    case 2:
      return encodeRingMessage({ type: 'ring_chunk', op: rng.int(5), phase: pick(['reduce_scatter', 'all_gather'] as const), step: rng.int(3), piece: rng.int(3), data: toWire(floats(1 + rng.int(40))) });
    case 3:
      return encodeRingMessage({ type: 'ring_ready', op: rng.int(5), elems: 472, count: 9 });
    case 4:
      return encodeRingMessage({ type: 'ring_accept', ring: rng.int(5) });
    case 5:
      return encodeRingMessage({ type: 'ring_hello', protocol: RING_PROTOCOL_VERSION + 1 + rng.int(3), ring: rng.int(5), rank: rng.int(3), size: 3 });
    default: {
      const bad = { type: 'ring_hello', protocol: RING_PROTOCOL_VERSION, ring: pick([-1, 1.5, 'one', null]), rank: pick([-1, 2 ** 60, 'x']), size: pick([0, -3, 1.5]) };
      return encodeFrame(bad);
    }
  }
}

/** Connections to the listeners, with and without the token, each sending a few frames, until `FRAMES` are out. */
async function fuzz(urls: string[], stop: () => boolean): Promise<{ sent: number; refused: number }> {
  let sent = 0;
  let refused = 0;
  while (sent < FRAMES && !stop()) {
    const url = pick(urls);
    const token = pick([TOKEN, TOKEN, TOKEN, undefined, 'not-the-token-0123456789']);
    let t: Transport;
    try {
      t = await connectWs(url, { token, timeoutMs: 5000 });
    } catch {
      refused++;
      continue;
    }
    let closed = false;
    t.onClose(() => (closed = true));
    for (let i = 1 + rng.int(3); i > 0 && !closed; i--, sent++) t.send(frame());
    await new Promise((res) => setTimeout(res, rng.int(20)));
    t.close('fuzz done');
  }
  return { sent, refused };
}

async function ringRun(fuzzing: boolean): Promise<{ checksum: string; lines: string[]; fuzzed?: { sent: number; refused: number } }> {
  const lines: string[] = [];
  const run = await startInProcess(ringConfig('ring'), { workers: 3, loadData: tinyData, log: (l) => lines.push(l), ringToken: TOKEN });
  try {
    const urls = lines.map((l) => /ring listener at (\S+)$/.exec(l)?.[1]).filter((u): u is string => u !== undefined);
    assert.equal(urls.length, 3);
    let done = false;
    const fuzzer = fuzzing ? fuzz(urls, () => done) : undefined;
    for (const idx of STEPS) await run.coordinator.step(idx, 'all', SGD);
    done = true;
    const fuzzed = await fuzzer;
    await run.coordinator.verifyChecksums();
    return { checksum: run.coordinator.replica.checksum('parameters'), lines, fuzzed };
  } finally {
    await run.close();
  }
}

test("random and misplaced frames at the workers' ring listeners while they train leave the result unchanged", async () => {
  const fuzzed = await ringRun(true);
  const clean = await ringRun(false);
  assert.ok(fuzzed.fuzzed!.sent > 0 && fuzzed.fuzzed!.refused > 0, JSON.stringify(fuzzed.fuzzed));
  assert.ok(fuzzed.lines.some((l) => /ring: refused a link from /.test(l)), 'the listeners refused the fuzzing links');
  assert.equal(fuzzed.checksum, clean.checksum);
});
