/**
 * Emulated links for the ring benchmark (root only): one network namespace per rank, each joined to a bridge in a
 * namespace of its own by a veth pair, with a tbf rate limit on both ends of every pair (a switch with ports of
 * `gbit` Gbit/s, full duplex). Addresses are 10.213.0.1.. inside these namespaces only, so no traffic leaves them.
 * Everything is removed by `remove` (also registered for Ctrl-C / SIGTERM through bench/cleanup.ts).
 */
import { execFileSync } from 'node:child_process';
import { onAbort } from './cleanup.js';

const PREFIX = 'gdpring';

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Names of the namespaces this module creates (and only those are ever deleted). */
function ours(): string[] {
  const out = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  return out
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n.startsWith(`${PREFIX}-`));
}

export interface EmulatedLinks {
  /** Namespace and address of each rank. */
  ranks: { ns: string; host: string }[];
  remove(): void;
}

export function emulatedLinks(ranks: number, gbit: number, latencyMs = 10): EmulatedLinks {
  if (process.getuid?.() !== 0) throw new Error('emulated links need root (ip netns, tc)');
  if (ranks > 200) throw new Error('at most 200 ranks');
  const remove = () => {
    for (const ns of ours()) {
      try {
        ip('netns', 'del', ns);
      } catch {
        // Already gone.
      }
    }
  };
  remove();
  const unregister = onAbort(remove);
  const bytesPerSec = (gbit * 1e9) / 8;
  // tbf needs a bucket of at least one timer tick's worth of bytes at the rate; 2 ms of traffic, at least 64 KiB.
  const burst = `${Math.max(64 * 1024, Math.round(bytesPerSec / 500))}b`;
  const shape = (ns: string, dev: string) =>
    execFileSync('tc', ['-n', ns, 'qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', `${gbit}gbit`, 'burst', burst, 'latency', `${latencyMs}ms`]);
  const bridge = `${PREFIX}-br`;
  const out: { ns: string; host: string }[] = [];
  try {
    ip('netns', 'add', bridge);
    ip('-n', bridge, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', bridge, 'link', 'set', 'br0', 'up');
    for (let k = 0; k < ranks; k++) {
      const ns = `${PREFIX}-${k}`;
      const host = `10.213.0.${k + 1}`;
      ip('netns', 'add', ns);
      // Created inside the rank's namespace, the bridge end moved out: nothing of it ever sits in the host's namespace.
      ip('-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `p${k}`);
      ip('-n', ns, 'link', 'set', `p${k}`, 'netns', bridge);
      ip('-n', ns, 'addr', 'add', `${host}/24`, 'dev', 'eth0');
      ip('-n', ns, 'link', 'set', 'eth0', 'up');
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', bridge, 'link', 'set', `p${k}`, 'master', 'br0', 'up');
      shape(ns, 'eth0');
      shape(bridge, `p${k}`);
      out.push({ ns, host });
    }
  } catch (err) {
    remove();
    unregister();
    throw err;
  }
  return {
    ranks: out,
    remove: () => {
      remove();
      unregister();
    },
  };
}
