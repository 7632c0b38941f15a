/**
 * A hashed timer wheel. Only items with an armed deadline are in it, so a quiet cell costs
 * nothing. Deadlines are rounded up to `slotMs`; deadlines beyond one turn of the wheel wait in
 * their bucket for their round.
 */
import { assert } from "../core/index.ts";

export interface WheelItem {
  /** Absolute slot number this item is scheduled in, or -1. Owned by the wheel. */
  wheelSlot: number;
}

export class TimerWheel<T extends WheelItem> {
  private readonly buckets: (Set<T> | undefined)[];
  /** Every slot before this one has been processed. */
  private cursor: number;
  private count = 0;

  constructor(
    private readonly slotMs: number,
    private readonly slots: number,
    nowMs: number,
  ) {
    assert(slotMs > 0 && slots > 0, "a timer wheel needs slots");
    this.buckets = new Array(slots);
    this.cursor = Math.floor(nowMs / slotMs);
  }

  get size(): number {
    return this.count;
  }

  /** Arm (or re-arm) `item` for `atMs`; Infinity disarms it. */
  schedule(item: T, atMs: number): void {
    if (atMs === Number.POSITIVE_INFINITY) {
      this.cancel(item);
      return;
    }
    const slot = Math.max(Math.ceil(atMs / this.slotMs), this.cursor);
    if (item.wheelSlot === slot) return;
    this.cancel(item);
    let bucket = this.buckets[slot % this.slots];
    if (bucket === undefined) {
      bucket = new Set();
      this.buckets[slot % this.slots] = bucket;
    }
    bucket.add(item);
    item.wheelSlot = slot;
    this.count += 1;
  }

  cancel(item: T): void {
    if (item.wheelSlot < 0) return;
    const bucket = this.buckets[item.wheelSlot % this.slots];
    if (bucket?.delete(item)) this.count -= 1;
    item.wheelSlot = -1;
  }

  /** Remove and return every item due at or before `nowMs`. */
  takeDue(nowMs: number): T[] {
    const due: T[] = [];
    const last = Math.floor(nowMs / this.slotMs);
    if (this.count === 0) {
      this.cursor = Math.max(this.cursor, last + 1);
      return due;
    }
    // Visit each bucket at most once, however long the wheel was idle.
    const end = Math.min(last, this.cursor + this.slots - 1);
    for (let slot = this.cursor; slot <= end; slot++) {
      const bucket = this.buckets[slot % this.slots];
      if (bucket === undefined || bucket.size === 0) continue;
      for (const item of bucket) {
        if (item.wheelSlot <= last) {
          bucket.delete(item);
          item.wheelSlot = -1;
          this.count -= 1;
          due.push(item);
        }
      }
    }
    this.cursor = Math.max(this.cursor, last + 1);
    return due;
  }

  /** The earliest armed deadline (ms), or Infinity. */
  nextDeadlineMs(): number {
    if (this.count === 0) return Number.POSITIVE_INFINITY;
    for (let k = 0; k < this.slots; k++) {
      const slot = this.cursor + k;
      const bucket = this.buckets[slot % this.slots];
      if (bucket === undefined) continue;
      for (const item of bucket) if (item.wheelSlot === slot) return slot * this.slotMs;
    }
    let earliest = Number.POSITIVE_INFINITY;
    for (const bucket of this.buckets) {
      if (bucket === undefined) continue;
      for (const item of bucket) earliest = Math.min(earliest, item.wheelSlot);
    }
    return earliest * this.slotMs;
  }
}
