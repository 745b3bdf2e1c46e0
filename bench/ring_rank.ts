/**
 * One rank of the ring all-reduce benchmark (bench/ring.ts), in its own process as a worker would be:
 *   node ring_rank.js HOST
 * Listens for its predecessor on HOST (any port; token from GDP_TOKEN) and sends { url } over IPC; on
 * { spec, elems, reps, bucketElems } joins the ring and runs `reps` all-reduces of `elems` synthetic float32 values,
 * then sends { ms: [time of each all-reduce], user, sys: [CPU seconds of this process during each] } (or
 * { error }) and exits when the parent disconnects.
 */
import { RingAllReduce } from '../src/shared/collective/ring_allreduce.js';
import { RingEndpoint, type RingSpec } from '../src/shared/collective/ring_peers.js';

export interface RingRankJob {
  spec: RingSpec;
  elems: number;
  reps: number;
  bucketElems: number;
}

const host = process.argv[2] ?? '127.0.0.1';
const token = process.env.GDP_TOKEN;
const endpoint = await RingEndpoint.listen(host, 0, { token });
process.send!({ url: endpoint.url });

process.on('message', (job: RingRankJob) => {
  void (async () => {
    try {
      const links = await endpoint.join(job.spec, { token, timeoutMs: 30000 });
      const ring = new RingAllReduce(links, { rank: job.spec.rank, size: job.spec.size, bucketElems: job.bucketElems, timeoutMs: 600000 });
      // Finite values of a gradient's magnitude; averaging over `size` samples keeps them in range rep after rep.
      // A plain loop: TypedArray.map's callback per element cost a second of CPU (and garbage) before the first op.
      const grad = new Float32Array(job.elems);
      for (let i = 0; i < grad.length; i++) grad[i] = ((i % 1000) - 500) * 1e-4 * (job.spec.rank + 1);
      const ms: number[] = [];
      const user: number[] = [];
      const sys: number[] = [];
      for (let op = 0; op < job.reps; op++) {
        const t0 = performance.now();
        const c0 = process.cpuUsage();
        await ring.allreduce(op, grad, job.spec.size);
        const c = process.cpuUsage(c0);
        ms.push(performance.now() - t0);
        user.push(c.user / 1e6);
        sys.push(c.system / 1e6);
      }
      // The ring stays up until the parent disconnects: a rank's last frames may still be in its socket's buffer
      // for a slower neighbour when its own all-reduce resolves.
      process.send!({ ms, user, sys });
    } catch (err) {
      process.send!({ error: `${(err as { code?: string }).code ?? 'ERROR'}: ${(err as Error).message}` });
    }
  })();
});
process.on('disconnect', () => void endpoint.close().then(() => process.exit(0)));
