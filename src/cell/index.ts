/** The cell: pure state machine of one tiny database (docs/PROTOCOL.md section 15). */
export {
  commandBytes,
  commandCodec,
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
  readResult,
  readValue,
  resultBytes,
  resultDetailBytesMax,
  transactionBytes,
  valueBytes,
  writeResult,
  writeValue,
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
export {
  type ClientRequest,
  type ClientResponse,
  type ErrorCode,
  isRetryable,
  type RequestBody,
  type ResponseBody,
} from "./protocol.ts";
export { cutUnits, show, wellFormedUtf8Length } from "./text.ts";
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
  copyOperation,
  copyTransaction,
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
export {
  clientMessageKind,
  decodeClientMessage,
  encodeClientMessage,
  readClientMessage,
  writeClientMessage,
} from "./wire.ts";
