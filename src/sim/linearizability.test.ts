import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Transaction, TxnResult, Value } from "../cell/types.ts";
import { Prng } from "../core/index.ts";
import {
  applyTransaction,
  type CellModelInput,
  type CellModelState,
  cellModel,
  EMPTY_CELL_STATE,
} from "./cell-model.ts";
import { type CheckResult, checkLinearizable, type HistoryOperation, type Model } from "./linearizability.ts";

// ---- a register model

type RegisterInput = { readonly kind: "write"; readonly value: number } | { readonly kind: "read" };
type RegisterOutput = number | "ok";

const registerModel: Model<number, RegisterInput, RegisterOutput> = {
  init: () => 0,
  step(state, input, output) {
    if (input.kind === "write") return output === undefined || output === "ok" ? input.value : null;
    return output === undefined || output === state ? state : null;
  },
  key: (state) => String(state),
  describe: (input, output) =>
    input.kind === "write"
      ? `write ${input.value}`
      : `read -> ${output === undefined ? "?" : String(output)}`,
};

type RegisterOp = HistoryOperation<RegisterInput, RegisterOutput>;

function write(
  id: number,
  client: number,
  value: number,
  callMs: number,
  returnMs: number | null,
): RegisterOp {
  return {
    id,
    client,
    input: { kind: "write", value },
    callMs,
    returnMs,
    output: returnMs === null ? undefined : "ok",
  };
}

function read(id: number, client: number, value: number, callMs: number, returnMs: number): RegisterOp {
  return { id, client, input: { kind: "read" }, callMs, returnMs, output: value };
}

// ---- the same scenarios against the cell model: a register is item "x" holding bytes [value]

type CellOp = HistoryOperation<CellModelInput, TxnResult>;

const bytes = (value: number): Uint8Array => Uint8Array.of(value);

function cellPut(id: number, client: number, value: number, callMs: number, returnMs: number | null): CellOp {
  return {
    id,
    client,
    input: { txn: { conditions: [], reads: [], writes: [{ item: "x", op: "put", value: bytes(value) }] } },
    callMs,
    returnMs,
    output: returnMs === null ? undefined : { status: "committed", reads: [], added: [] },
  };
}

function cellGet(id: number, client: number, value: number | null, callMs: number, returnMs: number): CellOp {
  return {
    id,
    client,
    input: { txn: { conditions: [], reads: ["x"], writes: [] } },
    callMs,
    returnMs,
    output: {
      status: "committed",
      reads: [{ item: "x", value: value === null ? null : bytes(value) }],
      added: [],
    },
  };
}

function cellAdd(
  id: number,
  client: number,
  delta: bigint,
  result: bigint | null,
  callMs: number,
  returnMs: number | null,
): CellOp {
  return {
    id,
    client,
    input: { txn: { conditions: [], reads: [], writes: [{ item: "n", op: "add", delta }] } },
    callMs,
    returnMs,
    output:
      returnMs === null || result === null
        ? undefined
        : { status: "committed", reads: [], added: [{ item: "n", value: result }] },
  };
}

const checkRegister = (history: readonly RegisterOp[]): CheckResult =>
  checkLinearizable(history, registerModel);
const checkCell = (history: readonly CellOp[]): CheckResult => checkLinearizable(history, cellModel());

/** Each scenario once for the register model and once for the cell model (0 stands for "missing"). */
interface Scenario {
  readonly name: string;
  readonly expected: CheckResult["status"];
  readonly ops: readonly (
    | { readonly w: number; readonly c: number; readonly call: number; readonly ret: number | null }
    | { readonly r: number; readonly c: number; readonly call: number; readonly ret: number }
  )[];
}

