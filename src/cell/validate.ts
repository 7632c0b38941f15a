/**
 * Validation of commands against the data-model limits (docs/PROTOCOL.md section 15, "Validation").
 * Total: any JavaScript value (a number where a bigint belongs, a missing field, a string with an
 * unpaired surrogate) yields a problem, never an exception. Messages are for people: they name
 * the offending part, the value and the limit, and say what to do.
 */
import { limits } from "../core/index.ts";
import { magnitudeBytes, resultDetailBytesMax, transactionBytes, varintBytes } from "./codec.ts";
import { clipText, describe, quote, show, wellFormedUtf8Length } from "./text.ts";
import {
  type Command,
  type Condition,
  type LeaseOp,
  OPERATION_FORMAT_VERSION,
  type Operation,
  type Transaction,
  type Value,
} from "./types.ts";

export type ProblemCode =
  /** The command, or a part of it, is not shaped like one (not an object, a field of the wrong type). */
  | "malformed"
  /** The command's operation format version is not the one this build applies. */
  | "unsupported_version"
  /** The session number is not a positive safe integer. */
  | "bad_session"
  /** The sequence number is not a positive safe integer. */
  | "bad_sequence"
  /** An operation type, condition op, write op or lease op this build does not know. */
  | "unknown_operation"
  /** A transaction with no conditions, no reads and no writes. */
  | "empty_transaction"
  | "item_key_empty"
  | "item_key_too_long"
  /** An item key that is not a string, or holds an unpaired surrogate (not Unicode text). */
  | "item_key_not_text"
  /** Something that is not a Uint8Array, bigint or boolean where a value belongs. */
  | "not_a_value"
  /** A byte value, or the magnitude of an integer, longer than itemValueBytesMax. */
  | "value_too_large"
  /** An lt / le / gt / ge condition whose value is not a bigint. */
  | "bad_condition_value"
  /** An add whose delta is not a bigint. */
  | "bad_delta"
  /** More distinct items than transactionItemsMax across conditions, reads and writes. */
  | "too_many_items"
  | "duplicate_write"
  | "duplicate_read"
  /** The encoded transaction is longer than transactionBytesMax. */
  | "transaction_too_large"
  | "lease_name_invalid"
  | "lease_holder_invalid"
  | "lease_duration_out_of_range";

export interface CommandProblem {
  readonly code: ProblemCode;
  /** For people: what is wrong, with the offending value and the limit, and what to do. */
  readonly message: string;
  /** The offending item, when one is to blame and its key is itself valid; otherwise null. */
  readonly item: string | null;
}

function problem(code: ProblemCode, message: string, item: unknown = null): CommandProblem {
  return { code, message: clipText(message, resultDetailBytesMax), item: reportableItem(item) };
}

/** An item key that a result may carry: 1..itemKeyBytesMax bytes of Unicode text. */
function reportableItem(item: unknown): string | null {
  if (typeof item !== "string") return null;
  const bytes = wellFormedUtf8Length(item);
  return bytes >= 1 && bytes <= limits.itemKeyBytesMax ? item : null;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}

export function isPositiveSafeInteger(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 1;
}

/** Why a command of this version cannot be applied here, or null when it can. */
export function unsupportedVersionReason(version: unknown): string | null {
  if (version === OPERATION_FORMAT_VERSION) return null;
  return (
    `operation format version ${show(version)} is not supported: this build applies version ${OPERATION_FORMAT_VERSION} only; ` +
    "upgrade this server to a build that knows the version before the cell can go on"
  );
}

/** The first problem of a command, or null when apply will execute it. */
export function validateCommand(command: Command): CommandProblem | null {
  return validateEnvelope(command) ?? validateOperation(command.op);
}

/**
 * Problems of the envelope (version, session, sequence, newSession). A command with such a problem
 * cannot be recorded in a session: apply rejects it and changes nothing.
 */
export function validateEnvelope(command: Command): CommandProblem | null {
  if (!isObject(command)) {
    return problem("malformed", `a command must be an object, not ${describe(command)}`);
  }
  const version = unsupportedVersionReason(command.version);
  if (version !== null) return problem("unsupported_version", version);
  if (!isPositiveSafeInteger(command.session)) {
    return problem(
      "bad_session",
      `session number ${show(command.session)} is not a positive safe integer; ` +
        "a client picks a random session number in [1, 2^53 - 1] per cell",
    );
  }
  if (!isPositiveSafeInteger(command.seq)) {
    return problem(
      "bad_sequence",
      `sequence number ${show(command.seq)} is not a positive safe integer; a session numbers its requests 1, 2, 3, ...`,
    );
  }
  if (typeof command.newSession !== "boolean") {
    return problem("malformed", `newSession must be a boolean, not ${describe(command.newSession)}`);
  }
  return null;
}

