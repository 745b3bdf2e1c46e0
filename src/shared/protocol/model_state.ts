// Replica state moved to src/shared/train/model_state.ts. This re-export remains only for src/coordinator/run.ts,
// which another branch is changing at the same time: delete it once run.ts imports from the new place.
export { stateChecksum } from '../train/model_state.js';
