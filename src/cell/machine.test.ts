import { describe, expect, it } from "vitest";
import { DecodeError, limits } from "../core/index.ts";
import { encodeResult } from "./codec.ts";
import { CellMachine, itemBytes, leaseBytes, stampMsMax } from "./machine.ts";
import type {
  Command,
  CommandResult,
  Condition,
  ItemRead,
  LeaseOp,
  LeaseResult,
  Operation,
  Transaction,
  TxnResult,
  Value,
  Write,
} from "./types.ts";

/** A small fluent harness: one cell, one default session, a clock the test moves. */
class Cell {
  readonly machine = new CellMachine();
  nowMs = 1_000;
  private index = 0;
  private readonly seqs = new Map<number, number>();

  send(
    op: Operation,
    options: { session?: number; seq?: number; newSession?: boolean; stampMs?: number; ballot?: number } = {},
  ) {
    const session = options.session ?? 1;
    const seq = options.seq ?? (this.seqs.get(session) ?? 0) + 1;
    this.seqs.set(session, Math.max(seq, this.seqs.get(session) ?? 0));
    const command: Command = {
      version: 1,
      session,
      seq,
      newSession: options.newSession ?? seq === 1,
      op,
    };
    // Ballot 0 (entries that carry none): the cell's time follows the largest stamp.
    const result = this.machine.apply(command, {
      index: ++this.index,
      stampMs: options.stampMs ?? this.nowMs,
      stampBallot: options.ballot ?? 0,
    });
    this.machine.checkInvariants();
    return result;
  }

  txn(txn: Partial<Transaction>, options?: Parameters<Cell["send"]>[1]): TxnResult {
    const result = this.send(
      { type: "txn", txn: { conditions: [], reads: [], writes: [], ...txn } },
      options,
    );
    if (result.kind !== "txn") throw new Error(`expected a txn result, got ${result.kind}`);
    return result.result;
  }

  put(item: string, value: Value): this {
    expect(this.txn({ writes: [{ item, op: "put", value }] }).status).toBe("committed");
    return this;
  }

  lease(lease: LeaseOp, options?: Parameters<Cell["send"]>[1]): LeaseResult {
    const result = this.send({ type: "lease", lease }, options);
    if (result.kind !== "lease") throw new Error(`expected a lease result, got ${result.kind}`);
    return result.result;
  }

  value(item: string): Value | null {
    return this.machine.readItem(item);
  }
}

const bytes = (...values: number[]) => new Uint8Array(values);
const largest = (1n << BigInt(8 * limits.itemValueBytesMax)) - 1n;

interface TxnCase {
  readonly name: string;
  readonly given?: readonly (readonly [string, Value])[];
  readonly conditions?: readonly Condition[];
  readonly reads?: readonly string[];
  readonly writes?: readonly Write[];
  readonly expected:
    | TxnResult
    | { readonly status: "rejected"; readonly reason: string; readonly item: string | null };
  /** Items after the transaction (only those listed are checked). */
  readonly after?: readonly (readonly [string, Value | null])[];
}

const committed = (reads: ItemRead[] = [], added: { item: string; value: bigint }[] = []): TxnResult => ({
  status: "committed",
  reads,
  added,
});

