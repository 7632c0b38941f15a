/**
 * Pending changes as the one buffer a checkpoint on another thread receives. Folding itself is
 * covered by lmdb.test.ts (random histories against MemoryStorage).
 */
import { describe, expect, it } from "vitest";
import { DecodeError } from "../core/index.ts";
import { initialMembership, makeBallot } from "../paxos/index.ts";
import { decodePendingChanges, encodePendingChanges, type PendingChange } from "./overlay.ts";

const node = { serverId: "s1", incarnation: 4 };

const cells: [string, PendingChange[]][] = [
  [
    "vol-é1",
    [
      { kind: "remove", incarnation: 3 },
      {
        kind: "write",
        write: {
          cellKey: "vol-é1",
          node,
          promised: makeBallot(9, 4),
          snapshot: { index: 12, membership: initialMembership([node]), state: new Uint8Array([1, 2, 3]) },
          truncateThrough: 12,
          // Not in slot order: the order of the map is kept.
          entries: new Map([
            [14, new Uint8Array([7, 7])],
            [13, new Uint8Array(300).fill(9)],
          ]),
        },
      },
      {
        kind: "pointer",
        pointer: { cellKey: "vol-é1", epoch: 2, members: [node], expiresAtMs: 1_700_000_000_000 },
      },
    ],
  ],
  [
    "b",
    [
      {
        kind: "write",
        write: { cellKey: "b", node, promised: null, snapshot: null, truncateThrough: 0, entries: new Map() },
      },
    ],
  ],
];

describe("pending changes as bytes", () => {
  it("round-trip every kind of change and field, cells and changes in order", () => {
    const bytes = encodePendingChanges(cells, cells.length);
    expect([...decodePendingChanges(bytes)]).toEqual(cells);
    // A buffer of its own, so that it can be moved to another thread.
    expect(bytes.byteOffset).toBe(0);
    expect(bytes.buffer.byteLength).toBe(bytes.length);
  });

  it("refuse a count that does not match the cells given", () => {
    expect(() => encodePendingChanges(cells, 3)).toThrow(/2 cells encoded, 3 announced/);
  });

  it("bytes that are not pending changes fail with DecodeError and nothing else", () => {
    const bytes = encodePendingChanges(cells, cells.length);
    const damaged = [
      bytes.subarray(0, bytes.length - 1),
      Uint8Array.from([9, ...bytes.subarray(1)]),
      Uint8Array.from([...bytes, 0]),
      new Uint8Array([1, 0xff, 0xff, 0xff, 0x0f]),
    ];
    for (const input of damaged) expect(() => [...decodePendingChanges(input)]).toThrow(DecodeError);
  });
});
