import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ByteReader, ByteWriter, DecodeError } from "./codec.ts";
import { Fifo } from "./fifo.ts";
import { RunningHash } from "./hash.ts";
import { Prng } from "./prng.ts";

describe("canonical codec", () => {
  it("round-trips integers, bigints, bytes and strings", () => {
    fc.assert(
      fc.property(
        fc.nat(),
        fc.integer(),
        fc.bigInt(),
        fc.uint8Array(),
        fc.string(),
        (u, i, b, bytes, text) => {
          const writer = new ByteWriter(0);
          writer.uint(u).int(i).bigint(b).bytes(bytes).string(text).bool(true);
          const reader = new ByteReader(writer.finish());
          expect(reader.uint()).toBe(u);
          expect(reader.int()).toBe(i);
          expect(reader.bigint(1 << 20)).toBe(b);
          expect(reader.bytes(1 << 20)).toEqual(bytes);
          expect(reader.string(1 << 20)).toBe(text);
          expect(reader.bool()).toBe(true);
          reader.end();
        },
      ),
    );
  });

  it("reads short ASCII strings from its memory of recent ones only when every byte matches", () => {
    // Many more strings than the memory has slots, all of one length and most of one prefix, so
    // slots are shared and a match on anything less than every byte would return a wrong one.
    const keys = Array.from({ length: 20_000 }, (_, i) => `bench-${String(i).padStart(7, "0")}`);
    keys.push("", "a", "b", "x".repeat(63), "y".repeat(64), "é-not-ascii", "bench-000001\u0080");
    const encoded = keys.map((key) => new ByteWriter(16).string(key).uint(7).finish());
    const prng = new Prng(5);
    for (let round = 0; round < 3; round++) {
      for (let n = 0; n < keys.length; n++) {
        const i = round === 0 ? n : prng.below(keys.length);
        const reader = new ByteReader(encoded[i] as Uint8Array);
        expect(reader.string(64)).toBe(keys[i]);
        // The reader moved past the string's bytes exactly.
        expect(reader.uint()).toBe(7);
        reader.end();
      }
    }
    // A non-ASCII byte inside a short string is decoded as UTF-8, and malformed UTF-8 refused.
    expect(() => new ByteReader(Uint8Array.of(2, 0x61, 0xff)).string(64)).toThrow(DecodeError);
    expect(new ByteReader(Uint8Array.of(3, 0x61, 0xc3, 0xa9)).string(64)).toBe("aé");
    // Over the caller's bound: refused, whether or not the string was read before.
    expect(() => new ByteReader(encoded[0] as Uint8Array).string(4)).toThrow(DecodeError);
  });

  it("round-trips finite doubles and refuses NaN and the infinities", () => {
    fc.assert(
      fc.property(fc.double({ noNaN: true, noDefaultInfinity: true }), (value) => {
        const reader = new ByteReader(new ByteWriter(0).f64(value).uint(7).finish());
        expect(Object.is(reader.f64(), value)).toBe(true);
        expect(reader.uint()).toBe(7);
        reader.end();
      }),
    );
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      expect(() => new ByteReader(new ByteWriter().f64(bad).finish()).f64()).toThrow(/not a finite/);
    }
    expect(() => new ByteReader(new Uint8Array(7)).f64()).toThrow(/truncated/);
  });

  it("encodes big integers in time linear in their size", () => {
    const huge = 7n ** 20_000n;
    const writer = new ByteWriter();
    writer.bigint(-huge);
    expect(new ByteReader(writer.finish()).bigint(1 << 20)).toBe(-huge);
  });

  it("a byte string entered is read in place, to its end only, and the input widens again after it", () => {
    const inner = new ByteWriter().uint(300).string("ab").finish();
    const bytes = new ByteWriter().uint(7).bytes(inner).uint(9).finish();
    const reader = new ByteReader(bytes);
    expect(reader.uint()).toBe(7);
    const outer = reader.enter(64);
    expect(reader.uint()).toBe(300);
    expect(reader.string(8)).toBe("ab");
    expect(reader.remaining).toBe(0);
    const early = new ByteReader(bytes);
    early.uint();
    const earlyOuter = early.enter(64);
    early.uint();
    // Leaving before the string's end is refused: the string had bytes left.
    expect(() => early.leave(earlyOuter)).toThrow(DecodeError);
    reader.leave(outer);
    expect(reader.uint()).toBe(9);
    reader.end();
    // Within a string entered, reading past its end fails, even a short ASCII string that the
    // memory of recent strings holds.
    expect(new ByteReader(new ByteWriter().string("abc").finish()).string(8)).toBe("abc");
    const cut = new ByteReader(new ByteWriter().uint(2).byte(3).byte(0x61).byte(0x62).byte(0x63).finish());
    cut.enter(64);
    expect(() => cut.string(8)).toThrow(DecodeError);
    const past = new ByteReader(new ByteWriter().uint(1).byte(5).byte(6).finish());
    past.enter(64);
    expect(past.byte()).toBe(5);
    expect(() => past.byte()).toThrow(DecodeError);
    // A string longer than allowed, or than the input, is refused.
    expect(() => new ByteReader(new ByteWriter().uint(9).byte(1).finish()).enter(64)).toThrow(DecodeError);
    const long = new ByteReader(bytes);
    long.uint();
    expect(() => long.enter(2)).toThrow(DecodeError);
  });

  it("rejects non-canonical, truncated and oversized input with DecodeError", () => {
    expect(() => new ByteReader(new Uint8Array([0x80, 0x00])).uint()).toThrow(DecodeError);
    expect(() => new ByteReader(new Uint8Array([0x05, 0x01])).bytes(10)).toThrow(DecodeError);
    expect(() => new ByteReader(new Uint8Array([0x00, 0x02, 0x01, 0x00])).bigint(10)).toThrow(/leading zero/);
    expect(() => new ByteReader(new Uint8Array([0x01, 0x00])).bigint(10)).toThrow(/negative zero/);
    expect(() => new ByteReader(new Uint8Array([0x00, 0x09])).bigint(4)).toThrow(/exceeds/);
    expect(() => new ByteReader(new Uint8Array([0x02])).bool()).toThrow(DecodeError);
    fc.assert(
      fc.property(fc.uint8Array(), (bytes) => {
        const reader = new ByteReader(bytes);
        try {
          reader.uint();
          reader.bigint(64);
          reader.string(64);
        } catch (error) {
          expect(error).toBeInstanceOf(DecodeError);
        }
      }),
    );
  });
});

