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
    // Every read and decode failure is BAD_DATA naming the file (image_decode.ts): anything else is gdp's bug.
    return { code: 'INTERNAL', message: `image decode thread: ${(err as Error)?.message ?? String(err)}` };
  }
}
