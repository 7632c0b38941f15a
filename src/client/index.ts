export {
  CellHandle,
  type CellResolver,
  type ClientOptions,
  type Consistency,
  type Outcome,
  PhysaliaClient,
} from "./client.ts";
export {
  CellStalledError,
  type ClientErrorCode,
  InvalidRequestError,
  OutcomeUnknownError,
  PhysaliaError,
  UnavailableError,
  UnknownCellError,
} from "./errors.ts";
