/** Errors the client raises. Expected outcomes (a failed condition, a held lease) are results, not errors. */
export type ClientErrorCode = "unavailable" | "invalid" | "stalled" | "unknown_cell" | "outcome_unknown";

export class PhysaliaError extends Error {
  override name = "PhysaliaError";
  constructor(
    readonly code: ClientErrorCode,
    message: string,
    readonly cellKey: string,
  ) {
    super(message);
  }
}

/** No node of the cell answered within the retry budget. Nothing was applied. */
export class UnavailableError extends PhysaliaError {
  override name = "UnavailableError";
  constructor(cellKey: string, detail: string) {
    super("unavailable", `cell ${cellKey} is unavailable: ${detail}`, cellKey);
  }
}

/**
 * A write may or may not have been applied: it was sent (to a node, or queued for one whose
 * connection was down and could still open) but no answer came back within the retry budget, or
 * the cell forgot the session it was sent in. Read the cell to find out.
 */
export class OutcomeUnknownError extends PhysaliaError {
  override name = "OutcomeUnknownError";
  constructor(cellKey: string, detail: string) {
    super("outcome_unknown", `the outcome of a write to cell ${cellKey} is unknown: ${detail}`, cellKey);
  }
}

/** The request is malformed or breaks a limit; the message says which and what to do. */
export class InvalidRequestError extends PhysaliaError {
  override name = "InvalidRequestError";
  constructor(cellKey: string, detail: string) {
    super("invalid", detail, cellKey);
  }
}

/** The cell met a log entry its servers cannot apply (a newer operation format) and stopped. */
export class CellStalledError extends PhysaliaError {
  override name = "CellStalledError";
  constructor(cellKey: string, detail: string) {
    super("stalled", `cell ${cellKey} is stalled: ${detail}; upgrade its servers`, cellKey);
  }
}

/** No server the client could find hosts the cell. */
export class UnknownCellError extends PhysaliaError {
  override name = "UnknownCellError";
  constructor(cellKey: string) {
    super(
      "unknown_cell",
      `no server hosts cell ${cellKey}; create it first or check the colony file`,
      cellKey,
    );
  }
}
