import { describe, expect, it } from "vitest";
import { cellKeyProblem, compareUtf8 } from "./ids.ts";
import { limits } from "./limits.ts";
import { Prng } from "./prng.ts";

describe("cell keys", () => {
  it("accepts Unicode text up to the byte limit, surrogate pairs included", () => {
    expect(cellKeyProblem("vol-1")).toBeNull();
    expect(cellKeyProblem("𝄞-volume")).toBeNull();
    expect(cellKeyProblem("x".repeat(limits.cellKeyBytesMax))).toBeNull();
  });

  it("refuses empty, oversized and unpaired-surrogate keys, saying which", () => {
    expect(cellKeyProblem("")).toMatch(/must not be empty/);
    expect(cellKeyProblem("é".repeat(limits.cellKeyBytesMax))).toMatch(/bytes exceeds the limit/);
    // Both would be stored as U+FFFD, the key of another cell.
    for (const key of ["\ud800", "a\udc00b", "\ud83d"])
      expect(cellKeyProblem(key)).toMatch(/unpaired UTF-16 surrogate/);
  });
});

describe("compareUtf8", () => {
  it("orders strings as their UTF-8 bytes do, where UTF-16 order differs", () => {
    // U+FF61 is below U+1F600 in code points (and UTF-8), above it in UTF-16 code units.
    expect(compareUtf8("\uff61", "😀")).toBeLessThan(0);
    expect("\uff61" < "😀").toBe(false);
    const sign = (n: number) => Math.sign(n);
    const prng = new Prng(7);
    const alphabet = ["a", "z", "\u00e9", "\ud7ff", "\ue000", "\uff61", "\uffff", "😀", "𝄞", "\u{10ffff}"];
    const random = () => {
      let text = "";
      for (let n = prng.below(4); n >= 0; n--) text += alphabet[prng.below(alphabet.length)];
      return text;
    };
    for (let i = 0; i < 5_000; i++) {
      const a = random();
      const b = random();
      const bytes = Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
      expect(sign(compareUtf8(a, b)), `${JSON.stringify(a)} vs ${JSON.stringify(b)}`).toBe(bytes);
    }
  });
});
