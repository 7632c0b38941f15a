/** The cell: pure state machine of one tiny database (docs/cell-semantics.md). */
export {
  commandBytes,
  decodeCommand,
  decodeOperation,
  decodeResult,
  decodeValue,
  encodeCommand,
  encodeOperation,
  encodeResult,
  encodeValue,
  magnitudeBytes,
  operationBytes,
  resultBytes,
  resultDetailBytesMax,
  transactionBytes,
  valueBytes,
} from "./codec.ts";
export {
  CellMachine,
  itemBytes,
  leaseBytes,
  leaseOverheadBytes,
  type SessionState,
  snapshotFormat,
  stampMsMax,
} from "./machine.ts";
export type {
  Command,
  CommandResult,
  Condition,
  ItemRead,
  LeaseOp,
  LeaseResult,
  LeaseState,
  Operation,
  Transaction,
  TxnResult,
  Value,
  Write,
} from "./types.ts";
export { OPERATION_FORMAT_VERSION } from "./types.ts";
export {
  type CommandProblem,
  itemKeyProblem,
  type ProblemCode,
  unsupportedVersionReason,
  validateCommand,
  validateEnvelope,
  validateLease,
  validateOperation,
  validateTransaction,
  valueProblem,
} from "./validate.ts";
