/**
 * The slots a leader has proposed and not yet seen chosen. They always lie in
 * (committed, committed + pipelineDepth], so a ring of the next power of two above the pipeline
 * depth holds each at `slot & mask` without collisions: lookups are one index, and nothing is
 * allocated as slots come and go (a Map reallocates its table as it grows and shrinks).
 */
import { InvariantError } from "../core/index.ts";

export class InflightSlots<T extends { readonly slot: number }> {
  private readonly ring: (T | undefined)[];
  private readonly mask: number;
  private count = 0;

  constructor(window: number) {
    let capacity = 1;
    while (capacity < window) capacity *= 2;
    this.ring = new Array<T | undefined>(capacity).fill(undefined);
    this.mask = capacity - 1;
  }

  get size(): number {
    return this.count;
  }

  get(slot: number): T | undefined {
    const item = this.ring[slot & this.mask];
    return item !== undefined && item.slot === slot ? item : undefined;
  }

  add(item: T): void {
    const place = item.slot & this.mask;
    const held = this.ring[place];
    if (held !== undefined) {
      throw new InvariantError(
        held.slot === item.slot
          ? `slot ${item.slot} proposed twice in one ballot`
          : `slots ${held.slot} and ${item.slot} in flight at once, beyond the pipeline window`,
      );
    }
    this.ring[place] = item;
    this.count += 1;
  }

  delete(slot: number): void {
    const place = slot & this.mask;
    if (this.ring[place]?.slot !== slot) return;
    this.ring[place] = undefined;
    this.count -= 1;
  }

  /** The items by ascending slot (a new array: for the rare paths that walk them all). */
  ascending(): T[] {
    const items: T[] = [];
    for (const item of this.ring) if (item !== undefined) items.push(item);
    return items.sort((a, b) => a.slot - b.slot);
  }

  /** The smallest of `key` over the items (Infinity when none), without allocating. */
  min(key: (item: T) => number): number {
    let least = Number.POSITIVE_INFINITY;
    for (let i = 0; i < this.ring.length; i++) {
      const item = this.ring[i];
      if (item !== undefined) least = Math.min(least, key(item));
    }
    return least;
  }

  /** A copy whose items are copies (for cloning a replica). */
  copy(copyItem: (item: T) => T): InflightSlots<T> {
    const copy = new InflightSlots<T>(this.ring.length);
    for (const item of this.ring) if (item !== undefined) copy.add(copyItem(item));
    return copy;
  }
}
