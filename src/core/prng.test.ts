import { describe, expect, it } from "vitest";
import { Prng } from "./prng.ts";

const draws = (prng: Prng, n: number): number[] => Array.from({ length: n }, () => prng.nextUint32());

describe("Prng", () => {
  it("repeats its stream for a seed, and differs between seeds", () => {
    expect(draws(new Prng(7), 20)).toEqual(draws(new Prng(7), 20));
    expect(draws(new Prng(7), 20)).not.toEqual(draws(new Prng(8), 20));
  });

  it("takes a whole 128-bit state from 16 bytes: seeds differing in any byte give other streams", () => {
    const seed = Uint8Array.from({ length: 16 }, (_, i) => i * 17 + 3);
    const base = draws(Prng.fromBytes(seed), 8);
    expect(draws(Prng.fromBytes(seed), 8)).toEqual(base);
    for (let byte = 0; byte < 16; byte++) {
      const other = seed.slice();
      other[byte] = (other[byte] as number) ^ 1;
      expect(draws(Prng.fromBytes(other), 8), `byte ${byte}`).not.toEqual(base);
    }
    // The one state xoshiro cannot leave is replaced; other lengths are refused.
    expect(new Set(draws(Prng.fromBytes(new Uint8Array(16)), 8)).size).toBeGreaterThan(1);
    expect(() => Prng.fromBytes(new Uint8Array(4))).toThrow(/16 bytes, not 4/);
  });

  it("draws 52-bit integers whose every bit varies", () => {
    const prng = Prng.fromBytes(Uint8Array.from({ length: 16 }, (_, i) => 200 - i));
    let ored = 0n;
    let anded = (1n << 52n) - 1n;
    for (let i = 0; i < 2000; i++) {
      const value = prng.uint52();
      expect(Number.isSafeInteger(value) && value >= 0 && value < 2 ** 52).toBe(true);
      ored |= BigInt(value);
      anded &= BigInt(value);
    }
    // No bit stuck at 0 or at 1: below() would give only 32 random bits of a 52-bit range.
    expect(ored).toBe((1n << 52n) - 1n);
    expect(anded).toBe(0n);
  });
});
