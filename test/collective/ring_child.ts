/**
 * One ring rank in its own process, for the ws tests (a worker that can be killed). Over IPC: it listens on
 * 127.0.0.1 with GDP_TOKEN and sends { url }; then on { spec, size, seed, count, op } it joins the ring, runs one
 * all-reduce of rankGradients(spec.size, size, seed)[rank] and sends { done: bits } or { error: code }. Without an IPC
 * channel (the test runner loading every file under test/) it does nothing.
 */
import { RingAllReduce } from '../../src/shared/collective/ring_allreduce.js';
import { RingEndpoint, type RingSpec } from '../../src/shared/collective/ring_peers.js';
import { rankGradients } from './ring_helpers.js';

if (process.send) {
  const token = process.env.GDP_TOKEN;
  const endpoint = await RingEndpoint.listen('127.0.0.1', 0, { token });
  process.send!({ url: endpoint.url });
  process.on('message', (m: { spec: RingSpec; size: number; seed: number; count: number; op: number; bucketElems: number }) => {
    void (async () => {
      try {
        const links = await endpoint.join(m.spec, { token, timeoutMs: 10000 });
        const ring = new RingAllReduce(links, { rank: m.spec.rank, size: m.spec.size, bucketElems: m.bucketElems, timeoutMs: 30000 });
        const out = await ring.allreduce(m.op, rankGradients(m.spec.size, m.size, m.seed)[m.spec.rank], m.count);
        process.send!({ done: Array.from(new Uint32Array(out.buffer)) });
      } catch (err) {
        process.send!({ error: (err as { code?: string }).code ?? String(err) });
      }
    })();
  });
  process.on('disconnect', () => process.exit(0));
}
