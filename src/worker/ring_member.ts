import { RingAllReduce } from '../shared/collective/ring_allreduce.js';
import { RingEndpoint } from '../shared/collective/ring_peers.js';
import type { Config } from '../shared/config/schema.js';
import type { MessageOf } from '../shared/protocol/messages.js';
import { bucketElements } from '../shared/protocol/version.js';

/** Where and how a worker listens for its ring successor (gdp-worker --listen, --cert/--key; the shared token). */
export interface RingListenSettings {
  host: string;
  /** 0: any free port. */
  port: number;
  /** The coordinator's token: ring peers present it to each other, as workers do to the coordinator. */
  token?: string;
  /** PEM certificate and key: the listener serves wss://. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** PEM certificate(s) to trust when dialing a wss:// predecessor. */
  ca?: string | Buffer;
}

export type RingInfo = NonNullable<MessageOf<'compute'>['ring']>;

/**
 * A worker's membership in the coordinator's rings: its listener (opened once, when the run may use the ring) and
 * the ring of the current formation. A compute request names the formation; a new one closes the previous ring
 * (every rank finished it: the coordinator collected all answers before it formed another) and joins the new one.
 */
export class RingMember {
  private ring?: { id: number; size: number; rank: number; reduce: RingAllReduce };

  private constructor(
    private readonly endpoint: RingEndpoint,
    private readonly settings: RingListenSettings,
    private readonly config: Config,
  ) {}

  /** Listens as `settings` say; throws CONNECT_FAILED / BAD_TLS from the listener (port taken, bad certificate). */
  static async open(settings: RingListenSettings, config: Config, log: (line: string) => void): Promise<RingMember> {
    const ep = await RingEndpoint.listen(settings.host, settings.port, {
      token: settings.token,
      tls: settings.tls,
      log,
      helloTimeoutMs: config.dist.heartbeat_timeout_ms,
    });
    return new RingMember(ep, settings, config);
  }

  /** The address the coordinator gives this worker's successor. */
  get url(): string {
    return this.endpoint.url;
  }

  /**
   * Replaces `values` (this rank's gradient SUM) by the ring's average over `info.count` samples, joining the
   * formation `info.ring` first if it is new. Rejects with the collective's codes (RingAllReduce, RingEndpoint.join);
   * a failed ring is dropped, so the next request forms a fresh one.
   */
  async allreduce(info: RingInfo, values: Float32Array): Promise<Float32Array> {
    const d = this.config.dist;
    if (this.ring?.id !== info.ring || this.ring.rank !== info.rank || this.ring.size !== info.size) {
      this.drop('a new ring formation');
      const links = await this.endpoint.join(
        { ring: info.ring, rank: info.rank, size: info.size, prev: info.prev },
        { token: this.settings.token, ca: this.settings.ca, timeoutMs: d.heartbeat_timeout_ms },
      );
      // A peer stalled computing its shard holds every rank up: the all-reduce waits as long as a step may take.
      const reduce = new RingAllReduce(links, { rank: info.rank, size: info.size, bucketElems: bucketElements(d.bucket_mib), timeoutMs: d.step_timeout_ms });
      this.ring = { id: info.ring, size: info.size, rank: info.rank, reduce };
    }
    const ring = this.ring!;
    try {
      return await ring.reduce.allreduce(info.op, values, info.count);
    } catch (err) {
      if (this.ring === ring) this.ring = undefined;
      throw err;
    }
  }

  /** Whether a ring formation is held (tests). */
  get formation(): number | undefined {
    return this.ring?.id;
  }

  private drop(reason: string): void {
    this.ring?.reduce.close(reason);
    this.ring = undefined;
  }

  async close(): Promise<void> {
    this.drop('the worker is closing');
    await this.endpoint.close();
  }
}