const scenarios: readonly Scenario[] = [
  {
    name: "a sequential history",
    expected: "ok",
    ops: [
      { r: 0, c: 0, call: 0, ret: 1 },
      { w: 1, c: 0, call: 2, ret: 3 },
      { r: 1, c: 1, call: 4, ret: 5 },
      { w: 2, c: 1, call: 6, ret: 7 },
      { r: 2, c: 0, call: 8, ret: 9 },
    ],
  },
  {
    name: "a stale read after a completed write",
    expected: "violation",
    ops: [
      { w: 1, c: 0, call: 0, ret: 10 },
      { w: 2, c: 0, call: 20, ret: 30 },
      { r: 1, c: 1, call: 40, ret: 50 },
    ],
  },
  {
    name: "concurrent overlapping operations that can be ordered",
    expected: "ok",
    ops: [
      { w: 1, c: 0, call: 0, ret: 100 },
      { w: 2, c: 1, call: 10, ret: 90 },
      { r: 2, c: 2, call: 20, ret: 30 },
      { r: 1, c: 3, call: 40, ret: 120 },
      { r: 1, c: 2, call: 130, ret: 140 },
    ],
  },
  {
    name: "a read of a value never written",
    expected: "violation",
    ops: [
      { w: 1, c: 0, call: 0, ret: 100 },
      { r: 7, c: 1, call: 10, ret: 90 },
    ],
  },
  {
    name: "an open write whose effect is seen later",
    expected: "ok",
    ops: [
      { w: 1, c: 0, call: 0, ret: 10 },
      { w: 2, c: 1, call: 20, ret: null },
      { r: 1, c: 2, call: 30, ret: 40 },
      { r: 2, c: 2, call: 500, ret: 510 },
      { r: 2, c: 3, call: 600, ret: 610 },
    ],
  },
  {
    name: "an open write never seen",
    expected: "ok",
    ops: [
      { w: 1, c: 0, call: 0, ret: 10 },
      { w: 2, c: 1, call: 20, ret: null },
      { r: 1, c: 2, call: 30, ret: 40 },
      { r: 1, c: 2, call: 500, ret: 510 },
    ],
  },
  {
    name: "an open write seen, then unseen",
    expected: "violation",
    ops: [
      { w: 1, c: 0, call: 0, ret: 10 },
      { w: 2, c: 1, call: 20, ret: null },
      { r: 2, c: 2, call: 30, ret: 40 },
      { r: 1, c: 2, call: 500, ret: 510 },
    ],
  },
  {
    // Porcupine's TestRegisterModel, second history (the classic non-linearizable register).
    name: "the classic non-linearizable register history",
    expected: "violation",
    ops: [
      { w: 200, c: 0, call: 0, ret: 100 },
      { r: 200, c: 1, call: 10, ret: 30 },
      { r: 0, c: 2, call: 40, ret: 90 },
    ],
  },
  {
    // Porcupine's TestRegisterModel, first history: the same shape, but the reads overlap.
    name: "the classic linearizable register history",
    expected: "ok",
    ops: [
      { w: 100, c: 0, call: 0, ret: 100 },
      { r: 100, c: 1, call: 25, ret: 75 },
      { r: 0, c: 2, call: 30, ret: 60 },
    ],
  },
  {
    name: "a return and a call at the same instant (concurrent, not ordered)",
    expected: "ok",
    ops: [
      { w: 1, c: 0, call: 0, ret: 10 },
      { r: 0, c: 1, call: 10, ret: 20 },
    ],
  },
  {
    name: "a return strictly before a call (ordered)",
    expected: "violation",
    ops: [
      { w: 1, c: 0, call: 0, ret: 10 },
      { r: 0, c: 1, call: 11, ret: 20 },
    ],
  },
];

function registerHistory(scenario: Scenario): RegisterOp[] {
  return scenario.ops.map((op, id) =>
    "w" in op ? write(id, op.c, op.w, op.call, op.ret) : read(id, op.c, op.r, op.call, op.ret),
  );
}

function cellHistory(scenario: Scenario): CellOp[] {
  return scenario.ops.map((op, id) =>
    "w" in op
      ? cellPut(id, op.c, op.w, op.call, op.ret)
      : cellGet(id, op.c, op.r === 0 ? null : op.r, op.call, op.ret),
  );
}

describe("checkLinearizable: scenarios", () => {
  for (const scenario of scenarios) {
    it(`register model: ${scenario.name} -> ${scenario.expected}`, () => {
      expect(checkRegister(registerHistory(scenario)).status).toBe(scenario.expected);
    });
    it(`cell model: ${scenario.name} -> ${scenario.expected}`, () => {
      expect(checkCell(cellHistory(scenario)).status).toBe(scenario.expected);
    });
  }

  it("accepts the empty history", () => {
    expect(checkRegister([])).toEqual({ status: "ok", operations: 0 });
  });

  it("does not depend on the order of the history array", () => {
    const classic = scenarios.find((scenario) => scenario.name.startsWith("the classic non"));
    expect(classic).toBeDefined();
    const history = registerHistory(classic as Scenario).reverse();
    expect(checkRegister(history).status).toBe("violation");
  });
});

