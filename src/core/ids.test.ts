import { describe, expect, it } from "vitest";
import { cellKeyProblem } from "./ids.ts";
import { limits } from "./limits.ts";

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
