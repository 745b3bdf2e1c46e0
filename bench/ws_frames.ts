import type { WebSocket } from 'ws';

/** Sends `totalBytes` as binary frames of `frameBytes`, a few in flight (busy socket, bounded memory). */
export function sendFrames(ws: WebSocket, totalBytes: number, frameBytes: number): Promise<void> {
  const frame = Buffer.alloc(frameBytes, 7);
  return new Promise((resolve, reject) => {
    let sent = 0;
    let acked = 0;
    const sendNext = () => {
      if (sent >= totalBytes) return;
      const n = Math.min(frameBytes, totalBytes - sent);
      sent += n;
      ws.send(n === frameBytes ? frame : frame.subarray(0, n), { binary: true }, (err) => {
        if (err) return reject(err);
        acked += n;
        if (acked >= totalBytes) resolve();
        else sendNext();
      });
    };
    for (let i = 0; i < 4; i++) sendNext();
  });
}

/** Resolves (with performance.now()) once `totalBytes` of binary frames have arrived. */
export function receiveBytes(ws: WebSocket, totalBytes: number): Promise<number> {
  return new Promise((resolve) => {
    let got = 0;
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary) return;
      got += data.byteLength;
      if (got >= totalBytes) resolve(performance.now());
    });
  });
}
