import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { limits } from "../core/index.ts";
import { transactionBytes } from "./codec.ts";
import type { Command, Operation, Transaction } from "./types.ts";
import { type ProblemCode, validateCommand, validateTransaction } from "./validate.ts";

const txn = (parts: Partial<Record<keyof Transaction, unknown>>): Command => ({
  version: 1,
  session: 1,
  seq: 1,
  newSession: true,
  op: { type: "txn", txn: { conditions: [], reads: [], writes: [], ...parts } as unknown as Transaction },
});
const lease = (parts: Record<string, unknown>): Command => ({
  version: 1,
  session: 1,
  seq: 1,
  newSession: true,
  op: {
    type: "lease",
    lease: { op: "acquire", name: "L", holder: "h", durationMs: 100, ...parts },
  } as Operation,
});
const envelope = (parts: Record<string, unknown>): Command =>
  ({ ...txn({ reads: ["a"] }), ...parts }) as unknown as Command;

const long = (bytes: number) => "k".repeat(bytes);
const put = (item: unknown, value: unknown = 1n) => ({ item, op: "put", value });

interface Row {
  readonly name: string;
  readonly command: Command;
  readonly code: ProblemCode;
  /** Fragments the message must contain. */
  readonly says?: readonly string[];
  readonly item?: string | null;
}

