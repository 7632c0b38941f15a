/**
 * A naive model of one cell's transactions, for the linearizability checker. It is an
 * independent oracle for src/cell: written from the data model in src/cell/types.ts and never
 * sharing code with the real state machine, so a bug has to be made twice to go unnoticed.
 *
 * Semantics (one transaction, applied atomically to the items):
 * 1. Reads see the items as they were before the transaction (null for a missing item).
 * 2. Conditions are evaluated in order on the same pre-state; the first false one makes the
 *    result `condition_failed` with its index and the reads, and nothing is written.
 *    exists / missing: presence. equals: the item exists with the same type and value (bytes
 *    bytewise, integers by value, booleans). lt / le / gt / ge: the item exists, is an integer
 *    and compares so; false otherwise.
 * 3. Writes apply in order, each seeing the earlier writes of the same transaction: put sets,
 *    delete removes (a missing item is fine), add adds delta to an integer item where a missing
 *    item counts as 0n. An add on an item holding a non-integer rejects the WHOLE transaction
 *    with "type_mismatch" naming that item, and nothing changes.
 * 4. Otherwise the result is `committed` with the reads and the new values of the adds, in
 *    write order.
 *
 * Not modelled: "value_too_large", "cell_full" and "invalid" rejections depend on limits and
 * encodings, and the simulator never generates transactions that hit them; an observed result
 * with one of those reasons is therefore illegal for this model (step returns null). Neither
 * are leases: histories hold transactions only.
 *
 * An observed `reads: null` is accepted for any reads: the cell drops read values from a
 * result kept for a retry when it is too large (limits.sessionResultBytesMax).
 */

import type { Condition, ItemRead, Transaction, TxnResult, Value } from "../cell/index.ts";
import { assertNever, bytesEqual, toHex } from "../core/index.ts";
import type { Model } from "./linearizability.ts";

/** The operations of a cell history. */
export interface CellModelInput {
  readonly txn: Transaction;
}

/** The items of a cell. Never mutated: every step builds a new state. */
export interface CellModelState {
  readonly items: ReadonlyMap<string, Value>;
}

/** The outcome the model computes for one transaction, with the state after it. */
export interface CellModelOutcome {
  readonly result: TxnResult;
  readonly next: CellModelState;
}

export const EMPTY_CELL_STATE: CellModelState = Object.freeze({ items: new Map<string, Value>() });

/** Applies one transaction to a state by the semantics above. Pure; never throws for valid input. */
export function applyTransaction(state: CellModelState, txn: Transaction): CellModelOutcome {
  const before = state.items;
  const reads: ItemRead[] = txn.reads.map((item) => ({ item, value: before.get(item) ?? null }));

  for (let index = 0; index < txn.conditions.length; index++) {
    const condition = txn.conditions[index] as Condition;
    if (!conditionHolds(before.get(condition.item), condition)) {
      return { result: { status: "condition_failed", condition: index, reads }, next: state };
    }
  }

  const after = new Map(before);
  const added: { item: string; value: bigint }[] = [];
  for (const write of txn.writes) {
    switch (write.op) {
      case "put":
        after.set(write.item, write.value);
        break;
      case "delete":
        after.delete(write.item);
        break;
      case "add": {
        const current = after.get(write.item) ?? 0n;
        if (typeof current !== "bigint") {
          return {
            result: {
              status: "rejected",
              reason: "type_mismatch",
              item: write.item,
              detail: `add on item ${JSON.stringify(write.item)} holding ${valueType(current)} (not an integer)`,
            },
            next: state,
          };
        }
        const value = current + write.delta;
        after.set(write.item, value);
        added.push({ item: write.item, value });
        break;
      }
      default:
        assertNever(write, "write");
    }
  }
  return { result: { status: "committed", reads, added }, next: { items: after } };
}

function conditionHolds(current: Value | undefined, condition: Condition): boolean {
  switch (condition.op) {
    case "exists":
      return current !== undefined;
    case "missing":
      return current === undefined;
    case "equals":
      return current !== undefined && valuesEqual(current, condition.value);
    case "lt":
      return typeof current === "bigint" && current < condition.value;
    case "le":
      return typeof current === "bigint" && current <= condition.value;
    case "gt":
      return typeof current === "bigint" && current > condition.value;
    case "ge":
      return typeof current === "bigint" && current >= condition.value;
    default:
      return assertNever(condition, "condition");
  }
}

function valueType(value: Value): string {
  if (value instanceof Uint8Array) return "bytes";
  return typeof value === "bigint" ? "an integer" : "a boolean";
}

/** Same type and same value: bytes bytewise, integers by value, booleans. */
export function valuesEqual(a: Value, b: Value): boolean {
  if (a instanceof Uint8Array) return b instanceof Uint8Array && bytesEqual(a, b);
  return typeof a === typeof b && a === b;
}

function readValuesEqual(a: Value | null, b: Value | null): boolean {
  if (a === null || b === null) return a === b;
  return valuesEqual(a, b);
}

function readsMatch(expected: readonly ItemRead[], observed: readonly ItemRead[] | null): boolean {
  if (observed === null) return true;
  if (observed.length !== expected.length) return false;
  for (let i = 0; i < expected.length; i++) {
    const want = expected[i] as ItemRead;
    const got = observed[i] as ItemRead;
    if (want.item !== got.item || !readValuesEqual(want.value, got.value)) return false;
  }
  return true;
}

