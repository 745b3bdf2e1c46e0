export { PROTOCOL_VERSION, MAX_FRAME_BYTES, bucketElements } from './version.js';
export type { Message, MessageType, MessageOf } from './messages.js';
export { encodeMessage, decodeMessage } from './codec.js';
export { memoryPair, type Transport } from './transport.js';
export { connectWs, type ConnectOptions } from './ws_transport.js';
export { listenWs, type ListenOptions, type WsListener } from './ws_listener.js';
export { Peer } from './peer.js';
export { BucketAssembler, bucketRanges, splitBuckets } from './buckets.js';
export { applyModelUpdate, registerUpdateHandler, type ModelUpdate, type UpdateHandler } from './model_update.js';
