/**
 * The storage contract, run against every adapter: what a server may rely on from its disk.
 * MemoryStorage is the reference; LmdbStorage must behave the same through the port.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CellMachine, type Command, commandCodec, OPERATION_FORMAT_VERSION } from "../cell/index.ts";
import type { NodeId } from "../core/index.ts";
import {
  BALLOT_CHOSEN,
  initialMembership,
  type LogEntry,
  makeBallot,
  type NodeWrite,
  type Snapshot,
} from "../paxos/index.ts";
import { LmdbStorage } from "./lmdb.ts";
import { MemoryStorage } from "./memory.ts";
import type { ForwardingPointer, StorageBatch, StoragePort } from "./port.ts";

// ---------------------------------------------------------------- fixtures

const node = (serverId: string, incarnation: number): NodeId => ({ serverId, incarnation });
const members = [node("s1", 1), node("s2", 2), node("s3", 3)];

function putCommand(
  session: number,
  seq: number,
  item: string,
  value: Uint8Array | bigint | boolean,
): Command {
  return {
    version: OPERATION_FORMAT_VERSION,
    session,
    seq,
    newSession: seq === 1,
    op: {
      type: "txn",
      txn: { conditions: [{ item, op: "missing" }], reads: [item], writes: [{ item, op: "put", value }] },
    },
  };
}

const leaseCommand: Command = {
  version: OPERATION_FORMAT_VERSION,
  session: 77,
  seq: 3,
  newSession: false,
  op: { type: "lease", lease: { op: "acquire", name: "leader", holder: "host-a", durationMs: 5000 } },
};

/** A command of a format this build does not know: stored and loaded intact all the same. */
const unknownVersionCommand: Command = {
  version: OPERATION_FORMAT_VERSION + 1,
  session: 5,
  seq: 1,
  newSession: true,
  op: { type: "unknown", bytes: new Uint8Array([9, 8, 7]) },
};

/** A snapshot of a real cell state machine that has applied `applied` puts. */
function snapshotAt(index: number, applied = 2): Snapshot {
  const machine = new CellMachine();
  for (let i = 1; i <= applied; i++) {
    machine.apply(putCommand(i, 1, `item-${i}`, BigInt(i) * 10n ** 20n), {
      index: i,
      stampMs: 1_000 + i,
      stampBallot: makeBallot(1, 1),
    });
  }
  return { index, membership: initialMembership(members), state: machine.snapshot() };
}

function entry(slot: number, round = 1, incarnation = 1): LogEntry<Command> {
  return {
    slot,
    ballot: makeBallot(round, incarnation),
    value: {
      kind: "commands",
      stampMs: 1_700_000_000_000 + slot + 0.25,
      stampBallot: makeBallot(round, incarnation),
      commands: [putCommand(slot, 1, `k${slot}`, new Uint8Array([slot, round])), leaseCommand],
    },
  };
}

function write(
  cellKey: string,
  incarnation: number,
  fields: Partial<Pick<NodeWrite<Command>, "promised" | "snapshot" | "truncateThrough" | "entries">> = {},
): NodeWrite<Command> {
  return {
    cellKey,
    node: node("s1", incarnation),
    promised: fields.promised ?? null,
    entries: fields.entries ?? [],
    snapshot: fields.snapshot ?? null,
    truncateThrough: fields.truncateThrough ?? 0,
  };
}

function pointer(cellKey: string, epoch: number): ForwardingPointer {
  return { cellKey, epoch, members: [node("s4", 9), node("s5", 10)], expiresAtMs: 1_700_000_360_000 };
}

function batch(fields: Partial<StorageBatch<Command>>): StorageBatch<Command> {
  return { writes: fields.writes ?? [], removed: fields.removed ?? [], pointers: fields.pointers ?? [] };
}

/** Writes a batch and resolves once done(null) was called; done must be called exactly once. */
function persist(storage: StoragePort<Command>, b: StorageBatch<Command>): Promise<void> {
  return new Promise((resolve, reject) => {
    let calls = 0;
    storage.write(b, (error) => {
      calls += 1;
      if (calls > 1) reject(new Error("done called twice"));
      else if (error !== null) reject(error);
      else resolve();
    });
  });
}