const rows: readonly Row[] = [
  { name: "a command that is not an object", command: 5 as unknown as Command, code: "malformed" },
  {
    name: "an unknown version",
    command: envelope({ version: 2 }),
    code: "unsupported_version",
    says: ["version 2", "version 1"],
  },
  {
    name: "session 0",
    command: envelope({ session: 0 }),
    code: "bad_session",
    says: ["session number 0 "],
  },
  { name: "a fractional session", command: envelope({ session: 1.5 }), code: "bad_session" },
  { name: "a session beyond 2^53", command: envelope({ session: 2 ** 53 }), code: "bad_session" },
  { name: "a bigint session", command: envelope({ session: 1n }), code: "bad_session" },
  { name: "sequence number 0", command: envelope({ seq: 0 }), code: "bad_sequence" },
  { name: "a negative sequence number", command: envelope({ seq: -3 }), code: "bad_sequence" },
  {
    name: "newSession not a boolean",
    command: envelope({ newSession: 1 }),
    code: "malformed",
    says: ["newSession"],
  },
  {
    name: "an unknown operation type",
    command: envelope({ op: { type: "scan" } }),
    code: "unknown_operation",
    says: ['"scan"'],
  },
  {
    name: "an unknown-format operation under the current version",
    command: envelope({ op: { type: "unknown", bytes: new Uint8Array(1) } }),
    code: "unknown_operation",
  },
  { name: "a missing operation", command: envelope({ op: undefined }), code: "malformed" },
  { name: "an empty transaction", command: txn({}), code: "empty_transaction" },
  { name: "reads that are not an array", command: txn({ reads: "a" }), code: "malformed", says: ["reads"] },
  { name: "an empty key", command: txn({ reads: [""] }), code: "item_key_empty", says: ["reads[0]"] },
  {
    name: "a key that is a number",
    command: txn({ reads: [5] }),
    code: "item_key_not_text",
    says: ["a number (5)"],
  },
  {
    name: "a key with an unpaired surrogate",
    command: txn({ writes: [put("a\ud800")] }),
    code: "item_key_not_text",
    says: ["surrogate"],
  },
  {
    name: "a key of 257 bytes",
    command: txn({ writes: [put(long(257))] }),
    code: "item_key_too_long",
    says: ["257 bytes", "256 bytes", "shorter key"],
  },
  {
    name: "a key of 129 two-byte characters",
    command: txn({ reads: ["é".repeat(129)] }),
    code: "item_key_too_long",
    says: ["258 bytes"],
  },
  {
    name: "a byte value of 4097 bytes",
    command: txn({ writes: [put("a", new Uint8Array(4097))] }),
    code: "value_too_large",
    says: ["4097 bytes", "4096 bytes"],
    item: "a",
  },
  {
    name: "an integer of 4097 magnitude bytes",
    command: txn({ writes: [put("a", 1n << 32768n)] }),
    code: "value_too_large",
    item: "a",
  },
  {
    name: "a negative integer of 4097 magnitude bytes",
    command: txn({ writes: [put("a", -(1n << 32768n))] }),
    code: "value_too_large",
  },
  {
    name: "a JS number as a value",
    command: txn({ writes: [put("a", 5)] }),
    code: "not_a_value",
    says: ["a number (5)", "bigint"],
    item: "a",
  },
  { name: "a string as a value", command: txn({ writes: [put("a", "x")] }), code: "not_a_value" },
  { name: "null as a value", command: txn({ writes: [put("a", null)] }), code: "not_a_value" },
  {
    name: "a number in an equals condition",
    command: txn({ conditions: [{ item: "a", op: "equals", value: 1 }] }),
    code: "not_a_value",
  },
  {
    name: "a byte array in a comparison",
    command: txn({ conditions: [{ item: "a", op: "lt", value: new Uint8Array(1) }] }),
    code: "bad_condition_value",
    says: ["conditions[0]", "lt"],
  },
  {
    name: "a number in a comparison",
    command: txn({ conditions: [{ item: "a", op: "ge", value: 3 }] }),
    code: "bad_condition_value",
  },
  {
    name: "an unknown condition op",
    command: txn({ conditions: [{ item: "a", op: "between" }] }),
    code: "unknown_operation",
  },
  {
    name: "a number as an add delta",
    command: txn({ writes: [{ item: "a", op: "add", delta: 1 }] }),
    code: "bad_delta",
    says: ["1n"],
  },
  {
    name: "an unknown write op",
    command: txn({ writes: [{ item: "a", op: "increment" }] }),
    code: "unknown_operation",
  },
  { name: "a write that is null", command: txn({ writes: [null] }), code: "malformed", says: ["writes[0]"] },
  {
    name: "the same item written twice",
    command: txn({ writes: [put("a"), put("b"), { item: "a", op: "delete" }] }),
    code: "duplicate_write",
    says: ["writes[0]", "writes[2]"],
    item: "a",
  },
  {
    name: "the same item read twice",
    command: txn({ reads: ["a", "b", "a"] }),
    code: "duplicate_read",
    says: ["reads[0]", "reads[2]"],
  },
  {
    name: "65 distinct items",
    command: txn({ reads: Array.from({ length: 65 }, (_, i) => `k${i}`) }),
    code: "too_many_items",
    says: ["64"],
  },
  {
    name: "65 distinct items across conditions, reads and writes",
    command: txn({
      conditions: Array.from({ length: 30 }, (_, i) => ({ item: `c${i}`, op: "exists" })),
      reads: Array.from({ length: 30 }, (_, i) => `r${i}`),
      writes: Array.from({ length: 5 }, (_, i) => put(`w${i}`)),
    }),
    code: "too_many_items",
  },
  {
    name: "a transaction over its byte limit",
    command: txn({ writes: Array.from({ length: 20 }, (_, i) => put(`k${i}`, new Uint8Array(4000))) }),
    code: "transaction_too_large",
    says: ["73728"],
  },
  {
    name: "an enormous list",
    command: txn({ conditions: new Array(limits.transactionBytesMax + 1).fill({ item: "a", op: "exists" }) }),
    code: "transaction_too_large",
  },
  { name: "an empty lease name", command: lease({ name: "" }), code: "lease_name_invalid" },
  { name: "a lease name of 257 bytes", command: lease({ name: long(257) }), code: "lease_name_invalid" },
  { name: "a lease name that is not a string", command: lease({ name: 3 }), code: "lease_name_invalid" },
  { name: "an empty lease holder", command: lease({ holder: "" }), code: "lease_holder_invalid" },
  {
    name: "a lease holder with a surrogate",
    command: lease({ holder: "\udc00" }),
    code: "lease_holder_invalid",
  },
  {
    name: "a lease shorter than the minimum",
    command: lease({ durationMs: 9 }),
    code: "lease_duration_out_of_range",
    says: ["[10, 600000]"],
  },
  {
    name: "a lease longer than the maximum",
    command: lease({ durationMs: 600_001 }),
    code: "lease_duration_out_of_range",
  },
  {
    name: "a fractional lease duration",
    command: lease({ durationMs: 10.5 }),
    code: "lease_duration_out_of_range",
  },
  {
    name: "a bigint lease duration",
    command: lease({ durationMs: 100n }),
    code: "lease_duration_out_of_range",
  },
  {
    name: "a renew without a duration",
    command: lease({ op: "renew", durationMs: undefined }),
    code: "lease_duration_out_of_range",
  },
  { name: "an unknown lease op", command: lease({ op: "steal" }), code: "unknown_operation" },
];