const txnCases: readonly TxnCase[] = [
  // ---- reads
  {
    name: "read of a missing item gives null",
    reads: ["a"],
    expected: committed([{ item: "a", value: null }]),
  },
  {
    name: "reads come back in the order asked",
    given: [
      ["a", 1n],
      ["b", true],
    ],
    reads: ["b", "zz", "a"],
    expected: committed([
      { item: "b", value: true },
      { item: "zz", value: null },
      { item: "a", value: 1n },
    ]),
  },
  {
    name: "reads see the state before the transaction's writes",
    given: [["n", 1n]],
    reads: ["n"],
    writes: [{ item: "n", op: "add", delta: 1n }],
    expected: committed([{ item: "n", value: 1n }], [{ item: "n", value: 2n }]),
    after: [["n", 2n]],
  },
  // ---- conditions
  { name: "exists on a missing item fails", conditions: [{ item: "a", op: "exists" }], expected: failed(0) },
  {
    name: "missing on a missing item holds",
    conditions: [{ item: "a", op: "missing" }],
    expected: committed(),
  },
  {
    name: "missing on an existing item fails",
    given: [["a", false]],
    conditions: [{ item: "a", op: "missing" }],
    expected: failed(0),
  },
  {
    name: "equals on a missing item fails",
    conditions: [{ item: "a", op: "equals", value: 0n }],
    expected: failed(0),
  },
  {
    name: "equals compares bytes bytewise",
    given: [["a", bytes(1, 2, 3)]],
    conditions: [{ item: "a", op: "equals", value: bytes(1, 2, 3) }],
    expected: committed(),
  },
  {
    name: "equals fails on bytes of another length",
    given: [["a", bytes(1, 2, 3)]],
    conditions: [{ item: "a", op: "equals", value: bytes(1, 2) }],
    expected: failed(0),
  },
  {
    name: "equals needs the same type: 0n is not false",
    given: [["a", false]],
    conditions: [{ item: "a", op: "equals", value: 0n }],
    expected: failed(0),
  },
  {
    name: "equals needs the same type: 1n is not the byte 1",
    given: [["a", bytes(1)]],
    conditions: [{ item: "a", op: "equals", value: 1n }],
    expected: failed(0),
  },
  {
    name: "equals on booleans",
    given: [["a", true]],
    conditions: [{ item: "a", op: "equals", value: true }],
    expected: committed(),
  },
  {
    name: "lt on a missing item is false",
    conditions: [{ item: "a", op: "lt", value: 5n }],
    expected: failed(0),
  },
  {
    name: "lt on a byte item is false",
    given: [["a", bytes(1)]],
    conditions: [{ item: "a", op: "lt", value: 5n }],
    expected: failed(0),
  },
  {
    name: "ge on a boolean item is false",
    given: [["a", true]],
    conditions: [{ item: "a", op: "ge", value: 0n }],
    expected: failed(0),
  },
  {
    name: "lt, le, gt, ge compare integers, negatives included",
    given: [["a", -5n]],
    conditions: [
      { item: "a", op: "lt", value: -4n },
      { item: "a", op: "le", value: -5n },
      { item: "a", op: "gt", value: -6n },
      { item: "a", op: "ge", value: -5n },
    ],
    expected: committed(),
  },
  {
    name: "lt is strict",
    given: [["a", 5n]],
    conditions: [{ item: "a", op: "lt", value: 5n }],
    expected: failed(0),
  },
  {
    name: "the first false condition is reported, with the reads",
    given: [["a", 1n]],
    conditions: [
      { item: "a", op: "exists" },
      { item: "b", op: "exists" },
      { item: "c", op: "exists" },
    ],
    reads: ["a"],
    writes: [{ item: "a", op: "put", value: 2n }],
    expected: { status: "condition_failed", condition: 1, reads: [{ item: "a", value: 1n }] },
    after: [["a", 1n]],
  },
  {
    name: "several conditions on one item are allowed",
    given: [["a", 7n]],
    conditions: [
      { item: "a", op: "ge", value: 0n },
      { item: "a", op: "lt", value: 10n },
    ],
    writes: [{ item: "a", op: "put", value: 8n }],
    expected: committed(),
    after: [["a", 8n]],
  },
  // ---- writes
  {
    name: "put replaces a value of another type",
    given: [["a", 1n]],
    writes: [{ item: "a", op: "put", value: bytes(9) }],
    expected: committed(),
    after: [["a", bytes(9)]],
  },
  {
    name: "delete of a missing item is fine",
    writes: [{ item: "a", op: "delete" }],
    expected: committed(),
    after: [["a", null]],
  },
  {
    name: "delete removes an item",
    given: [["a", 1n]],
    writes: [{ item: "a", op: "delete" }],
    expected: committed(),
    after: [["a", null]],
  },
  {
    name: "add to a missing item counts it as 0n",
    writes: [{ item: "n", op: "add", delta: -3n }],
    expected: committed([], [{ item: "n", value: -3n }]),
    after: [["n", -3n]],
  },
  {
    name: "add 0n to a missing item creates 0n",
    writes: [{ item: "n", op: "add", delta: 0n }],
    expected: committed([], [{ item: "n", value: 0n }]),
    after: [["n", 0n]],
  },
  {
    name: "add may go below zero",
    given: [["n", 3n]],
    writes: [{ item: "n", op: "add", delta: -5n }],
    expected: committed([], [{ item: "n", value: -2n }]),
  },
  {
    name: "add results come in write order",
    writes: [
      { item: "b", op: "add", delta: 2n },
      { item: "x", op: "put", value: true },
      { item: "a", op: "add", delta: 1n },
    ],
    expected: committed(
      [],
      [
        { item: "b", value: 2n },
        { item: "a", value: 1n },
      ],
    ),
  },
  {
    name: "add to a byte item is a type mismatch and writes nothing",
    given: [["a", bytes(1)]],
    writes: [
      { item: "b", op: "put", value: 1n },
      { item: "a", op: "add", delta: 1n },
    ],
    expected: { status: "rejected", reason: "type_mismatch", item: "a" },
    after: [
      ["a", bytes(1)],
      ["b", null],
    ],
  },
  {
    name: "add to a boolean item is a type mismatch",
    given: [["a", true]],
    writes: [{ item: "a", op: "add", delta: 1n }],
    expected: { status: "rejected", reason: "type_mismatch", item: "a" },
  },
  {
    name: "add beyond the largest magnitude is value_too_large",
    given: [["n", largest]],
    writes: [{ item: "n", op: "add", delta: 1n }],
    expected: { status: "rejected", reason: "value_too_large", item: "n" },
    after: [["n", largest]],
  },
  {
    name: "add below the most negative magnitude is value_too_large",
    given: [["n", -largest]],
    writes: [{ item: "n", op: "add", delta: -1n }],
    expected: { status: "rejected", reason: "value_too_large", item: "n" },
  },
  {
    name: "add up to the largest magnitude is fine",
    given: [["n", largest - 1n]],
    writes: [{ item: "n", op: "add", delta: 1n }],
    expected: committed([], [{ item: "n", value: largest }]),
  },
  {
    name: "an invalid transaction is rejected as invalid, naming the item",
    writes: [
      { item: "a", op: "put", value: 1n },
      { item: "a", op: "delete" },
    ],
    expected: { status: "rejected", reason: "invalid", item: "a" },
    after: [["a", null]],
  },
];