/** A freshly written node: snapshot at `index`, promised, and entries above it. */
function fresh(cellKey: string, incarnation: number, index: number, slots: number[]): NodeWrite<Command> {
  return write(cellKey, incarnation, {
    promised: makeBallot(1, incarnation),
    snapshot: snapshotAt(index),
    entries: slots.map((slot) => entry(slot, 1, incarnation)),
  });
}

// ---------------------------------------------------------------- subjects

interface Subject {
  readonly storage: StoragePort<Command>;
  dispose(): Promise<void>;
}

const subjects: { name: string; make: () => Subject }[] = [
  {
    name: "memory",
    make: () => ({ storage: new MemoryStorage<Command>(), dispose: async () => {} }),
  },
  {
    name: "lmdb",
    make: () => {
      const directory = mkdtempSync(join(tmpdir(), "physalia-contract-"));
      const storage = LmdbStorage.open({ path: directory, codec: commandCodec });
      return {
        storage,
        dispose: async () => {
          await storage.close();
          rmSync(directory, { recursive: true, force: true });
        },
      };
    },
  },
];

describe.each(subjects)("storage contract: $name", ({ make }) => {
  let subject: Subject;
  let storage: StoragePort<Command>;
  beforeEach(() => {
    subject = make();
    storage = subject.storage;
  });
  afterEach(async () => {
    await subject.dispose();
  });

  const loadedNode = (cellKey: string) => {
    const loaded = storage.load(cellKey);
    if (loaded.status !== "found") throw new Error(`cell ${cellKey}: ${JSON.stringify(loaded)}`);
    return loaded.node;
  };
  const slotsOf = (cellKey: string) => loadedNode(cellKey).entries.map((e) => e.slot);

  it("loads absent for a cell never written, and hosts nothing", () => {
    expect(storage.load("vol-0af3")).toEqual({ status: "absent" });
    expect(storage.hostedCells()).toEqual([]);
    expect(storage.pointers()).toEqual([]);
  });

  it("stores a node's header, snapshot and entries, and loads the entries in slot order", async () => {
    const entries = [entry(7), entry(5), entry(6)];
    const snapshot = snapshotAt(4);
    await persist(
      storage,
      batch({ writes: [write("vol-0af3", 1, { promised: makeBallot(3, 2), snapshot, entries })] }),
    );
    expect(storage.load("vol-0af3")).toEqual({
      status: "found",
      node: {
        node: node("s1", 1),
        promised: makeBallot(3, 2),
        snapshot,
        entries: [entry(5), entry(6), entry(7)],
      },
    });
    expect(storage.hostedCells()).toEqual(["vol-0af3"]);
  });

  it("round-trips every log value kind and command kind through the real command codec", async () => {
    const entries: LogEntry<Command>[] = [
      { slot: 1, ballot: makeBallot(2, 1), value: { kind: "noop", stampMs: 12.5 } },
      {
        slot: 2,
        ballot: BALLOT_CHOSEN,
        value: { kind: "reconfigure", stampMs: 13, change: { add: "s4", remove: node("s3", 3) } },
      },
      {
        slot: 3,
        ballot: makeBallot(2, 1),
        value: { kind: "reconfigure", stampMs: 14, change: { add: null, remove: null } },
      },
      {
        slot: 4,
        ballot: makeBallot(2, 1),
        value: {
          kind: "commands",
          stampMs: 15,
          stampBallot: makeBallot(2, 1),
          commands: [
            putCommand(1, 1, "flag", true),
            putCommand(1, 2, "counter", -(2n ** 70n)),
            putCommand(1, 3, "blob", new Uint8Array(4096).fill(0xab)),
            leaseCommand,
            unknownVersionCommand,
          ],
        },
      },
    ];
    await persist(storage, batch({ writes: [write("c", 1, { snapshot: snapshotAt(0, 40), entries })] }));
    expect(loadedNode("c").entries).toEqual(entries);
    expect(loadedNode("c").snapshot).toEqual(snapshotAt(0, 40));
  });

  it("a node without a snapshot yet is hosted but loads as absent, and keeps its promise and entries", async () => {
    await persist(
      storage,
      batch({ writes: [write("joining", 4, { promised: makeBallot(5, 1), entries: [entry(3, 5, 1)] })] }),
    );
    expect(storage.hostedCells()).toEqual(["joining"]);
    expect(storage.load("joining")).toEqual({ status: "absent" });
    await persist(storage, batch({ writes: [write("joining", 4, { snapshot: snapshotAt(2) })] }));
    const loaded = loadedNode("joining");
    expect(loaded.node).toEqual(node("s1", 4));
    expect(loaded.promised).toBe(makeBallot(5, 1));
    expect(loaded.entries).toEqual([entry(3, 5, 1)]);
  });

  it("ignores every part of a write from an older incarnation", async () => {
    await persist(storage, batch({ writes: [fresh("c", 5, 2, [3, 4])], pointers: [pointer("c", 3)] }));
    const before = storage.load("c");
    await persist(
      storage,
      batch({
        writes: [
          write("c", 4, {
            promised: makeBallot(99, 4),
            snapshot: snapshotAt(50),
            truncateThrough: 10,
            entries: [entry(3, 9, 4), entry(60, 9, 4)],
          }),
        ],
      }),
    );
    expect(storage.load("c")).toEqual(before);
    expect(storage.pointers()).toEqual([pointer("c", 3)]);
  });

  it("leaves out and deletes the forwarding pointers expired by the time it is given", async () => {
    const at = (cellKey: string, expiresAtMs: number) => ({ ...pointer(cellKey, 1), expiresAtMs });
    await persist(storage, batch({ pointers: [at("a", 3_000), at("b", 1_000), at("c", 2_000)] }));
    const byCell = (pointers: ForwardingPointer[]) =>
      pointers.sort((x, y) => x.cellKey.localeCompare(y.cellKey));
    expect(byCell(storage.pointers(2_000))).toEqual([at("a", 3_000)]);
    // Deleted, not only left out: asked without a time, the storage has only the live one.
    expect(storage.pointers()).toEqual([at("a", 3_000)]);
  });

  it("a newer incarnation replaces the node's records and drops its forwarding pointer", async () => {
    await persist(
      storage,
      batch({
        writes: [
          write("c", 2, {
            promised: makeBallot(40, 2),
            snapshot: snapshotAt(8),
            entries: [entry(9), entry(10)],
          }),
        ],
        pointers: [pointer("c", 4), pointer("other", 1)],
      }),
    );
    await persist(
      storage,
      batch({ writes: [write("c", 3, { snapshot: snapshotAt(1), entries: [entry(2, 1, 3)] })] }),
    );
    expect(storage.load("c")).toEqual({
      status: "found",
      node: { node: node("s1", 3), promised: 0, snapshot: snapshotAt(1), entries: [entry(2, 1, 3)] },
    });
    expect(storage.pointers()).toEqual([pointer("other", 1)]);
    // A first write of a cell drops a pointer left by an earlier, removed node as well.
    await persist(storage, batch({ writes: [fresh("other", 1, 0, [])] }));
    expect(storage.pointers()).toEqual([]);
  });

  it("the promise only grows; null leaves it unchanged", async () => {
    await persist(
      storage,
      batch({ writes: [write("c", 1, { promised: makeBallot(5, 1), snapshot: snapshotAt(0) })] }),
    );
    await persist(storage, batch({ writes: [write("c", 1, { promised: makeBallot(3, 2) })] }));
    expect(loadedNode("c").promised).toBe(makeBallot(5, 1));
    await persist(storage, batch({ writes: [write("c", 1, { entries: [entry(1)] })] }));
    expect(loadedNode("c").promised).toBe(makeBallot(5, 1));
    await persist(storage, batch({ writes: [write("c", 1, { promised: makeBallot(6, 3) })] }));
    expect(loadedNode("c").promised).toBe(makeBallot(6, 3));
  });

  it("a snapshot is replaced only by one at an equal or higher index", async () => {
    await persist(storage, batch({ writes: [write("c", 1, { snapshot: snapshotAt(10, 2) })] }));
    await persist(storage, batch({ writes: [write("c", 1, { snapshot: snapshotAt(9, 3) })] }));
    expect(loadedNode("c").snapshot).toEqual(snapshotAt(10, 2));
    await persist(storage, batch({ writes: [write("c", 1, { snapshot: snapshotAt(10, 4) })] }));
    expect(loadedNode("c").snapshot).toEqual(snapshotAt(10, 4));
    await persist(storage, batch({ writes: [write("c", 1, { snapshot: snapshotAt(20, 1) })] }));
    expect(loadedNode("c").snapshot).toEqual(snapshotAt(20, 1));
  });

  it("truncateThrough deletes stored entries with slot <= n, before the write's own entries are stored", async () => {
    await persist(storage, batch({ writes: [fresh("c", 1, 0, [1, 2, 3, 4, 5, 6])] }));
    // The snapshot index stays 0 so every stored entry is live and visible to load.
    await persist(
      storage,
      batch({ writes: [write("c", 1, { truncateThrough: 4, entries: [entry(2, 7)] })] }),
    );
    expect(slotsOf("c")).toEqual([2, 5, 6]);
    expect(loadedNode("c").entries[0]).toEqual(entry(2, 7));
  });

  it("a later entry for a slot replaces the stored one, within a write and across batches", async () => {
    await persist(storage, batch({ writes: [fresh("c", 1, 0, [1, 2])] }));
    await persist(storage, batch({ writes: [write("c", 1, { entries: [entry(2, 3), entry(2, 4)] })] }));
    expect(loadedNode("c").entries).toEqual([entry(1), entry(2, 4)]);
  });

  it("entries at or below the snapshot index are not loaded (the snapshot covers them)", async () => {
    await persist(storage, batch({ writes: [fresh("c", 1, 0, [1, 2, 3, 4])] }));
    await persist(storage, batch({ writes: [write("c", 1, { snapshot: snapshotAt(2) })] }));
    expect(slotsOf("c")).toEqual([3, 4]);
  });

  it("removed deletes the records of exactly that incarnation, after the batch's writes", async () => {
    await persist(storage, batch({ writes: [fresh("a", 1, 0, [1]), fresh("b", 2, 0, [1])] }));
    await persist(
      storage,
      batch({
        writes: [fresh("a", 3, 0, [1, 2])],
        removed: [
          { cellKey: "a", incarnation: 3 }, // written in this very batch: removed after it
          { cellKey: "b", incarnation: 1 }, // not the stored incarnation: nothing happens
          { cellKey: "never", incarnation: 1 },
        ],
      }),
    );
    expect(storage.load("a")).toEqual({ status: "absent" });
    expect(slotsOf("b")).toEqual([1]);
    expect(storage.hostedCells()).toEqual(["b"]);
    // The cell can be hosted again later, from scratch.
    await persist(storage, batch({ writes: [fresh("a", 4, 0, [])] }));
    expect(loadedNode("a").entries).toEqual([]);
  });

  it("forwarding pointers are stored per cell; a later one replaces the cell's, after removals", async () => {
    await persist(storage, batch({ writes: [fresh("a", 1, 0, [])] }));
    await persist(
      storage,
      batch({ removed: [{ cellKey: "a", incarnation: 1 }], pointers: [pointer("a", 2), pointer("b", 5)] }),
    );
    expect(storage.load("a")).toEqual({ status: "absent" });
    await persist(storage, batch({ pointers: [pointer("a", 3)] }));
    const byCell = storage.pointers().sort((x, y) => x.cellKey.localeCompare(y.cellKey));
    expect(byCell).toEqual([pointer("a", 3), pointer("b", 5)]);
  });

  it("cells whose keys share a prefix stay apart", async () => {
    const cells = ["a", "ab", "a b", "b", "ä"];
    await persist(storage, batch({ writes: cells.map((cellKey, i) => fresh(cellKey, i + 1, 0, [1, 2, 3])) }));
    await persist(
      storage,
      batch({
        writes: [write("a", 1, { truncateThrough: 3 })],
        removed: [{ cellKey: "ab", incarnation: 2 }],
      }),
    );
    expect(slotsOf("a")).toEqual([]);
    expect(storage.load("ab")).toEqual({ status: "absent" });
    for (const cellKey of ["a b", "b", "ä"]) expect(slotsOf(cellKey)).toEqual([1, 2, 3]);
    expect(storage.hostedCells().sort()).toEqual(["a", "a b", "b", "ä"]);
  });

  it("calls done exactly once, after the batch is readable", async () => {
    let calls = 0;
    await new Promise<void>((resolve) => {
      storage.write(batch({ writes: [fresh("c", 1, 0, [1])] }), (error) => {
        calls += 1;
        expect(error).toBeNull();
        expect(slotsOf("c")).toEqual([1]);
        resolve();
      });
    });
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(calls).toBe(1);
  });
});
