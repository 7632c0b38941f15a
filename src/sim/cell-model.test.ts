import { describe, expect, it } from "vitest";
import type { Condition, Transaction, TxnResult, Value, Write } from "../cell/types.ts";
import {
  applyTransaction,
  type CellModelState,
  cellModel,
  cellStateKey,
  describeTransaction,
  EMPTY_CELL_STATE,
  resultMatches,
  valuesEqual,
} from "./cell-model.ts";

const stateOf = (entries: readonly (readonly [string, Value])[]): CellModelState => ({
  items: new Map(entries),
});

const txn = (parts: {
  conditions?: readonly Condition[];
  reads?: readonly string[];
  writes?: readonly Write[];
}): Transaction => ({
  conditions: parts.conditions ?? [],
  reads: parts.reads ?? [],
  writes: parts.writes ?? [],
});

const committed = (
  reads: readonly { item: string; value: Value | null }[],
  added: readonly { item: string; value: bigint }[] = [],
): TxnResult => ({ status: "committed", reads, added });

describe("applyTransaction", () => {
  it("reads the values from before the transaction's writes", () => {
    const state = stateOf([["x", Uint8Array.of(1)]]);
    const outcome = applyTransaction(
      state,
      txn({
        reads: ["x", "y"],
        writes: [
          { item: "x", op: "put", value: Uint8Array.of(2) },
          { item: "y", op: "put", value: true },
        ],
      }),
    );
    expect(outcome.result).toEqual(
      committed([
        { item: "x", value: Uint8Array.of(1) },
        { item: "y", value: null },
      ]),
    );
    expect(outcome.next.items.get("x")).toEqual(Uint8Array.of(2));
    expect(outcome.next.items.get("y")).toBe(true);
    // The old state is untouched.
    expect(state.items.get("x")).toEqual(Uint8Array.of(1));
    expect(state.items.has("y")).toBe(false);
  });

  it("reports the first failing condition with the reads and writes nothing", () => {
    const state = stateOf([["x", 5n]]);
    const outcome = applyTransaction(
      state,
      txn({
        conditions: [
          { item: "x", op: "exists" },
          { item: "y", op: "exists" },
          { item: "z", op: "exists" },
        ],
        reads: ["x"],
        writes: [{ item: "x", op: "delete" }],
      }),
    );
    expect(outcome.result).toEqual({
      status: "condition_failed",
      condition: 1,
      reads: [{ item: "x", value: 5n }],
    });
    expect(outcome.next).toBe(state);
  });

  const conditionCases: readonly [string, Value | undefined, Condition, boolean][] = [
    ["exists on a present item", 1n, { item: "x", op: "exists" }, true],
    ["exists on a missing item", undefined, { item: "x", op: "exists" }, false],
    ["missing on a missing item", undefined, { item: "x", op: "missing" }, true],
    ["missing on a present item", false, { item: "x", op: "missing" }, false],
    [
      "equals, same bytes",
      Uint8Array.of(1, 2),
      { item: "x", op: "equals", value: Uint8Array.of(1, 2) },
      true,
    ],
    ["equals, other bytes", Uint8Array.of(1, 2), { item: "x", op: "equals", value: Uint8Array.of(1) }, false],
    ["equals, same integer", 7n, { item: "x", op: "equals", value: 7n }, true],
    ["equals, integer vs bytes", 1n, { item: "x", op: "equals", value: Uint8Array.of(1) }, false],
    ["equals, boolean vs integer", true, { item: "x", op: "equals", value: 1n }, false],
    ["equals, same boolean", false, { item: "x", op: "equals", value: false }, true],
    ["equals on a missing item", undefined, { item: "x", op: "equals", value: false }, false],
    ["lt true", 1n, { item: "x", op: "lt", value: 2n }, true],
    ["lt equal", 2n, { item: "x", op: "lt", value: 2n }, false],
    ["le equal", 2n, { item: "x", op: "le", value: 2n }, true],
    ["gt true", -1n, { item: "x", op: "gt", value: -2n }, true],
    ["ge false", -3n, { item: "x", op: "ge", value: -2n }, false],
    ["lt on a missing item", undefined, { item: "x", op: "lt", value: 100n }, false],
    ["ge on a missing item", undefined, { item: "x", op: "ge", value: -100n }, false],
    ["lt on bytes", Uint8Array.of(0), { item: "x", op: "lt", value: 100n }, false],
    ["gt on a boolean", true, { item: "x", op: "gt", value: -100n }, false],
  ];
  for (const [name, current, condition, holds] of conditionCases) {
    it(`condition: ${name} -> ${holds}`, () => {
      const state = current === undefined ? EMPTY_CELL_STATE : stateOf([["x", current]]);
      const result = applyTransaction(state, txn({ conditions: [condition] })).result;
      expect(result.status).toBe(holds ? "committed" : "condition_failed");
    });
  }

  it("adds to an integer, counting a missing item as 0n, and reports the new values", () => {
    const state = stateOf([["n", 10n]]);
    const outcome = applyTransaction(
      state,
      txn({
        writes: [
          { item: "n", op: "add", delta: -3n },
          { item: "m", op: "add", delta: 4n },
          { item: "n", op: "add", delta: 1n },
        ],
      }),
    );
    expect(outcome.result).toEqual(
      committed(
        [],
        [
          { item: "n", value: 7n },
          { item: "m", value: 4n },
          { item: "n", value: 8n },
        ],
      ),
    );
    expect(outcome.next.items.get("n")).toBe(8n);
    expect(outcome.next.items.get("m")).toBe(4n);
  });

  it("rejects the whole transaction on an add to a non-integer, changing nothing", () => {
    const state = stateOf([["flag", true]]);
    const outcome = applyTransaction(
      state,
      txn({
        writes: [
          { item: "x", op: "put", value: 1n },
          { item: "flag", op: "add", delta: 1n },
        ],
      }),
    );
    expect(outcome.result).toMatchObject({ status: "rejected", reason: "type_mismatch", item: "flag" });
    expect(outcome.next).toBe(state);
  });

  it("applies writes in order within one transaction", () => {
    const outcome = applyTransaction(
      EMPTY_CELL_STATE,
      txn({
        writes: [
          { item: "x", op: "put", value: 5n },
          { item: "x", op: "add", delta: 1n },
          { item: "y", op: "put", value: true },
          { item: "y", op: "delete" },
          { item: "z", op: "delete" },
        ],
      }),
    );
    expect(outcome.result).toEqual(committed([], [{ item: "x", value: 6n }]));
    expect([...outcome.next.items.entries()]).toEqual([["x", 6n]]);
  });

  it("evaluates conditions before an add that would mismatch", () => {
    const state = stateOf([["x", Uint8Array.of(1)]]);
    const outcome = applyTransaction(
      state,
      txn({ conditions: [{ item: "x", op: "missing" }], writes: [{ item: "x", op: "add", delta: 1n }] }),
    );
    expect(outcome.result.status).toBe("condition_failed");
  });
});