function failed(condition: number): TxnResult {
  return { status: "condition_failed", condition, reads: [] };
}

describe("transactions: edge cases", () => {
  for (const row of txnCases) {
    it(row.name, () => {
      const cell = new Cell();
      for (const [item, value] of row.given ?? []) cell.put(item, value);
      const result = cell.txn({
        conditions: row.conditions ?? [],
        reads: row.reads ?? [],
        writes: row.writes ?? [],
      });
      if (row.expected.status === "rejected") {
        expect(result).toMatchObject(row.expected);
        expect((result as { detail: string }).detail.length).toBeGreaterThan(10);
      } else {
        expect(result).toEqual(row.expected);
      }
      for (const [item, value] of row.after ?? []) expect(cell.value(item)).toEqual(value);
    });
  }

  it("reports the cell size and item count", () => {
    const cell = new Cell()
      .put("ab", bytes(1, 2, 3))
      .put("n", 300n)
      .put("t", true);
    // "ab": 2 + (tag 1 + length 1 + 3); "n": 1 + (tag 1 + sign 1 + length 1 + 2); "t": 1 + 1.
    expect(cell.machine.cellBytes).toBe(7 + 6 + 2);
    expect(cell.machine.itemCount).toBe(3);
    expect(cell.machine.cellBytes).toBe(
      itemBytes("ab", bytes(1, 2, 3)) + itemBytes("n", 300n) + itemBytes("t", true),
    );
  });

  it("counts UTF-8 bytes of keys", () => {
    const cell = new Cell().put("é", true).put("𝄞", true);
    expect(cell.machine.cellBytes).toBe(2 + 1 + 4 + 1);
  });

  it("rejects a transaction that would overfill the cell, and writes nothing", () => {
    const cell = new Cell();
    const big = new Uint8Array(limits.itemValueBytesMax);
    let i = 0;
    while (cell.machine.cellBytes + itemBytes(`k${i}`, big) <= limits.cellBytesMax) cell.put(`k${i++}`, big);
    const before = cell.machine.digest();
    const result = cell.txn({
      writes: [
        { item: "k0", op: "delete" },
        { item: "new1", op: "put", value: big },
        { item: "new2", op: "put", value: big },
      ],
    });
    expect(result).toMatchObject({ status: "rejected", reason: "cell_full", item: null });
    expect(cell.value("k0")).not.toBeNull();
    // Only the session changed; the items did not.
    expect(cell.machine.cellBytes).toBeLessThanOrEqual(limits.cellBytesMax);
    expect(cell.machine.digest()).not.toBe(before);
    expect(cell.value("new1")).toBeNull();
  });

  it("lets a full cell shrink and lets a transaction replace what it deletes", () => {
    const cell = new Cell();
    const big = new Uint8Array(limits.itemValueBytesMax);
    let i = 0;
    while (cell.machine.cellBytes + itemBytes(`k${i}`, big) <= limits.cellBytesMax) cell.put(`k${i++}`, big);
    expect(cell.txn({ writes: [{ item: "x", op: "put", value: big }] }).status).toBe("rejected");
    const swap = cell.txn({
      writes: [
        { item: "k0", op: "delete" },
        { item: "k1", op: "put", value: true },
        { item: "x", op: "put", value: big },
      ],
    });
    expect(swap.status).toBe("committed");
    expect(cell.machine.cellBytes).toBeLessThanOrEqual(limits.cellBytesMax);
  });

  it("copies values in and out: callers cannot change the cell through their arrays", () => {
    const cell = new Cell();
    const source = bytes(1, 2, 3);
    cell.put("a", source);
    source[0] = 99;
    expect(cell.value("a")).toEqual(bytes(1, 2, 3));
    const result = cell.txn({ reads: ["a"] });
    if (result.status !== "committed" || result.reads === null) throw new Error("expected reads");
    const read = result.reads[0]!.value as Uint8Array;
    read[0] = 77;
    expect(cell.value("a")).toEqual(bytes(1, 2, 3));
  });

  it("keeps items and leases in separate namespaces", () => {
    const cell = new Cell().put("x", true);
    expect(cell.lease({ op: "acquire", name: "x", holder: "h", durationMs: 100 }).status).toBe("granted");
    expect(cell.value("x")).toBe(true);
    expect(cell.machine.cellBytes).toBe(itemBytes("x", true) + leaseBytes("x", "h"));
  });

  it("evaluates reads without touching sessions or time", () => {
    const cell = new Cell().put("a", 5n);
    const before = cell.machine.snapshot();
    expect(
      cell.machine.evaluateRead({
        conditions: [{ item: "a", op: "gt", value: 1n }],
        reads: ["a", "b"],
        writes: [],
      }),
    ).toEqual(
      committed([
        { item: "a", value: 5n },
        { item: "b", value: null },
      ]),
    );
    expect(
      cell.machine.evaluateRead({ conditions: [{ item: "a", op: "lt", value: 1n }], reads: [], writes: [] }),
    ).toEqual(failed(0));
    expect(
      cell.machine.evaluateRead({ conditions: [], reads: [], writes: [{ item: "a", op: "delete" }] }),
    ).toMatchObject({ status: "rejected", reason: "invalid" });
    expect(cell.machine.evaluateRead({ conditions: [], reads: [], writes: [] })).toMatchObject({
      status: "rejected",
      reason: "invalid",
    });
    expect(cell.machine.snapshot()).toEqual(before);
  });
});

