export { RingAllReduce, type RingLinks, type RingOptions } from './ring_allreduce.js';
export { RingEndpoint, type RingSpec, type RingDialOptions, type RingListenOptions } from './ring_peers.js';
export { ringAverage } from './ring_reference.js';
export { ringSegments, summationOrder, ringBytesPerRank } from './ring_schedule.js';
export { RING_PROTOCOL_VERSION } from './ring_messages.js';
