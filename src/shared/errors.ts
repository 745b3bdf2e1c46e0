/**
 * The catalogue of gdp's error codes: one entry per code, used by every command line for its exit status and by the
 * reconnecting worker for what is worth retrying. The README's "Error codes" table lists the same entries (a test
 * compares them).
 *
 * - `exit`: the process exit status when a command stops with this code. 2: the input is wrong (flags, config,
 *   files, data, weights) and the same command will fail again until it is changed; 1: the run failed while running
 *   (lost workers, diverged replicas, a bad peer); 130 / 143 are reserved for SIGINT / SIGTERM (`INTERRUPTED`).
 * - `retryable`: trying again later, unchanged, may succeed (the coordinator was restarting, a peer stalled).
 */
export const ERROR_CODES = {
  // --- input: flags, configs, files, data ---
  BAD_FLAG: { exit: 2, retryable: false, meaning: 'a command-line flag is missing, malformed or contradicts another' },
  BAD_CONFIG: { exit: 2, retryable: false, meaning: 'the config fails validation or does not fit the model, data or stages' },
  UNKNOWN_ARCH: { exit: 2, retryable: false, meaning: 'the architecture name is not one gdp builds' },
  BAD_DATA: { exit: 2, retryable: false, meaning: 'a dataset file is missing, truncated, undecodable or differs between machines' },
  FILE_NOT_FOUND: { exit: 2, retryable: false, meaning: 'a file named on the command line or in the config cannot be read' },
  BAD_INPUT: { exit: 2, retryable: false, meaning: 'a raw input tensor file does not match the shape given' },
  BAD_SAFETENSORS: { exit: 2, retryable: false, meaning: 'a weights file breaks the safetensors format' },
  BAD_METADATA: { exit: 2, retryable: false, meaning: "a weights file's metadata (arch, num_class, widths) is malformed" },
  NOT_A_MODEL: { exit: 2, retryable: false, meaning: 'a weights file is a run file of another kind (a resume point, SGD momentum), not a model' },
  BAD_DTYPE: { exit: 2, retryable: false, meaning: 'a weights tensor the model needs is stored as a non-float dtype' },
  BATCH_TOO_LARGE: { exit: 2, retryable: false, meaning: "a batch's shard needs more memory than the tensor backend has (wasm: 4 GiB)" },
  BAD_TENSOR: { exit: 2, retryable: false, meaning: "a tensor's shape does not match its values" },
  MISSING_ARCH: { exit: 2, retryable: false, meaning: 'a plain PyTorch weights file needs --arch' },
  ARCH_MISMATCH: { exit: 2, retryable: false, meaning: 'the weights file is of another architecture than asked for' },
  MISSING_TENSOR: { exit: 2, retryable: false, meaning: 'a weights file lacks a tensor the model needs' },
  UNEXPECTED_TENSOR: { exit: 2, retryable: false, meaning: 'a weights file holds tensors the model does not have' },
  SHAPE_MISMATCH: { exit: 2, retryable: false, meaning: 'a tensor or layer input has another shape than the model expects' },
  BAD_TFJS_MODEL: { exit: 2, retryable: false, meaning: 'a TF.js model file is malformed' },
  BAD_KERAS_FILE: { exit: 2, retryable: false, meaning: 'a Keras file (.keras zip, .h5) is malformed or its weights do not fit its config' },
  UNSUPPORTED_LAYER: { exit: 2, retryable: false, meaning: 'an imported model holds a layer or option gdp cannot compute exactly' },
  UNSUPPORTED_EXPORT: { exit: 2, retryable: false, meaning: 'the network holds a layer the export format cannot express' },
  BAD_RUN_FILE: { exit: 2, retryable: false, meaning: "a run folder's log file (cfg.json, log.json, prune_log.json, summary.json) is unreadable or malformed" },
  BAD_RESUME: { exit: 2, retryable: false, meaning: 'a resume point is missing, truncated or of another run' },
  RUN_FINISHED: { exit: 2, retryable: false, meaning: 'the run to resume has already finished' },
  NOT_GATED: { exit: 2, retryable: false, meaning: 'a pruning operation needs gated BatchNorms and the model has none' },
  NOTHING_TO_PRUNE: { exit: 2, retryable: false, meaning: 'the model has no prunable channel group' },
  EMPTY_GROUP: { exit: 2, retryable: false, meaning: 'melting would remove every channel of a group' },
  BAD_TLS: { exit: 2, retryable: false, meaning: 'a TLS certificate or key cannot be read or used' },
  BACKEND_MISSING: { exit: 2, retryable: false, meaning: 'the tensor backend asked for is not installed' },
  BACKEND_LOAD_FAILED: { exit: 2, retryable: false, meaning: 'the tensor backend is installed but failed to load' },
  BACKEND_INIT_FAILED: { exit: 2, retryable: false, meaning: 'the tensor backend loaded but failed to start' },
  LISTEN_FAILED: { exit: 2, retryable: false, meaning: 'the coordinator cannot listen on the address given' },
  AUTH_REFUSED: { exit: 2, retryable: false, meaning: 'the coordinator refused the token' },
  PROTOCOL_VERSION: { exit: 2, retryable: false, meaning: 'coordinator and worker run different gdp protocol versions' },

  // --- a run that fails while running ---
  NO_WORKERS: { exit: 1, retryable: false, meaning: 'fewer active workers than needed, and none can come back' },
  WORKERS_MISSING: { exit: 1, retryable: false, meaning: 'not enough workers joined in time' },
  WORKERS_EXITED: { exit: 1, retryable: false, meaning: 'every local worker process exited' },
  WORKER_LOST: { exit: 1, retryable: true, meaning: 'a worker left or was dropped during an operation (the operation is redone)' },
  RING_FAILED: { exit: 1, retryable: true, meaning: "a step's ring all-reduce failed on a worker (the ring is re-formed and the step redone)" },
  REPLICA_DIVERGED: { exit: 1, retryable: false, meaning: "a replica's parameter checksum differs from the coordinator's" },
  DIVERGED: { exit: 1, retryable: false, meaning: "training diverged: every worker's loss or gradient, or their average, is non-finite at one step" },
  STEP_TIMEOUT: { exit: 1, retryable: true, meaning: 'a worker did not answer a request in time' },
  HELLO_TIMEOUT: { exit: 1, retryable: true, meaning: "a connection sent no 'hello' in time" },
  PEER_TIMEOUT: { exit: 1, retryable: true, meaning: 'the other side sent nothing (not even heartbeats) for too long' },
  CONNECT_FAILED: { exit: 1, retryable: true, meaning: 'the coordinator cannot be reached' },
  DISCONNECTED: { exit: 1, retryable: true, meaning: 'the connection to the coordinator closed' },
  DUPLICATE_WORKER: { exit: 1, retryable: true, meaning: 'a worker with the same id is still connected' },
  TOO_MANY_CONNECTIONS: { exit: 1, retryable: true, meaning: 'the coordinator is at its connection limit' },
  SHUTTING_DOWN: { exit: 1, retryable: false, meaning: 'the coordinator is shutting down' },
  INTERRUPTED: { exit: 130, retryable: false, meaning: 'stopped by SIGINT (exit 130) or SIGTERM (exit 143)' },

  // --- a peer sent something wrong (the connection is closed, nothing reaches the model) ---
  PROTOCOL: { exit: 1, retryable: false, meaning: 'a message out of order or of a kind the receiver does not take' },
  BAD_MESSAGE: { exit: 1, retryable: false, meaning: 'a message fails validation' },
  BAD_FRAME: { exit: 1, retryable: false, meaning: 'a frame is not valid WebSocket or msgpack' },
  FRAME_TOO_LARGE: { exit: 1, retryable: false, meaning: 'a frame exceeds the size limit' },
  BAD_BUCKET: { exit: 1, retryable: false, meaning: 'a gradient or state bucket does not fit the expected layout' },
  BAD_ANSWER: { exit: 1, retryable: false, meaning: "a worker's answer contradicts what it was asked" },
  NON_FINITE: { exit: 1, retryable: false, meaning: 'a tensor holds NaN or infinity' },
  BAD_STATE: { exit: 1, retryable: false, meaning: 'a state (welcome, BN statistics, scores) does not fit the model' },
  BAD_LAYOUT: { exit: 1, retryable: false, meaning: 'a flat vector does not fit the layout of the parameters it stands for' },
  BAD_UPDATE: { exit: 1, retryable: false, meaning: 'a model update record is malformed or does not fit the model' },
  UNKNOWN_UPDATE_HANDLER: { exit: 1, retryable: false, meaning: 'a model update names a handler this process lacks' },
  BAD_DECISION: { exit: 1, retryable: false, meaning: 'a pruning decision is malformed or does not fit the model' },
  BAD_MELT: { exit: 1, retryable: false, meaning: 'a melt record does not fit the model' },
  INCONSISTENT_MASK: { exit: 1, retryable: false, meaning: 'BNs of one channel group hold different masks' },
  MISSING_SCORE: { exit: 1, retryable: false, meaning: 'a channel group has no importance score' },
  BAD_SCORE: { exit: 1, retryable: false, meaning: 'an importance score is NaN' },
  UNKNOWN_LAYER: { exit: 1, retryable: false, meaning: 'a module path does not name a layer of the expected kind' },
  REMOTE_ERROR: { exit: 1, retryable: false, meaning: 'the other side reported an error with a code this version does not know' },
  INTERNAL: { exit: 1, retryable: false, meaning: 'a bug in gdp: please report it with the log' },
} as const satisfies Record<string, { exit: 1 | 2 | 130; retryable: boolean; meaning: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** Whether `code` is in the catalogue (a code read from the network or a thread is checked with it). */
export function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(ERROR_CODES, code);
}