describe("resultMatches", () => {
  it("compares read values by type and value", () => {
    const expected = committed([{ item: "x", value: Uint8Array.of(1, 2) }]);
    expect(resultMatches(expected, committed([{ item: "x", value: Uint8Array.of(1, 2) }]))).toBe(true);
    expect(resultMatches(expected, committed([{ item: "x", value: Uint8Array.of(1, 3) }]))).toBe(false);
    expect(resultMatches(expected, committed([{ item: "x", value: 1n }]))).toBe(false);
    expect(resultMatches(expected, committed([{ item: "x", value: null }]))).toBe(false);
    expect(resultMatches(expected, committed([]))).toBe(false);
    expect(resultMatches(expected, committed([{ item: "y", value: Uint8Array.of(1, 2) }]))).toBe(false);
  });

  it("accepts reads left out of a result kept for a retry", () => {
    const expected = committed([{ item: "x", value: 3n }]);
    expect(resultMatches(expected, { status: "committed", reads: null, added: [] })).toBe(true);
  });

  it("compares added values", () => {
    const expected = committed([], [{ item: "n", value: 2n }]);
    expect(resultMatches(expected, committed([], [{ item: "n", value: 2n }]))).toBe(true);
    expect(resultMatches(expected, committed([], [{ item: "n", value: 1n }]))).toBe(false);
    expect(resultMatches(expected, committed([], []))).toBe(false);
  });

  it("compares the failed condition's index and the status", () => {
    const expected: TxnResult = { status: "condition_failed", condition: 1, reads: [] };
    expect(resultMatches(expected, { status: "condition_failed", condition: 1, reads: [] })).toBe(true);
    expect(resultMatches(expected, { status: "condition_failed", condition: 0, reads: [] })).toBe(false);
    expect(resultMatches(expected, committed([]))).toBe(false);
  });

  it("accepts only a matching type_mismatch rejection", () => {
    const expected: TxnResult = { status: "rejected", reason: "type_mismatch", item: "x", detail: "model" };
    const observed = (reason: "type_mismatch" | "cell_full", item: string | null): TxnResult => ({
      status: "rejected",
      reason,
      item,
      detail: "cell",
    });
    expect(resultMatches(expected, observed("type_mismatch", "x"))).toBe(true);
    expect(resultMatches(expected, observed("type_mismatch", null))).toBe(true);
    expect(resultMatches(expected, observed("type_mismatch", "y"))).toBe(false);
    expect(resultMatches(expected, observed("cell_full", "x"))).toBe(false);
  });
});

