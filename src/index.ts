/** The public SDK: the client and the cell's data model. */

export type {
  CommandResult,
  Condition,
  ItemRead,
  LeaseResult,
  Transaction,
  TxnResult,
  Value,
  Write,
} from "./cell/index.ts";
export {
  CellHandle,
  type CellResolver,
  CellStalledError,
  type ClientErrorCode,
  type ClientOptions,
  ConnectError,
  type ConnectOptions,
  type Consistency,
  clientKeyOf,
  InvalidRequestError,
  type Outcome,
  OutcomeUnknownError,
  PhysaliaClient,
  PhysaliaError,
  type ResumedSession,
  UnavailableError,
  UnknownCellError,
} from "./client/index.ts";
export { limits } from "./core/index.ts";