export function validateOperation(op: Operation): CommandProblem | null {
  if (!isObject(op)) return problem("malformed", `the operation must be an object, not ${describe(op)}`);
  switch (op.type) {
    case "txn":
      return validateTransaction(op.txn);
    case "lease":
      return validateLease(op.lease);
    default:
      return problem(
        "unknown_operation",
        `operation type ${show(op.type)} is unknown under version ${OPERATION_FORMAT_VERSION}; ` +
          'use "txn" or "lease"',
      );
  }
}

/**
 * A transaction of valid entries this few always encodes within transactionBytesMax, so its size
 * need not be computed: an entry is at most a tag, a key and a value, each of maximal length.
 */
const entryBytesMax =
  1 +
  varintBytes(limits.itemKeyBytesMax) +
  limits.itemKeyBytesMax +
  2 +
  varintBytes(limits.itemValueBytesMax) +
  limits.itemValueBytesMax;
const entriesAlwaysFitting = Math.floor((limits.transactionBytesMax - 3 * 8) / entryBytesMax);

/**
 * A copy of a valid transaction that shares nothing the caller could change: lists, entries and
 * bytes are new. A client sends the copy, so that changing a value (or a list) after the call
 * changes neither what is sent nor what a retry under the same (session, seq) sends.
 */
export function copyTransaction(txn: Transaction): Transaction {
  return {
    conditions: txn.conditions.map((c) =>
      "value" in c ? { ...c, value: copyValue(c.value) } : { ...c },
    ) as Condition[],
    reads: [...txn.reads],
    writes: txn.writes.map((w) => (w.op === "put" ? { ...w, value: copyValue(w.value) } : { ...w })),
  };
}

/** A copy of a valid operation (see copyTransaction). */
export function copyOperation(op: Operation): Operation {
  switch (op.type) {
    case "txn":
      return { type: "txn", txn: copyTransaction(op.txn) };
    case "lease":
      return { type: "lease", lease: { ...op.lease } };
    case "unknown":
      return { type: "unknown", bytes: op.bytes.slice() };
  }
}

function copyValue<V extends Value>(value: V): V {
  return (value instanceof Uint8Array ? value.slice() : value) as V;
}

