/**
 * The in-memory log of one node: entries by slot, dense around the applied index. An array with
 * a moving start replaces a hash map: slots are small consecutive integers, so indexing is direct,
 * iteration is in slot order, and trimming the front is cheap.
 */
import type { LogEntry } from "./types.ts";

export class SlotLog<C> {
  private entries: (LogEntry<C> | undefined)[] = [];
  /** Slot of entries[head]. */
  private base = 0;
  private head = 0;
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(slot: number): LogEntry<C> | undefined {
    const index = slot - this.base + this.head;
    return index >= this.head && index < this.entries.length ? this.entries[index] : undefined;
  }

  set(slot: number, entry: LogEntry<C>): void {
    if (this.count === 0) {
      this.entries = [entry];
      this.base = slot;
      this.head = 0;
      this.count = 1;
      return;
    }
    if (slot < this.base) {
      // Rare (a catch-up below what is held): rebuild with room in front.
      const gap = this.base - slot;
      const live = this.entries.slice(this.head);
      this.entries = [entry, ...new Array<LogEntry<C> | undefined>(gap - 1).fill(undefined), ...live];
      this.base = slot;
      this.head = 0;
      this.count += 1;
      return;
    }
    const index = slot - this.base + this.head;
    while (this.entries.length <= index) this.entries.push(undefined);
    if (this.entries[index] === undefined) this.count += 1;
    this.entries[index] = entry;
  }

  delete(slot: number): void {
    const index = slot - this.base + this.head;
    if (index < this.head || index >= this.entries.length || this.entries[index] === undefined) return;
    this.entries[index] = undefined;
    this.count -= 1;
    if (this.count === 0) {
      this.entries = [];
      this.head = 0;
      return;
    }
    while (this.entries[this.head] === undefined) {
      this.head += 1;
      this.base += 1;
    }
    if (this.head >= 64 && this.head * 2 >= this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
  }

  /** Delete every entry with slot <= `slot`. */
  deleteThrough(slot: number): void {
    if (this.count === 0) return;
    const last = Math.min(slot, this.base + this.entries.length - this.head - 1);
    for (let s = this.base; s <= last; s++) this.delete(s);
  }

  /** Slots held, ascending. */
  keys(): number[] {
    const out: number[] = [];
    for (let i = this.head; i < this.entries.length; i++) {
      if (this.entries[i] !== undefined) out.push(this.base + i - this.head);
    }
    return out;
  }

  copy(): SlotLog<C> {
    const copy = new SlotLog<C>();
    copy.entries = this.entries.slice();
    copy.base = this.base;
    copy.head = this.head;
    copy.count = this.count;
    return copy;
  }
}
