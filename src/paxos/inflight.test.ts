import { describe, expect, it } from "vitest";
import { InflightSlots } from "./inflight.ts";

describe("in-flight window", () => {
  it("holds the slots of one pipeline window and finds each by slot", () => {
    const window = new InflightSlots<{ slot: number; sentAtMs: number }>(4);
    for (const slot of [7, 5, 6]) window.add({ slot, sentAtMs: slot * 10 });
    expect(window.size).toBe(3);
    expect(window.get(6)?.sentAtMs).toBe(60);
    expect(window.get(10)).toBeUndefined(); // same place as 6, another slot
    expect(window.ascending().map((i) => i.slot)).toEqual([5, 6, 7]);
    expect(window.min((i) => i.sentAtMs)).toBe(50);
    window.delete(10); // not held: nothing happens
    window.delete(5);
    expect(window.size).toBe(2);
    window.add({ slot: 8, sentAtMs: 80 });
    const copy = window.copy((i) => ({ ...i }));
    copy.delete(8);
    expect(window.get(8)?.sentAtMs).toBe(80);
    expect(new InflightSlots(4).min(() => 0)).toBe(Number.POSITIVE_INFINITY);
  });

  it("refuses a slot proposed twice and two slots beyond the window", () => {
    const window = new InflightSlots<{ slot: number }>(4);
    window.add({ slot: 1 });
    expect(() => window.add({ slot: 1 })).toThrow(/proposed twice/);
    expect(() => window.add({ slot: 5 })).toThrow(/beyond the pipeline window/);
  });
});
