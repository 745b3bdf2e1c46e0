/**
 * A worker process for the test model (test.tiny8, registered by helpers.ts), for tests that need a real worker
 * in its own process: node tiny_worker_child.js URL ID. Without arguments (the test runner loading every file
 * under test/) it does nothing.
 */
import { connectWs } from '../../src/shared/protocol/ws_transport.js';
import { WorkerSession } from '../../src/worker/session.js';
import { setup, tinyData } from './helpers.js';

const [url, id] = process.argv.slice(2);
if (url && id) {
  await setup();
  const session = new WorkerSession(await connectWs(url), {
    workerId: id,
    backend: 'cpu',
    gpu: null,
    host: 'child',
    pid: process.pid,
    loadData: tinyData,
    log: (l) => process.stdout.write(`${l}\n`),
  });
  await session.run();
}