describe("leases", () => {
  const acquire = (holder: string, durationMs = 100, name = "L"): LeaseOp => ({
    op: "acquire",
    name,
    holder,
    durationMs,
  });
  const renew = (holder: string, durationMs = 100, name = "L"): LeaseOp => ({
    op: "renew",
    name,
    holder,
    durationMs,
  });
  const release = (holder: string, name = "L"): LeaseOp => ({ op: "release", name, holder });

  it("grants a missing lease with a fresh token", () => {
    const cell = new Cell();
    expect(cell.lease(acquire("a"))).toEqual({
      status: "granted",
      holder: "a",
      expiresAtMs: 1_100,
      token: 1n,
    });
    expect(cell.machine.readLease("L")).toEqual({ name: "L", holder: "a", expiresAtMs: 1_100, token: 1n });
  });

  it("extends for the same holder, keeping the token", () => {
    const cell = new Cell();
    cell.lease(acquire("a"));
    cell.nowMs = 1_050;
    expect(cell.lease(acquire("a", 200))).toEqual({
      status: "granted",
      holder: "a",
      expiresAtMs: 1_250,
      token: 1n,
    });
    cell.nowMs = 1_100;
    expect(cell.lease(renew("a", 10))).toEqual({
      status: "granted",
      holder: "a",
      expiresAtMs: 1_110,
      token: 1n,
    });
  });

  it("reports who holds a live lease", () => {
    const cell = new Cell();
    cell.lease(acquire("a"));
    expect(cell.lease(acquire("b"))).toEqual({ status: "held", holder: "a", expiresAtMs: 1_100 });
  });

  it("treats a lease as expired from expiresAtMs on", () => {
    const cell = new Cell();
    cell.lease(acquire("a"));
    cell.nowMs = 1_099;
    expect(cell.lease(acquire("b")).status).toBe("held");
    cell.nowMs = 1_100;
    expect(cell.lease(acquire("b"))).toEqual({
      status: "granted",
      holder: "b",
      expiresAtMs: 1_200,
      token: 2n,
    });
  });

  it("gives the same holder a new token after expiry", () => {
    const cell = new Cell();
    cell.lease(acquire("a"));
    cell.nowMs = 2_000;
    expect(cell.lease(acquire("a"))).toMatchObject({ status: "granted", token: 2n });
  });

  it("renews only a live lease of the same holder", () => {
    const cell = new Cell();
    expect(cell.lease(renew("a"))).toEqual({ status: "not_held" });
    cell.lease(acquire("a"));
    expect(cell.lease(renew("b"))).toEqual({ status: "not_held" });
    cell.nowMs = 1_100;
    expect(cell.lease(renew("a"))).toEqual({ status: "not_held" });
  });

  it("releases for its holder, expired or not", () => {
    const cell = new Cell();
    expect(cell.lease(release("a"))).toEqual({ status: "not_held" });
    cell.lease(acquire("a"));
    expect(cell.lease(release("b"))).toEqual({ status: "not_held" });
    expect(cell.lease(release("a"))).toEqual({ status: "released" });
    expect(cell.machine.readLease("L")).toBeNull();
    cell.lease(acquire("a"));
    cell.nowMs = 5_000;
    expect(cell.lease(release("a"))).toEqual({ status: "released" });
    expect(cell.machine.cellBytes).toBe(0);
  });

  it("hands out increasing tokens across lease names", () => {
    const cell = new Cell();
    expect(cell.lease(acquire("a", 100, "one"))).toMatchObject({ token: 1n });
    expect(cell.lease(acquire("a", 100, "two"))).toMatchObject({ token: 2n });
    cell.lease(release("a", "one"));
    expect(cell.lease(acquire("b", 100, "one"))).toMatchObject({ token: 3n });
    expect(cell.machine.leaseTokenLast).toBe(3n);
  });

  it("clamps stamps that go backwards: time never runs back", () => {
    const cell = new Cell();
    cell.lease(acquire("a", 100), { stampMs: 1_000 });
    // A proposer with a slow clock stamps an earlier time: the cell still reads 1000.
    expect(cell.lease(acquire("b"), { stampMs: 500 })).toEqual({
      status: "held",
      holder: "a",
      expiresAtMs: 1_100,
    });
    expect(cell.machine.timeMs).toBe(1_000);
    expect(cell.lease(renew("a", 50), { stampMs: 10 })).toMatchObject({ expiresAtMs: 1_050 });
    cell.lease(acquire("c"), { stampMs: 1_200 });
    // Once time reached 1200, an old stamp cannot resurrect a's lease.
    expect(cell.lease(renew("a"), { stampMs: 900 })).toEqual({ status: "not_held" });
    expect(cell.machine.readLease("L")).toMatchObject({ holder: "c", expiresAtMs: 1_300 });
  });

  it("ignores stamps that are no clock reading and clamps huge ones", () => {
    const cell = new Cell();
    for (const stampMs of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -5]) {
      cell.lease(acquire("a"), { stampMs });
      expect(cell.machine.timeMs).toBe(0);
    }
    cell.lease(acquire("a"), { stampMs: 7.9 });
    expect(cell.machine.timeMs).toBe(7);
    cell.lease(acquire("a", 600_000), { stampMs: 2 ** 60 });
    expect(cell.machine.timeMs).toBe(stampMsMax);
    expect(cell.machine.readLease("L")?.expiresAtMs).toBe(stampMsMax + 600_000);
    expect(Number.isSafeInteger(stampMsMax + limits.leaseDurationMsMax + limits.sessionRetentionMs)).toBe(
      true,
    );
    cell.machine.restore(cell.machine.snapshot());
  });

  it("measures time only between entries of one ballot: a new proposer's clock offset is not time", () => {
    const cell = new Cell();
    // Ballot 7's clock: the first entry only sets where measuring starts.
    cell.lease(acquire("a", 1_000), { stampMs: 50_000, ballot: 7 });
    expect(cell.machine.timeMs).toBe(0);
    expect(cell.machine.readLease("L")).toMatchObject({ expiresAtMs: 1_000, token: 1n });
    cell.lease(acquire("a", 1_000), { stampMs: 50_400, ballot: 7 });
    expect(cell.machine.timeMs).toBe(400);
    // A new leader whose clock is an hour ahead: no time passes at the change of ballot.
    expect(cell.lease(acquire("b"), { stampMs: 3_650_000, ballot: 9 })).toEqual({
      status: "held",
      holder: "a",
      expiresAtMs: 1_400,
    });
    expect(cell.machine.timeMs).toBe(400);
    // Then its own clock measures elapsed time.
    expect(cell.lease(acquire("b"), { stampMs: 3_651_000, ballot: 9 })).toMatchObject({
      status: "granted",
      holder: "b",
      token: 2n,
      expiresAtMs: 1_500,
    });
    expect(cell.machine.timeMs).toBe(1_400);
  });

  it("lets neither a leader whose clock is behind nor a re-proposed old entry move time back", () => {
    const cell = new Cell();
    cell.lease(acquire("a", 1_000), { stampMs: 10_000, ballot: 3 });
    cell.lease(renew("a", 1_000), { stampMs: 10_500, ballot: 3 });
    expect(cell.machine.timeMs).toBe(500);
    // A new leader whose clock is behind.
    cell.lease(renew("a", 1_000), { stampMs: 5_000, ballot: 4 });
    expect(cell.machine.timeMs).toBe(500);
    cell.lease(renew("a", 1_000), { stampMs: 5_300, ballot: 4 });
    expect(cell.machine.timeMs).toBe(800);
    // An entry of the old ballot, re-proposed by the new leader, then the new leader again.
    cell.lease(renew("a", 1_000), { stampMs: 10_600, ballot: 3 });
    expect(cell.machine.timeMs).toBe(800);
    cell.lease(renew("a", 1_000), { stampMs: 5_400, ballot: 4 });
    expect(cell.machine.timeMs).toBe(800);
    cell.lease(renew("a", 1_000), { stampMs: 5_450, ballot: 4 });
    expect(cell.machine.timeMs).toBe(850);
    // Within a ballot, a clock that steps back stops time until it passes its old reading.
    cell.lease(renew("a", 1_000), { stampMs: 5_000, ballot: 4 });
    cell.lease(renew("a", 1_000), { stampMs: 5_460, ballot: 4 });
    expect(cell.machine.timeMs).toBe(860);
    expect(cell.machine.stampBallotLast).toBe(4);
    expect(cell.machine.stampLastMs).toBe(5_460);
  });

  it("rejects a grant that would overfill the cell, but extends a held lease", () => {
    const cell = new Cell();
    cell.lease(acquire("a"));
    const big = new Uint8Array(limits.itemValueBytesMax);
    let i = 0;
    while (cell.machine.cellBytes + itemBytes(`k${i}`, big) <= limits.cellBytesMax) cell.put(`k${i++}`, big);
    const room = limits.cellBytesMax - cell.machine.cellBytes;
    let pad = room;
    while (itemBytes("pad", new Uint8Array(pad)) > room - 8) pad--;
    cell.put("pad", new Uint8Array(pad));
    expect(cell.machine.cellBytes).toBe(limits.cellBytesMax - 8);
    expect(cell.lease(acquire("b", 100, "M"))).toMatchObject({ status: "rejected", reason: "cell_full" });
    expect(cell.lease(acquire("a"))).toMatchObject({ status: "granted", token: 1n });
    cell.nowMs = 10_000;
    // Expired: a holder with a name no longer than the old one fits in the old one's place.
    expect(cell.lease(acquire("b"))).toMatchObject({ status: "granted", token: 2n });
    expect(cell.lease(acquire("bbbbbbbbbbbbbbbb"), { stampMs: 20_000 })).toMatchObject({
      status: "rejected",
      reason: "cell_full",
    });
    expect(cell.machine.readLease("L")).toMatchObject({ holder: "b" });
  });

  it("rejects invalid lease operations as invalid", () => {
    const cell = new Cell();
    expect(cell.lease({ op: "acquire", name: "", holder: "a", durationMs: 100 })).toMatchObject({
      status: "rejected",
      reason: "invalid",
    });
    expect(cell.lease({ op: "acquire", name: "L", holder: "a", durationMs: 5 })).toMatchObject({
      status: "rejected",
      reason: "invalid",
      detail: expect.stringContaining("[10, 600000]"),
    });
    expect(cell.machine.leaseCount).toBe(0);
  });
});