describe("checkLinearizable: add", () => {
  it("flags a lost update: two adds both return the same new value", () => {
    const history = [cellAdd(0, 0, 1n, 1n, 0, 100), cellAdd(1, 1, 1n, 1n, 10, 90)];
    expect(checkCell(history).status).toBe("violation");
  });

  it("accepts concurrent adds that return distinct values in either order", () => {
    const history = [cellAdd(0, 0, 1n, 2n, 0, 100), cellAdd(1, 1, 1n, 1n, 10, 90)];
    expect(checkCell(history).status).toBe("ok");
  });

  it("counts an open add that a later add observes", () => {
    const history = [cellAdd(0, 0, 5n, null, 0, null), cellAdd(1, 1, 1n, 6n, 100, 110)];
    expect(checkCell(history).status).toBe("ok");
  });

  it("flags a lost update after an open add was observed", () => {
    const history = [
      cellAdd(0, 0, 5n, null, 0, null),
      cellAdd(1, 1, 1n, 6n, 100, 110),
      cellAdd(2, 1, 1n, 2n, 120, 130),
    ];
    expect(checkCell(history).status).toBe("violation");
  });
});

describe("checkLinearizable: results", () => {
  it("explains a violation with the operations around the dead end", () => {
    const history = [write(10, 0, 1, 0, 10), write(11, 0, 2, 20, 30), read(12, 1, 1, 40, 50)];
    const result = checkRegister(history);
    expect(result.status).toBe("violation");
    if (result.status !== "violation") return;
    expect(result.longestPrefix).toEqual([10, 11]);
    expect(result.explanation).toContain("#12");
    expect(result.explanation).toContain("read -> 1");
    expect(result.explanation).toContain("#11");
    expect(result.operations).toBe(3);
  });

  it("names the pending candidates in the explanation", () => {
    const history = [write(1, 0, 200, 0, 100), read(2, 1, 200, 10, 30), read(3, 2, 0, 40, 90)];
    const result = checkRegister(history);
    expect(result.status).toBe("violation");
    if (result.status !== "violation") return;
    expect(result.longestPrefix).toEqual([1, 2]);
    expect(result.explanation).toContain("#3");
  });

  it("answers unknown when the step budget runs out", () => {
    const history = registerHistory(scenarios[2] as Scenario);
    const result = checkLinearizable(history, registerModel, { maxSteps: 3 });
    expect(result.status).toBe("unknown");
    if (result.status === "unknown") expect(result.reason).toContain("3 steps");
  });

  it("rejects malformed histories as bugs", () => {
    expect(() => checkRegister([write(1, 0, 1, 0, 10), write(1, 1, 2, 0, 10)])).toThrow(/twice/);
    expect(() => checkRegister([write(1, 0, 1, 10, 5)])).toThrow(/before its call/);
  });
});

// ---- random histories

const ITEMS = ["a", "b", "c"] as const;

const valueArbitrary: fc.Arbitrary<Value> = fc.oneof(
  fc.uint8Array({ maxLength: 2, min: 0, max: 3 }),
  fc.bigInt({ min: -3n, max: 3n }),
  fc.boolean(),
);
const itemArbitrary = fc.constantFrom(...ITEMS);
const transactionArbitrary: fc.Arbitrary<Transaction> = fc.record({
  conditions: fc.array(
    fc.oneof(
      fc.record({ item: itemArbitrary, op: fc.constantFrom("exists" as const, "missing" as const) }),
      fc.record({ item: itemArbitrary, op: fc.constant("equals" as const), value: valueArbitrary }),
      fc.record({
        item: itemArbitrary,
        op: fc.constantFrom("lt" as const, "le" as const, "gt" as const, "ge" as const),
        value: fc.bigInt({ min: -3n, max: 3n }),
      }),
    ),
    { maxLength: 2 },
  ),
  reads: fc.uniqueArray(itemArbitrary, { maxLength: 3 }),
  writes: fc.array(
    fc.oneof(
      {
        weight: 3,
        arbitrary: fc.record({ item: itemArbitrary, op: fc.constant("put" as const), value: valueArbitrary }),
      },
      { weight: 1, arbitrary: fc.record({ item: itemArbitrary, op: fc.constant("delete" as const) }) },
      {
        weight: 3,
        arbitrary: fc.record({
          item: itemArbitrary,
          op: fc.constant("add" as const),
          delta: fc.bigInt({ min: -2n, max: 2n }),
        }),
      },
    ),
    { maxLength: 3 },
  ),
});

