import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SlotLog } from "./slot-log.ts";
import type { LogEntry } from "./types.ts";

const entry = (slot: number): LogEntry<string> => ({
  slot,
  ballot: 1,
  value: { kind: "noop", stampMs: slot },
});

describe("slot log", () => {
  it("behaves like a map from slot to entry, iterated in slot order", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.record({ op: fc.constant("set" as const), slot: fc.integer({ min: 1, max: 200 }) }),
            fc.record({ op: fc.constant("delete" as const), slot: fc.integer({ min: 1, max: 200 }) }),
            fc.record({ op: fc.constant("through" as const), slot: fc.integer({ min: 0, max: 200 }) }),
          ),
          { maxLength: 300 },
        ),
        (ops) => {
          const log = new SlotLog<string>();
          const model = new Map<number, LogEntry<string>>();
          for (const { op, slot } of ops) {
            if (op === "set") {
              log.set(slot, entry(slot));
              model.set(slot, entry(slot));
            } else if (op === "delete") {
              log.delete(slot);
              model.delete(slot);
            } else {
              log.deleteThrough(slot);
              for (const key of [...model.keys()]) if (key <= slot) model.delete(key);
            }
            expect(log.size).toBe(model.size);
          }
          expect(log.keys()).toEqual([...model.keys()].sort((a, b) => a - b));
          for (let slot = 0; slot <= 201; slot++) expect(log.get(slot)).toEqual(model.get(slot));
          const copy = log.copy();
          copy.set(500, entry(500));
          expect(log.get(500)).toBeUndefined();
        },
      ),
    );
  });
});