describe("sessions", () => {
  const put = (item: string, value: Value = 1n): Operation => ({
    type: "txn",
    txn: { conditions: [], reads: [], writes: [{ item, op: "put", value }] },
  });
  const read = (item: string): Operation => ({
    type: "txn",
    txn: { conditions: [], reads: [item], writes: [] },
  });

  it("executes increasing sequence numbers and answers a retry with the stored result", () => {
    const cell = new Cell();
    const first = cell.send({
      type: "txn",
      txn: { conditions: [], reads: [], writes: [{ item: "n", op: "add", delta: 1n }] },
    });
    const retry = cell.send(
      { type: "txn", txn: { conditions: [], reads: [], writes: [{ item: "n", op: "add", delta: 1n }] } },
      { seq: 1 },
    );
    expect(retry).toEqual(first);
    expect(cell.value("n")).toBe(1n);
    cell.send(put("x"), { seq: 2 });
    expect(cell.machine.readSession(1)).toMatchObject({ seq: 2 });
  });

  it("answers an older sequence number with stale_request and changes nothing", () => {
    const cell = new Cell();
    cell.send(put("a"), { seq: 5, newSession: true });
    const before = cell.machine.snapshot();
    expect(cell.send(put("b"), { seq: 4 })).toEqual({ kind: "stale_request" });
    expect(cell.machine.snapshot()).toEqual(before);
    expect(cell.value("b")).toBeNull();
  });

  it("lets sequence numbers skip (pipelined requests of one session)", () => {
    const cell = new Cell();
    cell.send(put("a"), { seq: 1, newSession: true });
    expect(cell.send(put("b"), { seq: 3, newSession: true })).toMatchObject({ kind: "txn" });
    expect(cell.send(put("c"), { seq: 2, newSession: true })).toEqual({ kind: "stale_request" });
  });

  it("answers an unknown session without newSession with session_expired", () => {
    const cell = new Cell().put("x", true);
    const before = cell.machine.snapshot();
    expect(cell.send(put("a"), { session: 9, seq: 3, newSession: false })).toEqual({
      kind: "session_expired",
    });
    expect(cell.machine.snapshot()).toEqual(before);
  });

  it("keeps a large result without its reads", () => {
    const cell = new Cell().put("big", new Uint8Array(2_000));
    const first = cell.send(read("big"));
    expect(first).toMatchObject({ kind: "txn", result: { status: "committed", reads: [{ item: "big" }] } });
    expect(encodeResult(first).length).toBeGreaterThan(limits.sessionResultBytesMax);
    const retry = cell.send(read("big"), { seq: 2 });
    expect(retry).toEqual({ kind: "txn", result: { status: "committed", reads: null, added: [] } });
  });

  it("keeps a small result whole", () => {
    const cell = new Cell().put("small", new Uint8Array(100));
    const first = cell.send(read("small"));
    expect(cell.send(read("small"), { seq: 2 })).toEqual(first);
  });

  it("records an invalid command in its session like any other", () => {
    const cell = new Cell();
    const first = cell.send({ type: "txn", txn: { conditions: [], reads: [], writes: [] } });
    expect(first).toMatchObject({ kind: "txn", result: { status: "rejected", reason: "invalid" } });
    expect(cell.machine.readSession(1)).toMatchObject({ seq: 1 });
    expect(cell.send(put("a"), { seq: 1 })).toEqual(first);
    expect(cell.value("a")).toBeNull();
  });

  it("rejects a bad envelope without creating a session", () => {
    const cell = new Cell();
    for (const session of [0, -1, 1.5, Number.NaN, 2 ** 53]) {
      expect(cell.send(put("a"), { session, seq: 1, newSession: true })).toMatchObject({
        kind: "txn",
        result: { status: "rejected", reason: "invalid" },
      });
    }
    expect(cell.send(put("a"), { session: 1, seq: 0, newSession: true })).toMatchObject({
      result: { status: "rejected", reason: "invalid" },
    });
    expect(cell.machine.sessionCount).toBe(0);
    expect(cell.machine.itemCount).toBe(0);
  });

  function fillSessions(cell: Cell, stampMs: (session: number) => number) {
    for (let s = 1; s <= limits.sessionsPerCellMax; s++) {
      expect(cell.send(put("a"), { session: s, seq: 1, newSession: true, stampMs: stampMs(s) }).kind).toBe(
        "txn",
      );
    }
    expect(cell.machine.sessionCount).toBe(limits.sessionsPerCellMax);
  }

  it("answers sessions_full when every session is recent, changing nothing", () => {
    const cell = new Cell();
    fillSessions(cell, () => 1_000);
    const before = cell.machine.snapshot();
    const at = 1_000 + limits.sessionRetentionMs - 1;
    expect(cell.send(put("b"), { session: 500, seq: 1, newSession: true, stampMs: at })).toEqual({
      kind: "sessions_full",
    });
    expect(cell.value("b")).toBeNull();
    expect(cell.machine.readSession(500)).toBeNull();
    // Only the cell's time moved.
    const replay = new CellMachine();
    replay.restore(before);
    replay.apply(
      { version: 1, session: 1, seq: 1, newSession: false, op: put("zz") },
      { index: 0, stampMs: at, stampBallot: 0 },
    );
    expect(cell.machine.snapshot()).toEqual(replay.snapshot());
  });

  it("evicts the least recently used session once it has been idle long enough", () => {
    const cell = new Cell();
    fillSessions(cell, (s) => 1_000 + s);
    const at = 1_001 + limits.sessionRetentionMs;
    expect(cell.send(put("b"), { session: 500, seq: 1, newSession: true, stampMs: at })).toMatchObject({
      kind: "txn",
    });
    expect(cell.machine.readSession(1)).toBeNull();
    expect(cell.machine.readSession(500)).not.toBeNull();
    expect(cell.machine.sessionCount).toBe(limits.sessionsPerCellMax);
    // Session 2 was used at 1002: not idle long enough yet.
    expect(cell.send(put("c"), { session: 501, seq: 1, newSession: true, stampMs: at })).toEqual({
      kind: "sessions_full",
    });
    // The evicted session's next request learns its session is gone.
    expect(cell.send(put("c"), { session: 1, seq: 2, newSession: false, stampMs: at })).toEqual({
      kind: "session_expired",
    });
  });

  it("breaks ties between equally old sessions by the smallest session number", () => {
    const cell = new Cell();
    fillSessions(cell, () => 1_000);
    cell.send(put("b"), {
      session: 1_000,
      seq: 1,
      newSession: true,
      stampMs: 1_000 + limits.sessionRetentionMs,
    });
    expect(cell.machine.readSession(1)).toBeNull();
    expect(cell.machine.readSession(2)).not.toBeNull();
  });

  it("keeps a session alive while it is used", () => {
    const cell = new Cell();
    fillSessions(cell, () => 1_000);
    // Session 1 stays busy; everyone else goes idle.
    cell.send(put("x"), { session: 1, seq: 2, stampMs: 50_000 });
    cell.send(put("b"), {
      session: 900,
      seq: 1,
      newSession: true,
      stampMs: 1_000 + limits.sessionRetentionMs,
    });
    expect(cell.machine.readSession(1)).not.toBeNull();
    expect(cell.machine.readSession(2)).toBeNull();
  });

  it("treats newSession on a known session as a known session", () => {
    const cell = new Cell();
    const first = cell.send(put("a"), { seq: 1, newSession: true });
    expect(cell.send(put("b"), { seq: 1, newSession: true })).toEqual(first);
    expect(cell.value("b")).toBeNull();
  });
});