export function validateTransaction(txn: Transaction): CommandProblem | null {
  if (!isObject(txn)) return problem("malformed", `the transaction must be an object, not ${describe(txn)}`);
  const { conditions, reads, writes } = txn;
  if (!Array.isArray(conditions)) return malformedList("conditions", conditions);
  if (!Array.isArray(reads)) return malformedList("reads", reads);
  if (!Array.isArray(writes)) return malformedList("writes", writes);
  const entries = conditions.length + reads.length + writes.length;
  if (entries === 0) {
    return problem(
      "empty_transaction",
      "the transaction has no conditions, no reads and no writes; it would do nothing: name at least one item",
    );
  }
  if (entries > limits.transactionBytesMax) {
    return problem(
      "transaction_too_large",
      `the transaction has ${entries} conditions, reads and writes and cannot fit in ` +
        `${limits.transactionBytesMax} bytes; split it into several transactions`,
    );
  }
  // Distinct items need counting only when there could be more than the limit; duplicates are
  // found by looking back over the same list, which stays short (a list of distinct keys longer
  // than transactionItemsMax ends with too_many_items). The common case allocates nothing.
  const named = entries > limits.transactionItemsMax ? new Set<string>() : null;

  for (let i = 0; i < conditions.length; i++) {
    // Messages are built only on failure: the happy path allocates no text.
    const condition: unknown = conditions[i];
    if (!isObject(condition)) {
      return problem("malformed", `conditions[${i}] must be an object, not ${describe(condition)}`);
    }
    const key = condition.item;
    if (!keyOk(key)) return keyFailure(key, `conditions[${i}]`);
    const op = condition.op;
    switch (op) {
      case "exists":
      case "missing":
        break;
      case "equals":
        if (!valueOk(condition.value)) {
          return valueFailure(condition.value, `conditions[${i}] (equals ${quote(key)})`, key);
        }
        break;
      case "lt":
      case "le":
      case "gt":
      case "ge": {
        const value = condition.value;
        if (typeof value !== "bigint") {
          return problem(
            "bad_condition_value",
            `conditions[${i}] (${op} ${quote(key)}): the comparison value is ${describe(value)}, ` +
              "but lt, le, gt and ge compare integers only; pass a bigint (e.g. 5n)",
            key,
          );
        }
        if (!valueOk(value)) return valueFailure(value, `conditions[${i}] (${op} ${quote(key)})`, key);
        break;
      }
      default:
        return problem(
          "unknown_operation",
          `conditions[${i}]: condition op ${show(op)} is unknown; use exists, missing, equals, lt, le, gt or ge`,
          key,
        );
    }
    if (named !== null && countItem(named, key)) return tooManyItems(named.size);
  }

  for (let i = 0; i < reads.length; i++) {
    const key: unknown = reads[i];
    if (!keyOk(key)) return keyFailure(key, `reads[${i}]`);
    const earlier = reads.indexOf(key);
    if (earlier < i) {
      return problem(
        "duplicate_read",
        `item ${quote(key)} is read twice (reads[${earlier}] and reads[${i}]); read it once`,
        key,
      );
    }
    if (named !== null && countItem(named, key)) return tooManyItems(named.size);
  }

  for (let i = 0; i < writes.length; i++) {
    const write: unknown = writes[i];
    if (!isObject(write)) {
      return problem("malformed", `writes[${i}] must be an object, not ${describe(write)}`);
    }
    const key = write.item;
    if (!keyOk(key)) return keyFailure(key, `writes[${i}]`);
    switch (write.op) {
      case "put":
        if (!valueOk(write.value)) return valueFailure(write.value, `writes[${i}] (put ${quote(key)})`, key);
        break;
      case "delete":
        break;
      case "add": {
        const delta = write.delta;
        if (typeof delta !== "bigint") {
          return problem(
            "bad_delta",
            `writes[${i}] (add ${quote(key)}): the delta is ${describe(delta)}, not a bigint; ` +
              "pass an integer such as 1n or -1n",
            key,
          );
        }
        if (!valueOk(delta)) return valueFailure(delta, `writes[${i}] (add ${quote(key)})`, key);
        break;
      }
      default:
        return problem(
          "unknown_operation",
          `writes[${i}]: write op ${show(write.op)} is unknown; use put, delete or add`,
          key,
        );
    }
    const first = writtenBefore(writes, i, key);
    if (first >= 0) {
      return problem(
        "duplicate_write",
        `item ${quote(key)} is written twice (writes[${first}] and writes[${i}]); ` +
          "combine them into one write (a transaction writes each item at most once)",
        key,
      );
    }
    if (named !== null && countItem(named, key)) return tooManyItems(named.size);
  }

  if (entries <= entriesAlwaysFitting) return null;
  const bytes = transactionBytes(txn);
  if (bytes > limits.transactionBytesMax) {
    return problem(
      "transaction_too_large",
      `the transaction encodes to ${bytes} bytes, more than the limit of ${limits.transactionBytesMax} bytes; ` +
        "split it into several transactions",
    );
  }
  return null;
}

/** Adds `key` to the distinct items named; true when that makes too many. */
function countItem(named: Set<string>, key: string): boolean {
  named.add(key);
  return named.size > limits.transactionItemsMax;
}

/** The index of an earlier write of `key` among writes[0..end) (all validated objects), or -1. */
function writtenBefore(writes: readonly unknown[], end: number, key: string): number {
  for (let i = 0; i < end; i++) if ((writes[i] as { item: unknown }).item === key) return i;
  return -1;
}

function malformedList(name: string, value: unknown): CommandProblem {
  return problem("malformed", `transaction.${name} must be an array, not ${describe(value)}`);
}

function tooManyItems(count: number): CommandProblem {
  return problem(
    "too_many_items",
    `the transaction names more than ${limits.transactionItemsMax} distinct items (counted ${count} so far) ` +
      "across its conditions, reads and writes; split it into several transactions",
  );
}

/** True when `item` is a valid item key (the fast check; itemKeyProblem explains a failure). */
function keyOk(item: unknown): item is string {
  if (typeof item !== "string" || item.length === 0) return false;
  const bytes = wellFormedUtf8Length(item);
  return bytes > 0 && bytes <= limits.itemKeyBytesMax;
}

function keyFailure(item: unknown, where: string): CommandProblem {
  return itemKeyProblem(item, where) ?? problem("malformed", `${where}: the item key is invalid`);
}

/** True when `value` is a valid item value (the fast check; valueProblem explains a failure). */
function valueOk(value: unknown): boolean {
  if (typeof value === "boolean") return true;
  if (typeof value === "bigint") return magnitudeBytes(value) <= limits.itemValueBytesMax;
  return value instanceof Uint8Array && value.length <= limits.itemValueBytesMax;
}

