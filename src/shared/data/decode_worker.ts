import { move } from 'piscina';
import { GdpError } from '../errors.js';
import { runDecodeTask, type DecodeTask } from './decode_task.js';

/** A failed task's error as plain data: a structured-cloned Error would lose GdpError's code. */
export interface DecodeFailure {
  code: string;
  message: string;
}

/** Pool thread entry: the floats are transferred to the caller, not copied. */
export default async function decodeInWorker(task: DecodeTask): Promise<Float32Array | DecodeFailure> {
  try {
    return move(await runDecodeTask(task)) as Float32Array;
  } catch (err) {
    if (err instanceof GdpError) return { code: err.code, message: err.message };
    return { code: 'DECODE_FAILED', message: (err as Error)?.message ?? String(err) };
  }
}