interface Timing {
  /** Gap between this operation's linearization point and the previous one's (> 0). */
  readonly gapMs: number;
  readonly beforeMs: number;
  readonly afterMs: number;
}

const timingArbitrary: fc.Arbitrary<Timing> = fc.record({
  gapMs: fc.integer({ min: 1, max: 10 }),
  beforeMs: fc.integer({ min: 0, max: 40 }),
  afterMs: fc.integer({ min: 0, max: 40 }),
});

/** Runs transactions sequentially and returns each one's result. */
function runSequentially(txns: readonly Transaction[]): TxnResult[] {
  let state: CellModelState = EMPTY_CELL_STATE;
  return txns.map((txn) => {
    const outcome = applyTransaction(state, txn);
    state = outcome.next;
    return outcome.result;
  });
}

/**
 * Stretches a sequential execution into intervals around strictly increasing linearization
 * points, so the sequential order is always one legal linearization. Sequential: no overlap.
 */
function stretch(
  txns: readonly Transaction[],
  results: readonly TxnResult[],
  timings: readonly Timing[],
  sequential: boolean,
  openMask: readonly boolean[] = [],
): CellOp[] {
  let pointMs = 1000;
  return txns.map((txn, id) => {
    const timing = timings[id % timings.length] as Timing;
    pointMs += sequential ? 2 : timing.gapMs;
    const open = openMask[id] === true;
    const callMs = sequential ? pointMs : pointMs - timing.beforeMs;
    const returnMs = open ? null : sequential ? pointMs : pointMs + timing.afterMs;
    return { id, client: id % 8, input: { txn }, callMs, returnMs, output: open ? undefined : results[id] };
  });
}

/** A different value of the same item: a stale or future value when one exists, else a fresh one. */
function corruptValue(actual: Value | null, candidates: readonly (Value | null)[], prng: Prng): Value | null {
  const different = candidates.filter((candidate) => !sameRead(candidate, actual));
  if (different.length > 0) return prng.pick(different);
  return Uint8Array.of(0xee, 0xee);
}

function sameRead(a: Value | null, b: Value | null): boolean {
  if (a === null || b === null) return a === b;
  if (a instanceof Uint8Array) {
    return b instanceof Uint8Array && a.length === b.length && a.every((byte, i) => byte === b[i]);
  }
  return typeof a === typeof b && a === b;
}

/** Replaces the value of one read of one operation; null when the history has no read. */
function corruptOneRead(history: readonly CellOp[], prng: Prng): CellOp[] | null {
  const withReads = history.filter(
    (op) =>
      op.output !== undefined &&
      op.output.status !== "rejected" &&
      op.output.reads !== null &&
      op.output.reads.length > 0,
  );
  if (withReads.length === 0) return null;
  const victim = prng.pick(withReads);
  const output = victim.output;
  if (output === undefined || output.status === "rejected" || output.reads === null) return null;
  const readIndex = prng.below(output.reads.length);
  const target = output.reads[readIndex];
  if (target === undefined) return null;
  // Every value the item held in the sequential execution is a plausible wrong answer.
  const seen: (Value | null)[] = [null];
  for (const op of history) {
    if (op.output !== undefined && op.output.status !== "rejected" && op.output.reads !== null) {
      for (const other of op.output.reads) if (other.item === target.item) seen.push(other.value);
    }
    for (const written of op.input.txn.writes)
      if (written.item === target.item && written.op === "put") seen.push(written.value);
  }
  const reads = output.reads.map((entry, i) =>
    i === readIndex ? { item: entry.item, value: corruptValue(entry.value, seen, prng) } : entry,
  );
  const corrupted: TxnResult = { ...output, reads };
  return history.map((op) => (op === victim ? { ...op, output: corrupted } : op));
}

