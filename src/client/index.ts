export {
  CellHandle,
  type CellResolver,
  type ClientOptions,
  type Consistency,
  type Outcome,
  type ResumedSession,
  resumedSessionsProblem,
} from "./client.ts";
export {
  type ColonyKeys,
  type ColonyServer,
  ConnectError,
  type ConnectOptions,
  clientKeyOf,
  connect,
  PhysaliaClient,
  parseColonyKeys,
  readColonyConnection,
  readColonyKeyFile,
} from "./connect.ts";
export {
  CellStalledError,
  type ClientErrorCode,
  InvalidRequestError,
  OutcomeUnknownError,
  PhysaliaError,
  UnavailableError,
  UnknownCellError,
} from "./errors.ts";
export { NodeScheduler } from "./node-runtime.ts";
export { FileTooLargeError, firstInvalidUtf8, readBoundedText } from "./read-bounded.ts";
