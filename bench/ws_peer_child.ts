/**
 * The far end of the communication benchmarks, in its own process as a worker would be:
 *   node ws_peer_child.js raw-up URL TOTAL_BYTES FRAME_BYTES    on 'go', sends TOTAL_BYTES in binary frames
 *   node ws_peer_child.js raw-down URL TOTAL_BYTES FRAME_BYTES  receives TOTAL_BYTES, then sends 'done'
 *   node ws_peer_child.js grad URL SIZE BUCKET_ELEMS [DTYPE]    a worker's side of the gradient exchange
 * In grad mode it speaks the real protocol through Peer (codec, validation) and the real bucket code: it
 * answers `compute` with SIZE floats as `grad` buckets then `computed`, reassembles each `average`'s `avg`
 * buckets, checks `apply` has them all, and answers `checksum_request` (which, on the ordered channel, proves the
 * update arrived).
 */
import { hostname } from 'node:os';
import { WebSocket } from 'ws';
import { BucketAssembler, splitBuckets, type BucketDtype } from '../src/shared/protocol/buckets.js';
import { Peer } from '../src/shared/protocol/peer.js';
import { PROTOCOL_VERSION, MAX_FRAME_BYTES } from '../src/shared/protocol/version.js';
import { CLIENT_SOCKET_OPTIONS, connectWs } from '../src/shared/protocol/ws_transport.js';
import { receiveBytes, sendFrames } from './ws_frames.js';

const [mode, url, a, b, c] = process.argv.slice(2);

/** up: on 'go', sends the bytes (worker -> coordinator); down: receives them, then answers 'done'. */
function raw(direction: string, totalBytes: number, frameBytes: number): void {
  // The same socket options as gdp's client (zero masking key), so raw and protocol move bytes alike.
  const ws = new WebSocket(url, CLIENT_SOCKET_OPTIONS);
  if (direction === 'up') ws.once('message', () => void sendFrames(ws, totalBytes, frameBytes).catch(() => process.exit(1)));
  else ws.once('open', () => void receiveBytes(ws, totalBytes).then(() => ws.send('done')));
  ws.on('close', () => process.exit(0));
  ws.on('error', () => process.exit(1));
}

async function grad(size: number, bucketElems: number, dtype: BucketDtype): Promise<void> {
  const transport = await connectWs(url);
  const peer = new Peer(transport, { name: 'bench coordinator', heartbeatMs: 2000, timeoutMs: 600000, log: (l) => process.stderr.write(l + '\n') });
  // Small finite values: the receiver checks every element.
  const gradient = new Float32Array(size).map((_, i) => ((i % 1000) - 500) * 1e-4);
  let avg: BucketAssembler | undefined;
  // One buffer reused across steps, as the worker's session keeps it (a fresh 100 MB vector per step costs page faults).
  let avgBuffer: Float32Array | undefined;
  peer.onMessage((m) => {
    switch (m.type) {
      case 'compute':
        splitBuckets(gradient, bucketElems, dtype).forEach((data, index) => peer.send({ type: 'bucket', stream: 'grad', seq: m.seq, index, data }));
        peer.send({ type: 'computed', seq: m.seq, stats: { lossSum: 0, correct1: 0, correct5: 0, count: 1 } });
        return;
      case 'average':
        avg = new BucketAssembler(`averaged gradient of request ${m.seq}`, size, bucketElems, (n) => (avgBuffer ??= new Float32Array(n)));
        return;
      case 'bucket':
        avg!.add(m.index, m.data);
        return;
      case 'apply':
        avg!.result();
        return;
      case 'checksum_request':
        peer.send({ type: 'checksum', seq: m.seq, checksum: '0000000000000000' });
        return;
      default:
        return;
    }
  });
  peer.onClose(() => process.exit(0));
  peer.send({ type: 'hello', protocol: PROTOCOL_VERSION, workerId: 'bench-peer', backend: 'none', gpu: null, host: hostname(), pid: process.pid });
}

if (mode === 'raw-up' || mode === 'raw-down') raw(mode.slice(4), Number(a), Number(b));
else if (mode === 'grad') await grad(Number(a), Number(b), c === 'float16' ? 'float16' : 'float32');
else {
  process.stderr.write(`ws_peer_child: unknown mode '${mode}'\n`);
  process.exit(2);
}