describe("prng and hash", () => {
  it("the same seed gives the same stream; forks are independent of later draws", () => {
    const a = new Prng(9);
    const b = new Prng(9);
    const draws = Array.from({ length: 100 }, () => a.nextUint32());
    expect(Array.from({ length: 100 }, () => b.nextUint32())).toEqual(draws);
    expect(new Set(draws).size).toBeGreaterThan(95);
    const c = new Prng(1);
    for (let i = 0; i < 1000; i++) {
      const v = c.below(7);
      expect(v >= 0 && v < 7 && Number.isInteger(v)).toBe(true);
    }
  });

  it("the running hash distinguishes order and content", () => {
    const h = (parts: string[]) => parts.reduce((hash, p) => hash.addString(p), new RunningHash()).digest();
    expect(h(["a", "b"])).toBe(h(["a", "b"]));
    expect(h(["a", "b"])).not.toBe(h(["b", "a"]));
    expect(h(["ab"])).not.toBe(h(["a", "b"]));
  });
});

describe("fifo", () => {
  it("keeps order through growth and compaction", () => {
    const queue = new Fifo<number>();
    let next = 0;
    let expected = 0;
    for (let round = 0; round < 50; round++) {
      for (let i = 0; i < 100; i++) queue.push(next++);
      for (let i = 0; i < 60; i++) expect(queue.shift()).toBe(expected++);
    }
    expect(queue.length).toBe(next - expected);
    while (queue.length > 0) expect(queue.shift()).toBe(expected++);
    expect(queue.shift()).toBeUndefined();
  });
});