describe("cellModel", () => {
  const model = cellModel();
  const put = txn({ writes: [{ item: "x", op: "put", value: 1n }] });

  it("steps an open operation to the model's next state", () => {
    const next = model.step(model.init(), { txn: put }, undefined);
    expect(next?.items.get("x")).toBe(1n);
  });

  it("refuses results it does not model", () => {
    const observed: TxnResult = { status: "rejected", reason: "value_too_large", item: "x", detail: "" };
    expect(model.step(model.init(), { txn: put }, observed)).toBeNull();
  });

  it("keys states canonically and unambiguously", () => {
    const a = stateOf([
      ["x", 1n],
      ["y", true],
    ]);
    const b = stateOf([
      ["y", true],
      ["x", 1n],
    ]);
    expect(model.key(a)).toBe(model.key(b));
    const distinct: Value[] = [1n, Uint8Array.of(1), true, Uint8Array.of(), Uint8Array.of(0), 0n, false, -1n];
    const keys = distinct.map((value) => cellStateKey(stateOf([["x", value]])));
    expect(new Set(keys).size).toBe(distinct.length);
    // Item names cannot be confused with the separators.
    expect(cellStateKey(stateOf([["a=i1,b", 2n]]))).not.toBe(
      cellStateKey(
        stateOf([
          ["a", 1n],
          ["b", 2n],
        ]),
      ),
    );
    expect(model.key(model.init())).toBe("");
  });

  it("describes a transaction in one line", () => {
    const text = describeTransaction(
      txn({
        conditions: [{ item: "x", op: "ge", value: 1n }],
        reads: ["x"],
        writes: [
          { item: "y", op: "put", value: Uint8Array.of(0xab) },
          { item: "n", op: "add", delta: 2n },
        ],
      }),
      committed([{ item: "x", value: 3n }], [{ item: "n", value: 5n }]),
    );
    expect(text).toBe("if x>=1n; read x; put y=0xab, add n+=2n -> committed reads x=3n added n=5n");
    expect(text).not.toContain("\n");
    expect(describeTransaction(put, undefined)).toBe("put x=1n -> ?");
  });

  it("treats equal values as equal only with equal types", () => {
    expect(valuesEqual(Uint8Array.of(1), Uint8Array.of(1))).toBe(true);
    expect(valuesEqual(1n, 1n)).toBe(true);
    expect(valuesEqual(true, true)).toBe(true);
    expect(valuesEqual(1n, Uint8Array.of(1))).toBe(false);
    expect(valuesEqual(Uint8Array.of(1), 1n)).toBe(false);
    expect(valuesEqual(true, 1n)).toBe(false);
  });
});