/** A code received from another process: itself when known, else REMOTE_ERROR (the message keeps the original). */
export function codeFromRemote(code: string): ErrorCode {
  return isErrorCode(code) ? code : 'REMOTE_ERROR';
}

/**
 * Whether a worker that reports `code` about itself ends the run with it, rather than leaving while the others go
 * on: its input is wrong (exit 2: data, config, weights, backend), so neither a retry nor another worker fixes it.
 * Every other code loses that worker only: retryable ones, a stop, a complaint about what it received (the
 * connection is closed, as for any bad peer), INTERNAL (a bug, or memory, on that machine), REMOTE_ERROR.
 */
export function endsRunWhenReported(code: ErrorCode): boolean {
  return ERROR_CODES[code].exit === 2;
}

/** Errors carry a stable `code` from the catalogue, so that callers and tests match codes, not message text. */
export class GdpError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'GdpError';
  }

  /** The exit status of a command that stops with this error (`INTERRUPTED`: 143 for SIGTERM, else 130). */
  get exitStatus(): number {
    if (this.code === 'INTERRUPTED') return this.message.includes('SIGTERM') ? 143 : 130;
    return ERROR_CODES[this.code].exit;
  }

  get retryable(): boolean {
    return ERROR_CODES[this.code].retryable;
  }
}
