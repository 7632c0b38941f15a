export { assert, assertNever, InvariantError } from "./assert.ts";
export {
  ByteReader,
  ByteWriter,
  bytesEqual,
  compareBytes,
  DecodeError,
  toHex,
  utf8Encode,
  utf8Length,
} from "./codec.ts";
export { Fifo } from "./fifo.ts";
export { fmix32, fnv1a, hashBytes, RunningHash } from "./hash.ts";
export { DurationHistogram } from "./histogram.ts";
export {
  type Address,
  type CellKey,
  cellKeyProblem,
  compareUtf8,
  formatNodeId,
  type NodeId,
  nodeIdEquals,
  type ServerId,
} from "./ids.ts";
export { type Limits, limits } from "./limits.ts";
export type { Clock, Scheduler, TimerHandle } from "./ports.ts";
export { Prng } from "./prng.ts";