describe("checkLinearizable: random histories (cell model)", () => {
  it("accepts every stretched sequential execution", () => {
    fc.assert(
      fc.property(
        fc.array(transactionArbitrary, { minLength: 1, maxLength: 40 }),
        fc.array(timingArbitrary, { minLength: 1, maxLength: 40 }),
        fc.array(fc.boolean(), { maxLength: 40 }).map((mask) => mask.map((open, i) => open && i % 4 === 0)),
        (txns, timings, openMask) => {
          const history = stretch(txns, runSequentially(txns), timings, false, openMask);
          const result = checkCell(history);
          expect(result.status, JSON.stringify(result)).toBe("ok");
        },
      ),
      { numRuns: 300 },
    );
  });

  it("always detects a corrupted read in a strictly sequential history", () => {
    fc.assert(
      fc.property(
        fc.array(transactionArbitrary, { minLength: 2, maxLength: 30 }),
        fc.integer({ min: 1, max: 2 ** 31 - 1 }),
        (txns, seed) => {
          const history = stretch(txns, runSequentially(txns), [], true);
          const corrupted = corruptOneRead(history, new Prng(seed));
          fc.pre(corrupted !== null);
          expect(checkCell(corrupted as CellOp[]).status).toBe("violation");
        },
      ),
      { numRuns: 300 },
    );
  });

  it("detects most corrupted reads in overlapping histories", () => {
    const prng = new Prng(20240611);
    let trials = 0;
    let detected = 0;
    while (trials < 400) {
      const txns = fc.sample(fc.array(transactionArbitrary, { minLength: 4, maxLength: 30 }), {
        numRuns: 1,
        seed: prng.nextUint32() | 0,
      })[0] as Transaction[];
      const timings = Array.from({ length: txns.length }, () => ({
        gapMs: prng.between(1, 10),
        beforeMs: prng.between(0, 15),
        afterMs: prng.between(0, 15),
      }));
      const history = stretch(txns, runSequentially(txns), timings, false);
      const corrupted = corruptOneRead(history, prng);
      if (corrupted === null) continue;
      trials++;
      const status = checkCell(corrupted).status;
      expect(status).not.toBe("unknown");
      if (status === "violation") detected++;
    }
    console.log(`corrupted reads detected in overlapping histories: ${detected}/${trials}`);
    expect(detected / trials).toBeGreaterThan(0.5);
  });
});

describe("checkLinearizable: random histories (register model)", () => {
  it("accepts stretched sequential executions and catches corrupted reads when sequential", () => {
    fc.assert(
      fc.property(
        fc.array(fc.option(fc.integer({ min: 1, max: 4 }), { nil: null }), { minLength: 1, maxLength: 40 }),
        fc.array(timingArbitrary, { minLength: 1, maxLength: 40 }),
        fc.nat(),
        (steps, timings, pick) => {
          let value = 0;
          let pointMs = 0;
          const history: RegisterOp[] = [];
          const sequential: RegisterOp[] = [];
          steps.forEach((step, id) => {
            const timing = timings[id % timings.length] as Timing;
            pointMs += timing.gapMs;
            const callMs = pointMs - timing.beforeMs;
            const returnMs = pointMs + timing.afterMs;
            if (step === null) {
              history.push(read(id, id % 8, value, callMs, returnMs));
              sequential.push(read(id, id % 8, value, pointMs, pointMs));
            } else {
              value = step;
              history.push(write(id, id % 8, step, callMs, returnMs));
              sequential.push(write(id, id % 8, step, pointMs, pointMs));
            }
          });
          expect(checkRegister(history).status).toBe("ok");
          expect(checkRegister(sequential).status).toBe("ok");
          const reads = sequential.filter((op) => op.input.kind === "read");
          if (reads.length === 0) return;
          const victim = reads[pick % reads.length] as RegisterOp;
          const corrupted = sequential.map((op) =>
            op === victim ? { ...op, output: ((victim.output as number) + 1) % 5 } : op,
          );
          expect(checkRegister(corrupted).status).toBe("violation");
        },
      ),
      { numRuns: 300 },
    );
  });
});

// ---- performance