/** True when `observed` is a legal report of the result the model computed. */
export function resultMatches(expected: TxnResult, observed: TxnResult): boolean {
  switch (expected.status) {
    case "committed": {
      if (observed.status !== "committed") return false;
      if (!readsMatch(expected.reads ?? [], observed.reads)) return false;
      // A retry of a result too large to keep whole reports no added values.
      if (observed.added === null) return true;
      const wanted = expected.added ?? [];
      const reported = observed.added;
      if (reported.length !== wanted.length) return false;
      return wanted.every((want, i) => {
        const got = reported[i];
        return got !== undefined && got.item === want.item && got.value === want.value;
      });
    }
    case "condition_failed":
      return (
        observed.status === "condition_failed" &&
        observed.condition === expected.condition &&
        readsMatch(expected.reads ?? [], observed.reads)
      );
    case "rejected":
      // Only type_mismatch is modelled; the cell may leave the item out.
      return (
        observed.status === "rejected" &&
        observed.reason === expected.reason &&
        (observed.item === null || observed.item === expected.item)
      );
    default:
      return assertNever(expected, "transaction result");
  }
}

/** Canonical, unambiguous text of a state: items sorted, names quoted, values tagged by type. */
export function cellStateKey(state: CellModelState): string {
  const names = [...state.items.keys()].sort();
  const parts: string[] = [];
  for (const name of names)
    parts.push(`${JSON.stringify(name)}=${encodeValue(state.items.get(name) as Value)}`);
  return parts.join(",");
}

function encodeValue(value: Value): string {
  if (value instanceof Uint8Array) return `b${toHex(value)}`;
  if (typeof value === "bigint") return `i${value}`;
  return value ? "T" : "F";
}

/** Bytes shown in a description before the rest is elided. */
const DESCRIBE_BYTES_MAX = 16;

/** Short human text of a value: 0x-prefixed hex for bytes, `5n` for integers, true / false. */
export function formatValue(value: Value | null): string {
  if (value === null) return "missing";
  if (value instanceof Uint8Array) {
    if (value.length <= DESCRIBE_BYTES_MAX) return `0x${toHex(value)}`;
    return `0x${toHex(value.subarray(0, DESCRIBE_BYTES_MAX))}...(${value.length} bytes)`;
  }
  if (typeof value === "bigint") return `${value}n`;
  return value ? "true" : "false";
}

function formatCondition(condition: Condition): string {
  switch (condition.op) {
    case "exists":
    case "missing":
      return `${condition.item} ${condition.op}`;
    case "equals":
      return `${condition.item}==${formatValue(condition.value)}`;
    case "lt":
      return `${condition.item}<${condition.value}n`;
    case "le":
      return `${condition.item}<=${condition.value}n`;
    case "gt":
      return `${condition.item}>${condition.value}n`;
    case "ge":
      return `${condition.item}>=${condition.value}n`;
    default:
      return assertNever(condition, "condition");
  }
}

function formatReads(reads: readonly ItemRead[] | null): string {
  if (reads === null) return "reads ?";
  return `reads ${reads.map((read) => `${read.item}=${formatValue(read.value)}`).join(" ")}`;
}

/** One line: `if x exists; read x; put x=0x01, add n+=1n -> committed reads x=0x00 added n=3n`. */
export function describeTransaction(txn: Transaction, result: TxnResult | undefined): string {
  const parts: string[] = [];
  if (txn.conditions.length > 0) parts.push(`if ${txn.conditions.map(formatCondition).join(", ")}`);
  if (txn.reads.length > 0) parts.push(`read ${txn.reads.join(",")}`);
  if (txn.writes.length > 0) {
    const writes = txn.writes.map((write) => {
      switch (write.op) {
        case "put":
          return `put ${write.item}=${formatValue(write.value)}`;
        case "delete":
          return `delete ${write.item}`;
        case "add":
          return `add ${write.item}+=${write.delta}n`;
        default:
          return assertNever(write, "write");
      }
    });
    parts.push(writes.join(", "));
  }
  const text = parts.length > 0 ? parts.join("; ") : "empty txn";
  return `${text} -> ${result === undefined ? "?" : describeResult(result, txn.reads.length > 0)}`;
}

function describeResult(result: TxnResult, hasReads: boolean): string {
  switch (result.status) {
    case "committed": {
      const parts = ["committed"];
      if (hasReads || (result.reads !== null && result.reads.length > 0))
        parts.push(formatReads(result.reads));
      if (result.added !== null && result.added.length > 0) {
        parts.push(`added ${result.added.map((add) => `${add.item}=${add.value}n`).join(" ")}`);
      }
      return parts.join(" ");
    }
    case "condition_failed": {
      const text = `condition_failed #${result.condition}`;
      return hasReads ? `${text} ${formatReads(result.reads)}` : text;
    }
    case "rejected":
      return `rejected ${result.reason}${result.item === null ? "" : ` on ${result.item}`}`;
    default:
      return assertNever(result, "transaction result");
  }
}

/** The model of one cell for checkLinearizable. Each call returns an independent model. */
export function cellModel(): Model<CellModelState, CellModelInput, TxnResult> {
  // Keys are asked for once per linearized step; states are immutable, so remember them.
  const keys = new WeakMap<CellModelState, string>();
  return {
    init: () => EMPTY_CELL_STATE,
    step(state, input, output) {
      const outcome = applyTransaction(state, input.txn);
      if (output === undefined) return outcome.next;
      return resultMatches(outcome.result, output) ? outcome.next : null;
    },
    key(state) {
      let key = keys.get(state);
      if (key === undefined) {
        key = cellStateKey(state);
        keys.set(state, key);
      }
      return key;
    },
    describe: (input, output) => describeTransaction(input.txn, output),
    describeState(state) {
      if (state.items.size === 0) return "empty";
      const names = [...state.items.keys()].sort();
      return names.map((name) => `${name}=${formatValue(state.items.get(name) as Value)}`).join(" ");
    },
  };
}
