/**
 * Child processes the bench started must end with it: on success, on error, and on Ctrl-C / SIGTERM (Node's
 * default signal exit skips `finally` blocks). Each measurement registers a synchronous kill and unregisters it
 * once it has stopped its children properly.
 */
const killers = new Set<() => void>();

export function onAbort(kill: () => void): () => void {
  killers.add(kill);
  return () => killers.delete(kill);
}

function killAll(): void {
  for (const k of killers) {
    try {
      k();
    } catch {
      // Already gone.
    }
  }
  killers.clear();
}

/** Installs the process-level handlers once, from the bench entry point. */
export function installAbortHandlers(): void {
  process.once('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      killAll();
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  }
}