/**
 * A linearizable history of `clients` closed-loop clients: each client calls, the operation
 * takes effect at a random instant of its interval, and the client calls again after it
 * returns. Effects are applied in the order of those instants, so the history is linearizable.
 */
function simulatedHistory(prng: Prng, operations: number, clients: number, openChance: number): CellOp[] {
  const txnFor = (): Transaction => {
    const item = prng.pick(["a", "b", "c", "d"]);
    switch (prng.below(4)) {
      case 0:
        return { conditions: [], reads: [item], writes: [] };
      case 1:
        return {
          conditions: [],
          reads: [],
          writes: [{ item, op: "put", value: Uint8Array.of(prng.below(256)) }],
        };
      case 2:
        return { conditions: [], reads: [], writes: [{ item: `n${item}`, op: "add", delta: 1n }] };
      default:
        return {
          conditions: [{ item, op: "exists" }],
          reads: [item, `n${item}`],
          writes: [{ item, op: "put", value: Uint8Array.of(prng.below(256)) }],
        };
    }
  };
  const planned: {
    id: number;
    client: number;
    txn: Transaction;
    callMs: number;
    pointMs: number;
    returnMs: number;
    open: boolean;
  }[] = [];
  const nextCallMs = Array.from({ length: clients }, () => prng.below(10));
  for (let id = 0; id < operations; id++) {
    let client = 0;
    for (let c = 1; c < clients; c++)
      if ((nextCallMs[c] as number) < (nextCallMs[client] as number)) client = c;
    const callMs = nextCallMs[client] as number;
    const durationMs = prng.between(1, 40);
    const returnMs = callMs + durationMs;
    const pointMs = callMs + prng.float() * durationMs;
    const open = prng.chance(openChance);
    planned.push({ id, client, txn: txnFor(), callMs, pointMs, returnMs, open });
    nextCallMs[client] = returnMs + prng.below(5) + (open ? 50 : 0);
  }
  const byPoint = [...planned].sort((a, b) => a.pointMs - b.pointMs);
  const results = new Map<number, TxnResult>();
  let state: CellModelState = EMPTY_CELL_STATE;
  for (const op of byPoint) {
    const outcome = applyTransaction(state, op.txn);
    state = outcome.next;
    results.set(op.id, outcome.result);
  }
  return planned.map((op) => ({
    id: op.id,
    client: op.client,
    input: { txn: op.txn },
    callMs: op.callMs,
    returnMs: op.open ? null : op.returnMs,
    output: op.open ? undefined : results.get(op.id),
  }));
}

describe("checkLinearizable: performance", () => {
  it("checks a 2,000-operation history of 8 concurrent clients within a few seconds", () => {
    const history = simulatedHistory(new Prng(7), 2000, 8, 0);
    // Wall-clock time is measured here only, in a test, to report the checker's speed.
    const startMs = performance.now();
    const result = checkCell(history);
    const elapsedMs = performance.now() - startMs;
    console.log(`2,000 operations, 8 clients: ${result.status} in ${elapsedMs.toFixed(1)} ms`);
    expect(result.status).toBe("ok");
    expect(elapsedMs).toBeLessThan(5000);
  });

  it("checks a 2,000-operation history with 2% open operations within a few seconds", () => {
    const history = simulatedHistory(new Prng(11), 2000, 8, 0.02);
    const startMs = performance.now();
    const result = checkCell(history);
    const elapsedMs = performance.now() - startMs;
    console.log(`2,000 operations, 8 clients, 2% open: ${result.status} in ${elapsedMs.toFixed(1)} ms`);
    expect(result.status).toBe("ok");
    expect(elapsedMs).toBeLessThan(5000);
  });

  it("finds a corrupted read buried in a 2,000-operation history", () => {
    const history = simulatedHistory(new Prng(7), 2000, 8, 0);
    const prng = new Prng(3);
    const corrupted = corruptOneRead(history, prng);
    expect(corrupted).not.toBeNull();
    const startMs = performance.now();
    const result = checkCell(corrupted as CellOp[]);
    const elapsedMs = performance.now() - startMs;
    console.log(`2,000 operations with one corrupted read: ${result.status} in ${elapsedMs.toFixed(1)} ms`);
    expect(result.status).not.toBe("ok");
  });
});
