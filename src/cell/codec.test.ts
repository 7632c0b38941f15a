import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ByteReader, ByteWriter, DecodeError } from "../core/index.ts";
import {
  commandBytes,
  decodeCommand,
  decodeResult,
  decodeValue,
  encodeCommand,
  encodeResult,
  encodeValue,
  magnitudeBytes,
  readInteger,
  resultBytes,
  valueBytes,
  writeInteger,
} from "./codec.ts";
import { utf8ByteLength, wellFormedUtf8Length } from "./text.ts";
import type { Command, CommandResult, Value } from "./types.ts";

const bytes = (...values: number[]) => new Uint8Array(values);

describe("values", () => {
  const golden: readonly [string, Value, number[]][] = [
    ["false", false, [0]],
    ["true", true, [1]],
    ["0n", 0n, [2, 0, 0]],
    ["1n", 1n, [2, 0, 1, 1]],
    ["-1n", -1n, [2, 1, 1, 1]],
    ["256n", 256n, [2, 0, 2, 0, 1]],
    ["2^32", 2n ** 32n, [2, 0, 5, 0, 0, 0, 0, 1]],
    ["empty bytes", bytes(), [3, 0]],
    ["two bytes", bytes(7, 8), [3, 2, 7, 8]],
  ];
  for (const [name, value, encoded] of golden) {
    it(`encodes ${name} canonically`, () => {
      expect([...encodeValue(value)]).toEqual(encoded);
      expect(valueBytes(value)).toBe(encoded.length);
      expect(decodeValue(new Uint8Array(encoded))).toEqual(value);
    });
  }

  const malformed: readonly [string, number[]][] = [
    ["nothing", []],
    ["an unknown tag", [5]],
    ["the missing tag outside a read", [4]],
    ["negative zero", [2, 1, 0]],
    ["a leading zero byte", [2, 0, 2, 1, 0]],
    ["a non-canonical length", [3, 0x82, 0x00, 1, 2]],
    ["a truncated byte string", [3, 5, 1]],
    ["trailing bytes", [1, 0]],
    ["a bad sign byte", [2, 2, 1, 1]],
  ];
  for (const [name, encoded] of malformed) {
    it(`rejects ${name}`, () => expect(() => decodeValue(new Uint8Array(encoded))).toThrow(DecodeError));
  }

  it("writes integers exactly as ByteWriter.bigint does, in linear time", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: -(1n << 4000n), max: 1n << 4000n }), (value) => {
        const mine = new ByteWriter();
        writeInteger(mine, value);
        const core = new ByteWriter().bigint(value).finish();
        expect(mine.finish()).toEqual(core);
        expect(readInteger(new ByteReader(core), 4096)).toBe(value);
        expect(new ByteReader(core).bigint(4096)).toBe(value);
      }),
    );
  });

  it("measures magnitudes", () => {
    expect(magnitudeBytes(0n)).toBe(0);
    expect(magnitudeBytes(255n)).toBe(1);
    expect(magnitudeBytes(-256n)).toBe(2);
    expect(magnitudeBytes(2n ** 32n - 1n)).toBe(4);
    expect(magnitudeBytes(2n ** 32n)).toBe(5);
    expect(magnitudeBytes((1n << 32768n) - 1n)).toBe(4096);
    expect(magnitudeBytes(1n << 32768n)).toBe(4097);
  });

  it("round-trips a largest integer quickly", () => {
    const value = -((1n << 32768n) - 1n);
    const started = performance.now();
    for (let i = 0; i < 100; i++) expect(decodeValue(encodeValue(value))).toBe(value);
    expect(performance.now() - started).toBeLessThan(1_000);
  });
});

describe("text sizes", () => {
  it("match TextEncoder, unpaired surrogates included", () => {
    fc.assert(
      fc.property(
        fc.string({ unit: "binary" }),
        fc.string({ unit: fc.integer({ min: 0xd7f0, max: 0xe010 }).map((c) => String.fromCharCode(c)) }),
        (a, b) => {
          for (const text of [a, b, a + b]) {
            expect(utf8ByteLength(text)).toBe(new TextEncoder().encode(text).length);
            const wellFormed = wellFormedUtf8Length(text);
            const isWellFormed = new TextDecoder().decode(new TextEncoder().encode(text)) === text;
            expect(wellFormed >= 0).toBe(isWellFormed);
            if (isWellFormed) expect(wellFormed).toBe(utf8ByteLength(text));
          }
        },
      ),
    );
  });
});

