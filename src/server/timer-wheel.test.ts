import { describe, expect, it } from "vitest";
import { TimerWheel, type WheelItem } from "./timer-wheel.ts";

const item = (): WheelItem & { name?: string } => ({ wheelSlot: -1 });

describe("timer wheel", () => {
  it("holds only armed items and hands them out when due, rounded up to a slot", () => {
    const wheel = new TimerWheel<WheelItem>(5, 8, 0);
    const a = item();
    const b = item();
    wheel.schedule(a, 12);
    wheel.schedule(b, 3);
    expect(wheel.size).toBe(2);
    expect(wheel.nextDeadlineMs()).toBe(5);
    expect(wheel.takeDue(4)).toEqual([]);
    expect(wheel.takeDue(5)).toEqual([b]);
    expect(wheel.nextDeadlineMs()).toBe(15);
    expect(wheel.takeDue(15)).toEqual([a]);
    expect(wheel.size).toBe(0);
    expect(wheel.nextDeadlineMs()).toBe(Number.POSITIVE_INFINITY);
  });

  it("re-arming moves an item, Infinity disarms it, far deadlines wait for their round", () => {
    const wheel = new TimerWheel<WheelItem>(5, 4, 0);
    const a = item();
    wheel.schedule(a, 10);
    wheel.schedule(a, 100); // beyond one turn of the wheel (4 slots x 5 ms)
    expect(wheel.size).toBe(1);
    expect(wheel.takeDue(50)).toEqual([]);
    expect(wheel.nextDeadlineMs()).toBe(100);
    expect(wheel.takeDue(100)).toEqual([a]);
    wheel.schedule(a, 120);
    wheel.schedule(a, Number.POSITIVE_INFINITY);
    expect(wheel.size).toBe(0);
    expect(wheel.takeDue(1000)).toEqual([]);
  });

  it("after a long idle gap every overdue item comes out once", () => {
    const wheel = new TimerWheel<WheelItem>(5, 4, 0);
    const items = Array.from({ length: 10 }, () => item());
    for (const [i, it] of items.entries()) wheel.schedule(it, i * 7);
    const due = wheel.takeDue(10_000);
    expect(new Set(due).size).toBe(10);
    expect(wheel.size).toBe(0);
  });
});
