/**
 * The in-memory log of one node: entries by slot, dense around the applied index. A ring of
 * power-of-two capacity replaces a hash map: slots are small consecutive integers, so a slot's
 * place is `slot & mask`, iteration is in slot order, and trimming the front frees nothing and
 * allocates nothing. The ring only grows (doubling) when a slot lands beyond the window.
 */
import { assert } from "../core/index.ts";
import type { LogEntry } from "./types.ts";

const initialCapacity = 8;
/** No node holds a window this wide: the replica trims to a few dozen entries (limits.ts). */
const capacityMax = 1 << 20;

export class SlotLog<C> {
  private ring: (LogEntry<C> | undefined)[];
  private mask: number;
  /** The lowest slot the window covers; every held slot is in [base, base + capacity). */
  private base = 0;
  private count = 0;

  constructor(capacity = initialCapacity) {
    this.ring = new Array<LogEntry<C> | undefined>(capacity).fill(undefined);
    this.mask = capacity - 1;
  }

  get size(): number {
    return this.count;
  }

  get(slot: number): LogEntry<C> | undefined {
    if (slot < this.base || slot > this.base + this.mask) return undefined;
    return this.ring[slot & this.mask];
  }

  set(slot: number, entry: LogEntry<C>): void {
    if (this.count === 0) this.base = slot;
    // Rare: a catch-up below what is held moves the window down; a slot beyond it widens it.
    else if (slot < this.base) this.reshape(this.highest() - slot + 1, slot);
    else if (slot > this.base + this.mask) this.reshape(slot - this.base + 1, this.base);
    const place = slot & this.mask;
    if (this.ring[place] === undefined) this.count += 1;
    this.ring[place] = entry;
  }

  delete(slot: number): void {
    if (slot < this.base || slot > this.base + this.mask) return;
    const place = slot & this.mask;
    if (this.ring[place] === undefined) return;
    this.ring[place] = undefined;
    this.count -= 1;
    if (slot === this.base && this.count > 0) {
      while (this.ring[this.base & this.mask] === undefined) this.base += 1;
    }
  }

  /** Delete every entry with slot <= `slot`. */
  deleteThrough(slot: number): void {
    const last = Math.min(slot, this.base + this.mask);
    for (let s = this.base; s <= last && this.count > 0; s++) this.delete(s);
  }

  /** Slots held, ascending. */
  keys(): number[] {
    const out: number[] = [];
    if (this.count === 0) return out;
    for (let s = this.base; s <= this.base + this.mask; s++) {
      if (this.ring[s & this.mask] !== undefined) out.push(s);
    }
    return out;
  }

  copy(): SlotLog<C> {
    const copy = new SlotLog<C>(this.ring.length);
    copy.ring = this.ring.slice();
    copy.base = this.base;
    copy.count = this.count;
    return copy;
  }

  /** Re-lays the held entries into a ring covering at least `span` slots from `base`. */
  private reshape(span: number, base: number): void {
    assert(span <= capacityMax, () => `a log window of ${span} slots is beyond ${capacityMax}`);
    let capacity = this.ring.length;
    while (capacity < span) capacity *= 2;
    const ring = new Array<LogEntry<C> | undefined>(capacity).fill(undefined);
    const mask = capacity - 1;
    for (let s = this.base; s <= this.base + this.mask; s++) {
      const entry = this.ring[s & this.mask];
      if (entry !== undefined) ring[s & mask] = entry;
    }
    this.ring = ring;
    this.mask = mask;
    this.base = base;
  }

  private highest(): number {
    let s = this.base + this.mask;
    while (this.ring[s & this.mask] === undefined) s -= 1;
    return s;
  }
}