describe("commands", () => {
  const examples: readonly Command[] = [
    {
      version: 1,
      session: 2 ** 53 - 1,
      seq: 1,
      newSession: true,
      op: {
        type: "txn",
        txn: {
          conditions: [
            { item: "a", op: "exists" },
            { item: "b", op: "missing" },
            { item: "c", op: "equals", value: bytes(1) },
            { item: "d", op: "lt", value: -5n },
            { item: "d", op: "le", value: 0n },
            { item: "d", op: "gt", value: 1n },
            { item: "d", op: "ge", value: 2n ** 70n },
          ],
          reads: ["é", "𝄞"],
          writes: [
            { item: "x", op: "put", value: true },
            { item: "y", op: "delete" },
            { item: "z", op: "add", delta: -1n },
          ],
        },
      },
    },
    {
      version: 1,
      session: 7,
      seq: 300,
      newSession: false,
      op: { type: "lease", lease: { op: "acquire", name: "L", holder: "h", durationMs: 600_000 } },
    },
    {
      version: 1,
      session: 7,
      seq: 301,
      newSession: false,
      op: { type: "lease", lease: { op: "release", name: "L", holder: "h" } },
    },
    // Invalid but encodable: it must travel so that apply can reject it with a message.
    {
      version: 1,
      session: 0,
      seq: 0,
      newSession: false,
      op: { type: "txn", txn: { conditions: [], reads: [], writes: [] } },
    },
    { version: 9, session: 1, seq: 1, newSession: true, op: { type: "unknown", bytes: bytes(1, 2, 3) } },
  ];
  for (const [i, command] of examples.entries()) {
    it(`round-trips example ${i}`, () => {
      const encoded = encodeCommand(command);
      expect(commandBytes(command)).toBe(encoded.length);
      expect(decodeCommand(encoded)).toEqual(command);
    });
  }

  it("decodes a command of an unknown version, keeping its operation's bytes", () => {
    const known = encodeCommand(examples[1] as Command);
    const future = known.slice();
    future[0] = 2;
    const decoded = decodeCommand(future);
    expect(decoded.version).toBe(2);
    expect(decoded.op.type).toBe("unknown");
    expect(encodeCommand(decoded)).toEqual(future);
  });

  it("refuses to encode what cannot be encoded", () => {
    const txnWith = (value: unknown): Command =>
      ({
        version: 1,
        session: 1,
        seq: 1,
        newSession: true,
        op: { type: "txn", txn: { conditions: [], reads: [], writes: [{ item: "a", op: "put", value }] } },
      }) as Command;
    expect(() => encodeCommand(txnWith(5))).toThrow(RangeError);
    expect(() => encodeCommand({ ...txnWith(1n), session: -1 })).toThrow(RangeError);
    expect(() =>
      encodeCommand({
        version: 1,
        session: 1,
        seq: 1,
        newSession: true,
        op: { type: "txn", txn: { conditions: [], reads: ["\ud800"], writes: [] } },
      }),
    ).toThrow(RangeError);
    expect(() => encodeCommand({ ...txnWith(1n), version: 2 })).toThrow(RangeError);
  });

  it("rejects random bytes only with DecodeError, and accepts only canonical encodings", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (input) => expectCanonicalOrDecodeError(input)),
      { numRuns: 2_000 },
    );
  });

  it("rejects mutated encodings only with DecodeError", () => {
    const encoded = examples.map(encodeCommand);
    fc.assert(
      fc.property(
        fc.nat(encoded.length - 1),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 2 }))),
        (which, edits) => {
          let input = Array.from(encoded[which] as Uint8Array);
          for (const [at, byte, kind] of edits) {
            const i = at % (input.length + 1);
            if (kind === 0) input[i % input.length] = byte;
            else if (kind === 1) input.splice(i, 0, byte);
            else input = input.slice(0, i);
          }
          expectCanonicalOrDecodeError(new Uint8Array(input));
        },
      ),
      { numRuns: 2_000 },
    );
  });
});

function expectCanonicalOrDecodeError(input: Uint8Array): void {
  const attempts: [(bytes: Uint8Array) => unknown, (value: never) => Uint8Array][] = [
    [decodeCommand, encodeCommand],
    [decodeResult, encodeResult],
    [decodeValue, encodeValue],
  ];
  for (const [decode, encode] of attempts) {
    let decoded: unknown;
    try {
      decoded = decode(input);
    } catch (error) {
      expect(error).toBeInstanceOf(DecodeError);
      continue;
    }
    expect(encode(decoded as never)).toEqual(input);
  }
}

describe("results", () => {
  const examples: readonly CommandResult[] = [
    {
      kind: "txn",
      result: {
        status: "committed",
        reads: [
          { item: "a", value: null },
          { item: "b", value: bytes(1, 2) },
          { item: "c", value: -3n },
          { item: "d", value: false },
        ],
        added: [{ item: "c", value: -3n }],
      },
    },
    { kind: "txn", result: { status: "committed", reads: null, added: [] } },
    { kind: "txn", result: { status: "condition_failed", condition: 3, reads: [] } },
    { kind: "txn", result: { status: "rejected", reason: "type_mismatch", item: "a", detail: "why" } },
    { kind: "txn", result: { status: "rejected", reason: "cell_full", item: null, detail: "é" } },
    { kind: "lease", result: { status: "granted", holder: "h", expiresAtMs: 2 ** 52, token: 1n } },
    { kind: "lease", result: { status: "released" } },
    { kind: "lease", result: { status: "held", holder: "h", expiresAtMs: 5 } },
    { kind: "lease", result: { status: "not_held" } },
    { kind: "lease", result: { status: "rejected", reason: "invalid", detail: "bad" } },
    { kind: "stale_request" },
    { kind: "session_expired" },
    { kind: "sessions_full" },
  ];
  for (const [i, result] of examples.entries()) {
    it(`round-trips example ${i} (${result.kind})`, () => {
      const encoded = encodeResult(result);
      expect(resultBytes(result)).toBe(encoded.length);
      expect(decodeResult(encoded)).toEqual(result);
    });
  }
});