describe("validateCommand", () => {
  for (const row of rows) {
    it(`rejects ${row.name} as ${row.code}`, () => {
      const problem = validateCommand(row.command);
      expect(problem?.code).toBe(row.code);
      for (const fragment of row.says ?? []) expect(problem?.message).toContain(fragment);
      if (row.item !== undefined) expect(problem?.item).toBe(row.item);
      expect(new TextEncoder().encode(problem?.message).length).toBeLessThanOrEqual(512);
    });
  }

  const valid: readonly [string, Command][] = [
    ["a read", txn({ reads: ["a"] })],
    ["a condition alone", txn({ conditions: [{ item: "a", op: "exists" }] })],
    [
      "several conditions on one item",
      txn({
        conditions: [
          { item: "a", op: "exists" },
          { item: "a", op: "gt", value: 1n },
        ],
      }),
    ],
    [
      "an item read, conditioned and written",
      txn({ conditions: [{ item: "a", op: "missing" }], reads: ["a"], writes: [put("a")] }),
    ],
    ["64 distinct items", txn({ reads: Array.from({ length: 64 }, (_, i) => `k${i}`) })],
    ["a 256-byte key", txn({ reads: [long(256)] })],
    ["a key with a surrogate pair", txn({ reads: ["𝄞"] })],
    ["a 4096-byte value", txn({ writes: [put("a", new Uint8Array(4096))] })],
    ["the largest integer", txn({ writes: [put("a", (1n << 32768n) - 1n)] })],
    ["a boolean", txn({ writes: [put("a", false)] })],
    ["a release without a duration", lease({ op: "release", durationMs: undefined })],
    ["the shortest lease", lease({ durationMs: 10 })],
    ["the longest lease", lease({ durationMs: 600_000 })],
  ];
  for (const [name, command] of valid) {
    it(`accepts ${name}`, () => expect(validateCommand(command)).toBeNull());
  }

  it("never throws, whatever it is given", () => {
    fc.assert(
      fc.property(fc.anything({ withBigInt: true, withTypedArray: true }), (anything) => {
        validateCommand(anything as Command);
        validateCommand({ version: 1, session: 1, seq: 1, newSession: false, op: anything } as Command);
        validateCommand(txn({ writes: [anything] }));
        validateCommand(txn({ conditions: [anything], reads: [anything] }));
        validateTransaction(anything as Transaction);
      }),
    );
  });

  it("sizes transactions of maximal entries exactly at the limit", () => {
    const largestInteger = -((1n << 32768n) - 1n);
    const maximal = (count: number) =>
      txn({ writes: Array.from({ length: count }, (_, i) => put(`${i}`.padEnd(256, "x"), largestInteger)) });
    const fits = maximal(16);
    expect(validateCommand(fits)).toBeNull();
    expect(transactionBytes((fits.op as { txn: Transaction }).txn)).toBeLessThanOrEqual(
      limits.transactionBytesMax,
    );
    expect(validateCommand(maximal(17))?.code).toBe("transaction_too_large");
  });

  it("quotes long keys shortly", () => {
    const problem = validateCommand(txn({ reads: [long(100_000)] }));
    expect(problem?.message.length).toBeLessThan(400);
    expect(problem?.item).toBeNull();
  });
});