function valueFailure(value: unknown, what: string, item: string): CommandProblem {
  return checkValue(value, what, item) ?? problem("malformed", `${what}: the value is invalid`, item);
}

/** Why `item` cannot be an item key, or null. */
export function itemKeyProblem(item: unknown, where = "item"): CommandProblem | null {
  if (typeof item !== "string") {
    return problem("item_key_not_text", `${where}: the item key is ${describe(item)}, not a string`);
  }
  if (item.length === 0) {
    return problem("item_key_empty", `${where}: the item key is empty; name the item with a non-empty key`);
  }
  const bytes = wellFormedUtf8Length(item);
  if (bytes < 0) {
    return problem(
      "item_key_not_text",
      `${where}: the item key ${quote(item)} holds an unpaired UTF-16 surrogate, so it is not Unicode text; ` +
        "use a well-formed string",
    );
  }
  if (bytes > limits.itemKeyBytesMax) {
    return problem(
      "item_key_too_long",
      `${where}: the item key ${quote(item)} of ${bytes} bytes exceeds the limit of ` +
        `${limits.itemKeyBytesMax} bytes; use a shorter key`,
    );
  }
  return null;
}

/** Why `value` cannot be an item value, or null. */
export function valueProblem(value: unknown, where = "value"): CommandProblem | null {
  return checkValue(value, where, null);
}

function checkValue(value: unknown, what: string, item: string | null): CommandProblem | null {
  if (typeof value === "boolean") return null;
  if (typeof value === "bigint") {
    const bytes = magnitudeBytes(value);
    if (bytes <= limits.itemValueBytesMax) return null;
    return problem(
      "value_too_large",
      `${what}: an integer whose magnitude takes ${bytes} bytes exceeds the limit of ` +
        `${limits.itemValueBytesMax} bytes; keep integers below 2^${8 * limits.itemValueBytesMax}`,
      item,
    );
  }
  if (value instanceof Uint8Array) {
    if (value.length <= limits.itemValueBytesMax) return null;
    return problem(
      "value_too_large",
      `${what}: a byte value of ${value.length} bytes exceeds the limit of ${limits.itemValueBytesMax} bytes; ` +
        "store smaller values or split them across items",
      item,
    );
  }
  return problem(
    "not_a_value",
    `${what}: ${describe(value)} is not a value; values are Uint8Array, bigint or boolean ` +
      "(write integers as bigint, e.g. 5n, and text as UTF-8 bytes)",
    item,
  );
}

export function validateLease(lease: LeaseOp): CommandProblem | null {
  if (!isObject(lease)) {
    return problem("malformed", `the lease operation must be an object, not ${describe(lease)}`);
  }
  const op = lease.op;
  if (op !== "acquire" && op !== "renew" && op !== "release") {
    return problem("unknown_operation", `lease op ${show(op)} is unknown; use acquire, renew or release`);
  }
  const nameProblem = leaseTextProblem(lease.name, "name", "lease_name_invalid");
  if (nameProblem !== null) return nameProblem;
  const holderProblem = leaseTextProblem(lease.holder, "holder", "lease_holder_invalid");
  if (holderProblem !== null) return holderProblem;
  if (op === "release") return null;
  const durationMs: unknown = lease.durationMs;
  if (
    typeof durationMs !== "number" ||
    !Number.isInteger(durationMs) ||
    durationMs < limits.leaseDurationMsMin ||
    durationMs > limits.leaseDurationMsMax
  ) {
    return problem(
      "lease_duration_out_of_range",
      `lease ${op}: the duration ${show(durationMs)} is not a whole number of milliseconds in ` +
        `[${limits.leaseDurationMsMin}, ${limits.leaseDurationMsMax}]; ask for a duration in that range`,
    );
  }
  return null;
}

function leaseTextProblem(text: unknown, what: string, code: ProblemCode): CommandProblem | null {
  if (typeof text !== "string") return problem(code, `the lease ${what} is ${describe(text)}, not a string`);
  const bytes = wellFormedUtf8Length(text);
  if (bytes === 0) return problem(code, `the lease ${what} is empty; give a non-empty ${what}`);
  if (bytes < 0) {
    return problem(
      code,
      `the lease ${what} ${quote(text)} holds an unpaired UTF-16 surrogate, so it is not Unicode text; ` +
        "use a well-formed string",
    );
  }
  if (bytes > limits.leaseNameBytesMax) {
    return problem(
      code,
      `the lease ${what} ${quote(text)} of ${bytes} bytes exceeds the limit of ${limits.leaseNameBytesMax} bytes; ` +
        `use a shorter ${what}`,
    );
  }
  return null;
}
