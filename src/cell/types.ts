/**
 * The cell's data model: typed items, transactions, leases and their results.
 * docs/PROTOCOL.md ("Items and transactions") specifies every edge case.
 */

/** An item's value. JavaScript numbers are never values: they lose precision. */
export type Value = Uint8Array | bigint | boolean;

export type Condition =
  | { readonly item: string; readonly op: "exists" }
  | { readonly item: string; readonly op: "missing" }
  /** True when the item exists with the same type and value. */
  | { readonly item: string; readonly op: "equals"; readonly value: Value }
  /** True when the item exists, is an integer, and compares so. False otherwise. */
  | { readonly item: string; readonly op: "lt" | "le" | "gt" | "ge"; readonly value: bigint };

export type Write =
  | { readonly item: string; readonly op: "put"; readonly value: Value }
  | { readonly item: string; readonly op: "delete" }
  /** Adds delta to an integer item; a missing item counts as 0n. */
  | { readonly item: string; readonly op: "add"; readonly delta: bigint };

/** Conditions, reads and writes, all declared up front. */
export interface Transaction {
  readonly conditions: readonly Condition[];
  readonly reads: readonly string[];
  readonly writes: readonly Write[];
}

export type LeaseOp =
  | { readonly op: "acquire"; readonly name: string; readonly holder: string; readonly durationMs: number }
  | { readonly op: "renew"; readonly name: string; readonly holder: string; readonly durationMs: number }
  | { readonly op: "release"; readonly name: string; readonly holder: string };

export type Operation =
  | { readonly type: "txn"; readonly txn: Transaction }
  | { readonly type: "lease"; readonly lease: LeaseOp }
  /**
   * The still-encoded operation of a command whose format version this build does not know.
   * Only ever paired with `version !== OPERATION_FORMAT_VERSION`: such a command decodes (so it
   * can be logged, forwarded and reported) but is never applied (the cell stalls on it).
   */
  | { readonly type: "unknown"; readonly bytes: Uint8Array };

/** The operation format this build writes and understands. */
export const OPERATION_FORMAT_VERSION = 1;

/** One client request as it enters the log. */
export interface Command {
  /** Operation format version; a node that does not know it stalls the cell. */
  readonly version: number;
  /** Client session (random, chosen by the client per cell) and its sequence number. */
  readonly session: number;
  readonly seq: number;
  /** True while no earlier request of this session can have entered the log. */
  readonly newSession: boolean;
  readonly op: Operation;
}

/** A read value; null when the item is missing. */
export interface ItemRead {
  readonly item: string;
  readonly value: Value | null;
}

export type TxnResult =
  | {
      readonly status: "committed";
      /** Values as of before this transaction's writes, in the order of `reads`. */
      readonly reads: readonly ItemRead[] | null;
      /**
       * New values of `add` writes, in write order. Null only in a result answered to a retry
       * whose original was too large to keep whole (PROTOCOL.md 15.5): the write applied once.
       */
      readonly added: readonly { readonly item: string; readonly value: bigint }[] | null;
    }
  | {
      readonly status: "condition_failed";
      /** Index of the first condition that did not hold. */
      readonly condition: number;
      readonly reads: readonly ItemRead[] | null;
    }
  /** The transaction could not apply and changed nothing; `item` names the cause. */
  | {
      readonly status: "rejected";
      readonly reason: "type_mismatch" | "value_too_large" | "cell_full" | "invalid";
      readonly item: string | null;
      readonly detail: string;
    };

export type LeaseResult =
  | {
      readonly status: "granted";
      readonly holder: string;
      readonly expiresAtMs: number;
      readonly token: bigint;
    }
  | { readonly status: "released" }
  | { readonly status: "held"; readonly holder: string; readonly expiresAtMs: number }
  | { readonly status: "not_held" }
  | { readonly status: "rejected"; readonly reason: "cell_full" | "invalid"; readonly detail: string };

/** A lease as the cell holds it. Expired leases stay until released or acquired by anyone. */
export interface LeaseState {
  readonly name: string;
  readonly holder: string;
  /** Stamped time (ms) from which the lease is expired: expired when now >= expiresAtMs. */
  readonly expiresAtMs: number;
  /** Fencing token: fresh and larger than every earlier grant in this cell. */
  readonly token: bigint;
}

/** The outcome of applying one command. Never an exception. */
export type CommandResult =
  | { readonly kind: "txn"; readonly result: TxnResult }
  | { readonly kind: "lease"; readonly result: LeaseResult }
  /** The session's sequence number is older than the last one the cell saw: a late duplicate. */
  | { readonly kind: "stale_request" }
  /** The cell no longer remembers this session: the earlier request's outcome is unknown. */
  | { readonly kind: "session_expired" }
  /** The cell has no room for another session right now; nothing was applied; retry later. */
  | { readonly kind: "sessions_full" };