describe("versions", () => {
  it("reports an unknown operation format version and applies nothing", () => {
    const machine = new CellMachine();
    const command: Command = {
      version: 2,
      session: 1,
      seq: 1,
      newSession: true,
      op: { type: "unknown", bytes: bytes(1) },
    };
    const reason = machine.unsupported(command);
    expect(reason).toContain("version 2");
    expect(reason).toContain("version 1");
    expect(machine.unsupported({ ...command, version: 1 })).toBeNull();
    const result = machine.apply(command, { index: 1, stampMs: 5, stampBallot: 0 });
    expect(result).toMatchObject({ kind: "txn", result: { status: "rejected", reason: "invalid" } });
    expect(machine.sessionCount).toBe(0);
  });
});

describe("snapshots", () => {
  function busyCell(): Cell {
    const cell = new Cell()
      .put("b", bytes(1, 2))
      .put("a", -12345678901234567890n)
      .put("c", false)
      .put("é", true);
    cell.lease({ op: "acquire", name: "z", holder: "h1", durationMs: 1_000 });
    cell.lease(
      { op: "acquire", name: "y", holder: "h2", durationMs: 1_000 },
      { session: 4, newSession: true },
    );
    cell.txn({ reads: ["big"] }, { session: 3, newSession: true });
    return cell;
  }

  it("round-trips the whole state", () => {
    const cell = busyCell();
    const copy = new CellMachine();
    copy.restore(cell.machine.snapshot());
    copy.checkInvariants();
    expect(copy.snapshot()).toEqual(cell.machine.snapshot());
    expect(copy.digest()).toBe(cell.machine.digest());
    expect(copy.cellBytes).toBe(cell.machine.cellBytes);
    expect(copy.readItem("a")).toBe(-12345678901234567890n);
    expect(copy.readLease("y")).toEqual(cell.machine.readLease("y"));
    expect(copy.readSession(3)).toEqual(cell.machine.readSession(3));
  });

  it("does not depend on the order things were inserted", () => {
    const one = new Cell().put("a", 1n).put("b", 2n);
    const two = new Cell().put("b", 2n).put("a", 1n);
    expect(one.machine.snapshot()).toEqual(two.machine.snapshot());
  });

  it("rejects malformed snapshots with DecodeError and leaves the cell unchanged", () => {
    const cell = busyCell();
    const good = cell.machine.snapshot();
    const before = cell.machine.digest();
    const bad: Uint8Array[] = [
      new Uint8Array(0),
      bytes(2),
      good.subarray(0, good.length - 1),
      new Uint8Array([...good, 0]),
    ];
    for (const snapshot of bad) {
      expect(() => cell.machine.restore(snapshot)).toThrow(DecodeError);
      expect(cell.machine.digest()).toBe(before);
    }
  });

  it("rejects items out of order", () => {
    // format, time 0, stamp 0, ballot 0, token 0n, 2 items: "b" = false, "a" = false, 0 leases,
    // 0 sessions.
    const unordered = bytes(1, 0, 0, 0, 0, 0, 2, 1, 0x62, 0, 1, 0x61, 0, 0, 0);
    const ordered = bytes(1, 0, 0, 0, 0, 0, 2, 1, 0x61, 0, 1, 0x62, 0, 0, 0);
    const machine = new CellMachine();
    expect(() => machine.restore(unordered)).toThrow(DecodeError);
    machine.restore(ordered);
    expect(machine.itemCount).toBe(2);
    expect(machine.snapshot()).toEqual(ordered);
  });

  it("rejects a cell over its byte limit", () => {
    const machine = new CellMachine();
    const writer: number[] = [1, 0, 0, 0, 0, 0];
    const count = 17;
    writer.push(count);
    for (let i = 0; i < count; i++) {
      writer.push(2, 0x6b, 0x61 + i, 3, 0x80, 0x20); // key "k?", bytes tag, length 4096
      for (let j = 0; j < 4096; j++) writer.push(0);
    }
    writer.push(0, 0);
    expect(() => machine.restore(new Uint8Array(writer))).toThrow(/exceeds the limit/);
  });

  it("answers a retry identically after a restore", () => {
    const cell = busyCell();
    const copy = new CellMachine();
    copy.restore(cell.machine.snapshot());
    const retry: Command = {
      version: 1,
      session: 4,
      seq: 1,
      newSession: true,
      op: { type: "lease", lease: { op: "acquire", name: "y", holder: "h2", durationMs: 1_000 } },
    };
    const a: CommandResult = cell.machine.apply(retry, { index: 99, stampMs: 1_500, stampBallot: 0 });
    const b: CommandResult = copy.apply(retry, { index: 99, stampMs: 1_500, stampBallot: 0 });
    expect(b).toEqual(a);
    expect(a).toMatchObject({ kind: "lease", result: { status: "granted" } });
  });
});

describe("stored results stay bounded", () => {
  it("a retry of a commit with huge add results answers without the added values", () => {
    const machine = new CellMachine();
    const big = 2n ** 30_000n;
    const writes = Array.from({ length: 3 }, (_, i) => ({ item: `n${i}`, op: "add" as const, delta: big }));
    const command = {
      version: 1,
      session: 9,
      seq: 1,
      newSession: true,
      op: { type: "txn" as const, txn: { conditions: [], reads: [], writes } },
    };
    const first = machine.apply(command, { index: 1, stampMs: 0, stampBallot: 1 });
    expect(first.kind === "txn" && first.result.status === "committed" && first.result.added?.length).toBe(3);
    const retry = machine.apply(command, { index: 2, stampMs: 0, stampBallot: 1 });
    expect(retry).toEqual({ kind: "txn", result: { status: "committed", reads: null, added: null } });
    const restored = new CellMachine();
    restored.restore(machine.snapshot());
    expect(restored.snapshot()).toEqual(machine.snapshot());
  });
});
