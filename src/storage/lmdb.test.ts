/**
 * What only the lmdb adapter has: a file that outlives the process, checksums, failing writes,
 * transactions. The shared semantics are in contract.test.ts; the crash test in lmdb.crash.test.ts.
 */
import { mkdtempSync, readFileSync, rmSync, truncateSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import fc from "fast-check";
import { open as openLmdb } from "lmdb";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CellMachine, type Command, commandCodec, OPERATION_FORMAT_VERSION } from "../cell/index.ts";
import { InvariantError, type NodeId } from "../core/index.ts";
import {
  encodeStoredEntry,
  initialMembership,
  type LogEntry,
  makeBallot,
  type NodeWrite,
  type Snapshot,
} from "../paxos/index.ts";
import { durableEnvironmentOptions, LmdbStorage } from "./lmdb.ts";
import { MemoryStorage } from "./memory.ts";
import type { ForwardingPointer, LoadResult, StorageBatch, StoragePort } from "./port.ts";

// ---------------------------------------------------------------- fixtures

const node = (serverId: string, incarnation: number): NodeId => ({ serverId, incarnation });

function putCommand(session: number, item: string, value: Uint8Array): Command {
  return {
    version: OPERATION_FORMAT_VERSION,
    session,
    seq: 1,
    newSession: true,
    op: { type: "txn", txn: { conditions: [], reads: [], writes: [{ item, op: "put", value }] } },
  };
}

/** Snapshot states of a real cell that has applied 0..3 puts: distinct bytes per `applied`. */
const cellStates: Uint8Array[] = [0, 1, 2, 3].map((applied) => {
  const machine = new CellMachine();
  for (let i = 1; i <= applied; i++) {
    machine.apply(putCommand(i, `item-${i}`, new Uint8Array([i])), {
      index: i,
      stampMs: 1_000 + i,
      stampBallot: makeBallot(1, 1),
    });
  }
  return machine.snapshot();
});

function snapshotAt(index: number, applied = 1): Snapshot {
  return {
    index,
    membership: initialMembership([node("s1", 1), node("s2", 2), node("s3", 3)]),
    state: cellStates[applied] as Uint8Array,
  };
}

function entry(slot: number, round = 1): LogEntry<Command> {
  return {
    slot,
    ballot: makeBallot(round, 1),
    value: {
      kind: "commands",
      stampMs: 1_700_000_000_000 + slot,
      stampBallot: makeBallot(round, 1),
      commands: [putCommand(slot, `k${slot}`, new Uint8Array([slot % 256, round]))],
    },
  };
}

function fresh(cellKey: string, incarnation: number, slots: readonly number[]): NodeWrite<Command> {
  return {
    cellKey,
    node: node("s1", incarnation),
    promised: makeBallot(2, incarnation),
    entries: slots.map((slot) => entry(slot)),
    snapshot: snapshotAt(0),
    truncateThrough: 0,
  };
}

function pointer(cellKey: string, epoch: number): ForwardingPointer {
  return { cellKey, epoch, members: [node("s4", 9)], expiresAtMs: 1_700_000_360_000.5 };
}

function batch(fields: Partial<StorageBatch<Command>>): StorageBatch<Command> {
  return { writes: fields.writes ?? [], removed: fields.removed ?? [], pointers: fields.pointers ?? [] };
}

function persist(storage: StoragePort<Command>, b: StorageBatch<Command>): Promise<void> {
  return new Promise((resolve, reject) => {
    storage.write(b, (error) => (error === null ? resolve() : reject(error)));
  });
}

/** Writes a batch expected to fail; resolves with the error done received. */
function persistFailing(storage: StoragePort<Command>, b: StorageBatch<Command>): Promise<Error> {
  return new Promise((resolve, reject) => {
    storage.write(b, (error) =>
      error === null ? reject(new Error("the batch was expected to fail")) : resolve(error),
    );
  });
}

/** Everything a server can read back: hosted cells, each cell's load, pointers (sorted). */
function everything(storage: StoragePort<Command>, cells: readonly string[]) {
  const loads: Record<string, LoadResult<Command>> = {};
  for (const cellKey of cells) loads[cellKey] = storage.load(cellKey);
  return {
    hosted: storage.hostedCells().sort(),
    loads,
    pointers: storage.pointers().sort((a, b) => a.cellKey.localeCompare(b.cellKey)),
  };
}

function flipped(bytes: Uint8Array, at: number): Uint8Array {
  const copy = bytes.slice();
  copy[at] = (copy[at] as number) ^ 0x40;
  return copy;
}

/** A record whose checksum is right (over key and body) but whose body is not a valid record. */
function sealedGarbage(key: Uint8Array, body: Uint8Array): Uint8Array {
  const record = new Uint8Array(4 + body.length);
  new DataView(record.buffer).setUint32(0, crc32(body, crc32(key)));
  record.set(body, 4);
  return record;
}

/** MemoryStorage after the batches: what a storage should read back. */
async function modelOf(batches: readonly StorageBatch<Command>[]): Promise<MemoryStorage<Command>> {
  const model = new MemoryStorage<Command>();
  for (const b of batches) await persist(model, b);
  return model;
}

// ---------------------------------------------------------------- tests

/** The module a server's storage starts its checkpoint worker from. */
const checkpointWorker = new URL("../cli/checkpoint-worker.ts", import.meta.url);

describe("LmdbStorage", () => {
  const directories: string[] = [];
  const open: LmdbStorage<Command>[] = [];
  const openAt = (directory: string): LmdbStorage<Command> => {
    const storage = LmdbStorage.open({ path: directory, codec: commandCodec });
    open.push(storage);
    return storage;
  };
  let directory: string;
  let storage: LmdbStorage<Command>;
  beforeEach(() => {
    directory = mkdtempSync(join(tmpdir(), "physalia-lmdb-"));
    directories.push(directory);
    storage = openAt(directory);
  });
  afterEach(async () => {
    for (const s of open.splice(0)) await s.close();
    for (const d of directories.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  /** Three cells with entries, a node still waiting for its snapshot, and pointers. */
  async function populate(target: LmdbStorage<Command>): Promise<void> {
    await persist(target, batch({ writes: [fresh("a", 1, [1, 2, 3]), fresh("b", 2, [1, 2, 3, 4])] }));
    await persist(
      target,
      batch({
        writes: [
          fresh("c", 3, [1]),
          {
            ...fresh("a", 1, [4]),
            promised: makeBallot(7, 1),
            snapshot: snapshotAt(2, 3),
            truncateThrough: 2,
          },
          { ...fresh("joining", 5, [9]), snapshot: null },
        ],
        pointers: [pointer("gone", 4)],
      }),
    );
  }
  const cells = ["a", "b", "c", "joining", "gone"];

  it("reopening after close returns identical state", async () => {
    await populate(storage);
    const before = everything(storage, cells);
    expect((before.loads.a as { status: string }).status).toBe("found");
    await storage.close();
    const reopened = openAt(directory);
    expect(everything(reopened, cells)).toEqual(before);
    expect(reopened.stats().hostedNodes).toBe(4);
    expect(reopened.hostedCount()).toBe(4);
  });

  it("refuses to start on a journal file deleted or cut short, which a crash cannot do", async () => {
    const damages: [string, (dir: string) => void, RegExp][] = [
      [
        "the active file cut short",
        (dir) => truncateSync(join(dir, "journal.log"), 700),
        /journal .*journal\.log is 700 bytes, shorter than the \d+ it had: journal files never shrink/,
      ],
      [
        "the active file emptied",
        (dir) => truncateSync(join(dir, "journal.log"), 0),
        /journal\.log is 0 bytes/,
      ],
      [
        "the other file deleted",
        (dir) => unlinkSync(join(dir, "journal.1.log")),
        /journal .*journal\.1\.log is missing/,
      ],
    ];
    for (const [what, damage, expected] of damages) {
      const dir = mkdtempSync(join(tmpdir(), "physalia-lmdb-"));
      directories.push(dir);
      const crashed = LmdbStorage.open({ path: dir, codec: commandCodec });
      await populate(crashed);
      // Acknowledged, and in the journal only: what the damage loses.
      await crashed.abandonForTest();
      damage(dir);
      expect(() => LmdbStorage.open({ path: dir, codec: commandCodec }), what).toThrow(expected);
      expect(() => LmdbStorage.open({ path: dir, codec: commandCodec }), what).toThrow(/refuses to start/);
    }
    // Undamaged, the same crash replays everything.
    await populate(storage);
    const before = everything(storage, cells);
    await storage.abandonForTest();
    open.splice(open.indexOf(storage), 1);
    expect(everything(openAt(directory), cells)).toEqual(before);
  });

  it("names the bytes it dropped after the last whole record, which a crash or damage leaves there", async () => {
    const crashAndReopen = async (damage: (journal: Buffer, lastAt: number) => void) => {
      const dir = mkdtempSync(join(tmpdir(), "physalia-lmdb-"));
      directories.push(dir);
      const crashed = LmdbStorage.open({ path: dir, codec: commandCodec });
      await populate(crashed);
      await crashed.abandonForTest();
      const path = join(dir, "journal.log");
      const journal = readFileSync(path);
      let lastAt = -1;
      for (let at = 0; journal.readUInt32BE(at) !== 0; at += 16 + journal.readUInt32BE(at)) lastAt = at;
      expect(lastAt).toBeGreaterThanOrEqual(0);
      damage(journal, lastAt);
      writeFileSync(path, journal);
      const reopened = LmdbStorage.open({ path: dir, codec: commandCodec });
      open.push(reopened);
      return { dropped: reopened.droppedJournalEnds, path, lastAt };
    };
    const intact = await crashAndReopen(() => {});
    expect(intact.dropped).toEqual([]);
    const flipped = await crashAndReopen((journal, lastAt) => {
      journal[lastAt + 20] = (journal[lastAt + 20] as number) ^ 0xff;
    });
    expect(flipped.dropped).toEqual([
      expect.objectContaining({ path: flipped.path, at: flipped.lastAt, problem: "fails its checksum" }),
    ]);
  });

  it("a corrupt node record loads as corrupt, naming the cell and the record; other cells still load", async () => {
    await populate(storage);
    const record = { kind: "node", cellKey: "b" } as const;
    const raw = storage.recordBytesForTest(record) as Uint8Array;
    storage.overwriteRecordBytesForTest(record, flipped(raw, raw.length - 3));
    const loaded = storage.load("b");
    expect(loaded.status).toBe("corrupt");
    expect(loaded.status === "corrupt" && loaded.detail).toMatch(/^cell b: node record fails its checksum/);
    expect(storage.load("a").status).toBe("found");
    expect(storage.load("c").status).toBe("found");
    expect(storage.hostedCells().sort()).toEqual(["a", "b", "c", "joining"]);
  });

  it("pages through hosted cells in key order with one range read per page", async () => {
    await populate(storage);
    expect(storage.hostedCellsPage("", 2)).toEqual(["a", "b"]);
    expect(storage.hostedCellsPage("b", 2)).toEqual(["c", "joining"]);
    expect(storage.hostedCellsPage("joining", 2)).toEqual([]);
    // A key that is not hosted still marks where the next page starts.
    expect(storage.hostedCellsPage("bb", 10)).toEqual(["c", "joining"]);
    expect(storage.hostedCellsPage("", 0)).toEqual([]);
  });

  it("a corrupt log segment loads as corrupt, naming the cell and the segment; other cells still load", async () => {
    await populate(storage);
    const record = { kind: "segment", cellKey: "b", lastSlot: 4 } as const;
    const raw = storage.recordBytesForTest(record) as Uint8Array;
    storage.overwriteRecordBytesForTest(record, flipped(raw, 10));
    const loaded = storage.load("b");
    expect(loaded.status === "corrupt" && loaded.detail).toMatch(
      /^cell b: log segment record ending at slot 4 fails its checksum/,
    );
    expect(storage.load("a").status).toBe("found");
  });

  it("truncated records load as corrupt", async () => {
    await populate(storage);
    const header = storage.recordBytesForTest({ kind: "node", cellKey: "a" }) as Uint8Array;
    storage.overwriteRecordBytesForTest(
      { kind: "node", cellKey: "a" },
      header.subarray(0, header.length - 5),
    );
    const segment = { kind: "segment", cellKey: "c", lastSlot: 1 } as const;
    storage.overwriteRecordBytesForTest(segment, new Uint8Array([1, 2]));
    const a = storage.load("a");
    const c = storage.load("c");
    expect(a.status === "corrupt" && a.detail).toMatch(/^cell a: node record fails its checksum/);
    expect(c.status === "corrupt" && c.detail).toBe(
      "cell c: log segment record ending at slot 1 is truncated (2 bytes)",
    );
    expect(storage.load("b").status).toBe("found");
  });

  it("a record with a correct checksum but undecodable content loads as corrupt", async () => {
    await populate(storage);
    const key = new TextEncoder().encode("b");
    // Kind 1 (a node record) followed by record version 9, which no build writes.
    storage.overwriteRecordBytesForTest(
      { kind: "node", cellKey: "b" },
      sealedGarbage(key, new Uint8Array([1, 9])),
    );
    const loaded = storage.load("b");
    expect(loaded.status === "corrupt" && loaded.detail).toMatch(
      /^cell b: node record does not decode: .*version 9/,
    );
  });

  it("a valid record copied under another cell's key fails the checksum (it covers the key)", async () => {
    await populate(storage);
    const fromA = storage.recordBytesForTest({ kind: "node", cellKey: "a" }) as Uint8Array;
    storage.overwriteRecordBytesForTest({ kind: "node", cellKey: "c" }, fromA);
    // Both segments end at slot 4: a's holds slots 3 and 4, b's 1 to 4.
    const fromA4 = storage.recordBytesForTest({ kind: "segment", cellKey: "a", lastSlot: 4 }) as Uint8Array;
    storage.overwriteRecordBytesForTest({ kind: "segment", cellKey: "b", lastSlot: 4 }, fromA4);
    expect(storage.load("c").status).toBe("corrupt");
    const b = storage.load("b");
    expect(b.status === "corrupt" && b.detail).toMatch(
      /^cell b: log segment record ending at slot 4 fails its checksum/,
    );
  });

  it("a corrupt forwarding pointer is left out of pointers() and counted", async () => {
    await persist(storage, batch({ pointers: [pointer("x", 1), pointer("y", 2)] }));
    const raw = storage.recordBytesForTest({ kind: "pointer", cellKey: "x" }) as Uint8Array;
    storage.overwriteRecordBytesForTest({ kind: "pointer", cellKey: "x" }, flipped(raw, 6));
    expect(storage.pointers()).toEqual([pointer("y", 2)]);
    expect(storage.stats().pointersSkippedCorrupt).toBe(1);
  });

  it("pointers expired at a start are deleted from disk, and counted", async () => {
    const at = (cellKey: string, expiresAtMs: number) => ({ ...pointer(cellKey, 1), expiresAtMs });
    await persist(storage, batch({ pointers: [at("old", 1_000), at("new", 9_000)] }));
    await storage.close();
    const reopened = openAt(directory);
    expect(reopened.pointers(5_000)).toEqual([at("new", 9_000)]);
    expect(reopened.stats().pointersExpired).toBe(1);
    await reopened.close();
    const again = openAt(directory);
    expect(again.pointers()).toEqual([at("new", 9_000)]);
    expect(again.stats().pointersExpired).toBe(0);
  });

  it("a write that needs a corrupt node record fails its whole batch and commits nothing", async () => {
    await populate(storage);
    const raw = storage.recordBytesForTest({ kind: "node", cellKey: "b" }) as Uint8Array;
    storage.overwriteRecordBytesForTest({ kind: "node", cellKey: "b" }, flipped(raw, 5));
    const before = everything(storage, cells);
    const error = await persistFailing(
      storage,
      batch({
        writes: [
          { ...fresh("a", 1, [10]), snapshot: null },
          { ...fresh("b", 2, [5]), snapshot: null },
        ],
        pointers: [pointer("zz", 1)],
      }),
    );
    expect(error.message).toMatch(/cell b: node record fails its checksum .*; the write needs it intact/);
    expect(everything(storage, cells)).toEqual(before);
    expect(storage.stats().batchesFailed).toBe(1);
    // The failed batch is no longer in flight: the next one goes through.
    await persist(storage, batch({ writes: [{ ...fresh("a", 1, [10]), snapshot: null }] }));
    const a = storage.load("a");
    expect(a.status === "found" && a.node.entries.map((e) => e.slot)).toEqual([3, 4, 10]);
  });

  it("a write carrying a whole snapshot replaces a corrupt node record and its entries", async () => {
    await populate(storage);
    const raw = storage.recordBytesForTest({ kind: "node", cellKey: "b" }) as Uint8Array;
    storage.overwriteRecordBytesForTest({ kind: "node", cellKey: "b" }, flipped(raw, 5));
    expect(storage.load("b").status).toBe("corrupt");
    // A node added to replace the faulty one: a new incarnation with its first snapshot.
    await persist(storage, batch({ writes: [{ ...fresh("b", 9, [7]), founding: true }] }));
    const b = storage.load("b");
    expect(b.status).toBe("found");
    if (b.status === "found") {
      expect(b.node.node.incarnation).toBe(9);
      expect(b.node.entries.map((e) => e.slot)).toEqual([7]);
    }
    expect(storage.load("a").status).toBe("found");
  });

  it("a removal deletes a corrupt node record and its entries, whatever incarnation it names", async () => {
    await populate(storage);
    const raw = storage.recordBytesForTest({ kind: "node", cellKey: "b" }) as Uint8Array;
    storage.overwriteRecordBytesForTest({ kind: "node", cellKey: "b" }, flipped(raw, 5));
    expect(storage.load("b").status).toBe("corrupt");
    // Node b was incarnation 2; the damaged record cannot say so, and a removal builds on nothing.
    // An intact record of another incarnation than the removal's stays.
    await persist(
      storage,
      batch({
        removed: [
          { cellKey: "b", incarnation: 7 },
          { cellKey: "c", incarnation: 7 },
        ],
        pointers: [pointer("b", 3)],
      }),
    );
    expect(storage.load("b").status).toBe("absent");
    expect(storage.load("c").status).toBe("found");
    expect(storage.stats().batchesFailed).toBe(0);
    await storage.close();
    const reopened = openAt(directory);
    expect(reopened.load("b").status).toBe("absent");
    expect(reopened.pointers().map((p) => p.cellKey)).toContain("b");
    expect(reopened.hostedCells().sort()).toEqual(["a", "c", "joining"]);
    await reopened.close();
  });

  it("a snapshot that compacts a node's log does not replace its corrupt record: the batch fails", async () => {
    await populate(storage);
    const raw = storage.recordBytesForTest({ kind: "node", cellKey: "b" }) as Uint8Array;
    storage.overwriteRecordBytesForTest({ kind: "node", cellKey: "b" }, flipped(raw, 5));
    const before = everything(storage, cells);
    // The node's own incarnation, a later snapshot and no promise: replacing the record would
    // forget the promise and the accepted entries the damaged record held.
    const compaction: NodeWrite<Command> = { ...fresh("b", 2, []), promised: null, snapshot: snapshotAt(4) };
    const error = await persistFailing(storage, batch({ writes: [compaction] }));
    expect(error.message).toMatch(/cell b: node record fails its checksum .*; the write needs it intact/);
    expect(everything(storage, cells)).toEqual(before);
    expect(storage.load("b").status).toBe("corrupt");
  });

  it("a write on a closed environment reaches done(error) and does not throw", async () => {
    await storage.close();
    const error = await persistFailing(storage, batch({ writes: [fresh("a", 1, [1])] }));
    expect(error.message).toMatch(/storage batch of 1 node writes not written \(.*closed/);
  });

  it("close waits for the batch in flight, whose done is called first", async () => {
    const order: string[] = [];
    storage.write(batch({ writes: [fresh("a", 1, [1])] }), (error) => order.push(`done ${error}`));
    await storage.close();
    order.push("closed");
    expect(order).toEqual(["done null", "closed"]);
    expect(everything(openAt(directory), ["a"]).hosted).toEqual(["a"]);
  });

  it("batches acknowledged before a crash are replayed from the journal, even one that changed nothing", async () => {
    const policy = { checkpoint: { intervalMs: 600_000 } };
    const reopenAfterCrash = async (current: LmdbStorage<Command>): Promise<LmdbStorage<Command>> => {
      await current.abandonForTest();
      const next = LmdbStorage.open({ path: directory, codec: commandCodec, ...policy });
      open.push(next);
      return next;
    };
    await storage.close();
    let s = LmdbStorage.open({ path: directory, codec: commandCodec, ...policy });
    open.push(s);
    await persist(s, batch({}));
    s = await reopenAfterCrash(s);
    expect(s.stats().replayedBatches).toBe(1);
    await persist(s, batch({ writes: [fresh("a", 1, [1])], pointers: [pointer("p", 2)] }));
    s = await reopenAfterCrash(s);
    expect(s.stats().replayedBatches).toBe(1);
    expect(everything(s, ["a"])).toEqual(
      everything(await modelOf([batch({ writes: [fresh("a", 1, [1])], pointers: [pointer("p", 2)] })]), [
        "a",
      ]),
    );
  });

  it("opens lmdb so that a commit is flushed, meta page included, before it resolves", () => {
    // A kill -9 cannot tell these apart (the page cache survives it); a power loss can.
    expect(durableEnvironmentOptions).toMatchObject({
      noSync: false,
      noMetaSync: false,
      useWritemap: false,
      mapAsync: false,
      overlappingSync: false,
    });
  });

  it("checkpoints changes when the interval is up, also when no write follows them", async () => {
    await storage.close();
    const s = LmdbStorage.open({ path: directory, codec: commandCodec, checkpoint: { intervalMs: 200 } });
    open.push(s);
    await persist(s, batch({ writes: [fresh("a", 1, [1]), fresh("b", 1, [1])] }));
    expect(s.stats().pendingCells).toBe(2);
    const before = s.stats().checkpoints;
    for (let i = 0; i < 50 && s.stats().pendingCells > 0; i++) await new Promise((r) => setTimeout(r, 50));
    expect(s.stats().pendingCells).toBe(0);
    expect(s.stats().checkpoints).toBe(before + 1);
    // With nothing pending, nothing more is done.
    await new Promise((r) => setTimeout(r, 400));
    expect(s.stats().checkpoints).toBe(before + 1);
  });

  it("a second batch while one is in flight is a bug", async () => {
    const first = persist(storage, batch({ writes: [fresh("a", 1, [1])] }));
    expect(() => storage.write(batch({}), () => {})).toThrow(InvariantError);
    await first;
  });

  it("10,000 node writes in one batch are one journal record and reach lmdb in one transaction", async () => {
    await persist(storage, batch({ writes: [fresh("warm-up", 1, [1])] }));
    storage.checkpoint();
    const before = storage.stats();
    expect(before.pendingCells).toBe(0);
    const writes: NodeWrite<Command>[] = [];
    for (let i = 0; i < 10_000; i++) writes.push(fresh(`vol-${i.toString(16).padStart(4, "0")}`, 1, [1, 2]));
    await persist(storage, batch({ writes }));
    expect(storage.stats().pendingCells).toBe(10_000);
    expect(storage.stats().hostedNodes).toBe(1); // as of the last checkpoint
    storage.checkpoint();
    const after = storage.stats();
    expect(after.batchesWritten).toBe(before.batchesWritten + 1);
    expect(after.checkpoints).toBe(before.checkpoints + 1);
    expect(after.lastTransactionId).toBe(before.lastTransactionId + 1);
    expect(after.hostedNodes).toBe(10_001);
    // One segment per node, holding both its entries.
    expect(after.storedSegments).toBe(10_001);
    // 10,000 node records, 10,000 segments, and the journal position.
    expect(after.recordsWritten - before.recordsWritten).toBe(20_001);
    const last = storage.load("vol-270f");
    expect(last.status === "found" && last.node.entries).toEqual([entry(1), entry(2)]);
  });

  it("stores a node's entries between two checkpoints as one segment; a slot stored again reads as its last write", async () => {
    await persist(storage, batch({ writes: [fresh("a", 1, [1])] }));
    for (const slot of [2, 3, 4]) {
      await persist(
        storage,
        batch({ writes: [{ ...fresh("a", 1, [slot]), snapshot: null, promised: null }] }),
      );
    }
    storage.checkpoint();
    expect(storage.stats().storedSegments).toBe(1);
    // Slot 4 accepted again under a higher ballot, in the next checkpoint's segment.
    await persist(
      storage,
      batch({ writes: [{ ...fresh("a", 1, []), entries: [entry(4, 3), entry(5, 3)], snapshot: null }] }),
    );
    storage.checkpoint();
    expect(storage.stats().storedSegments).toBe(2);
    const expected = [entry(1), entry(2), entry(3), entry(4, 3), entry(5, 3)];
    const loaded = storage.load("a");
    expect(loaded.status === "found" && loaded.node.entries).toEqual(expected);
    await storage.close();
    const reopened = openAt(directory);
    const again = reopened.load("a");
    expect(again.status === "found" && again.node.entries).toEqual(expected);
    // Truncating through slot 3 beyond the stored snapshot (at 0) deletes no segment whole (none
    // ends at or below 3) and rewrites the first one, which straddles 3, as slot 4 alone.
    await persist(
      reopened,
      batch({ writes: [{ ...fresh("a", 1, []), snapshot: null, truncateThrough: 3 }] }),
    );
    reopened.checkpoint();
    const trimmed = reopened.load("a");
    expect(trimmed.status === "found" && trimmed.node.entries).toEqual([entry(4, 3), entry(5, 3)]);
    expect(reopened.stats().storedSegments).toBe(2);
    expect(reopened.stats().recordsDeleted).toBe(0);
    // With a snapshot at 4, truncating through 4 deletes the first segment (it ends at 4).
    await persist(
      reopened,
      batch({ writes: [{ ...fresh("a", 1, []), snapshot: snapshotAt(4), truncateThrough: 4 }] }),
    );
    reopened.checkpoint();
    const last = reopened.load("a");
    expect(last.status === "found" && last.node.entries).toEqual([entry(5, 3)]);
    expect(reopened.stats().storedSegments).toBe(1);
  });

  it("splits a node's entries into segments of about 32 KiB, and reads them back whole", async () => {
    const big = (slot: number): LogEntry<Command> =>
      ({
        ...entry(slot),
        value: {
          ...entry(slot).value,
          commands: [putCommand(slot, `k${slot}`, new Uint8Array(12_000).fill(slot))],
        },
      }) as LogEntry<Command>;
    const entries = [1, 2, 3, 4, 5, 6, 7].map(big);
    await persist(storage, batch({ writes: [{ ...fresh("a", 1, []), entries }] }));
    storage.checkpoint();
    // Two entries of about 12 KB fit under 32 KiB, a third does not: 2 + 2 + 2 + 1.
    expect(storage.stats().storedSegments).toBe(4);
    await storage.close();
    const loaded = openAt(directory).load("a");
    expect(loaded.status === "found" && loaded.node.entries).toEqual(entries);
  });

  it("reads and truncates a directory written with one record per entry (the layout before segments)", async () => {
    await persist(storage, batch({ writes: [fresh("a", 1, [1, 2, 3]), fresh("b", 1, [1])] }));
    const expected = everything(storage, cells);
    await storage.close();
    // Rewrite a's log in the older layout: key length, cell key, slot; value checksum and
    // encodeStoredEntry.
    const env = openLmdb({ path: directory, maxDbs: 4, encoding: "binary", keyEncoding: "binary" });
    const entriesDb = env.openDB<Uint8Array, Uint8Array>({
      name: "entries",
      encoding: "binary",
      keyEncoding: "binary",
    });
    const cellBytes = new TextEncoder().encode("a");
    const ofA = [...entriesDb.getKeys()].filter((key) => key[0] === 1 && key[1] === cellBytes[0]);
    expect(ofA).toHaveLength(1);
    await entriesDb.remove(ofA[0] as Uint8Array);
    for (const slot of [1, 2, 3]) {
      const key = new Uint8Array(1 + cellBytes.length + 8);
      key[0] = cellBytes.length;
      key.set(cellBytes, 1);
      new DataView(key.buffer).setUint32(1 + cellBytes.length + 4, slot);
      await entriesDb.put(key, sealedGarbage(key, encodeStoredEntry(entry(slot), commandCodec)));
    }
    await env.close();
    const reopened = openAt(directory);
    expect(everything(reopened, cells)).toEqual(expected);
    // A snapshot at 2 truncates through 1: the older records go by the same key ranges.
    await persist(
      reopened,
      batch({ writes: [{ ...fresh("a", 1, [4]), snapshot: snapshotAt(2), truncateThrough: 1 }] }),
    );
    reopened.checkpoint();
    const a = reopened.load("a");
    expect(a.status === "found" && a.node.entries).toEqual([entry(3), entry(4)]);
    // Slots 2 and 3 in the older layout, 4 in a segment, and b's segment.
    expect(reopened.stats().storedSegments).toBe(4);
  });

  /** A storage in a directory of its own, checkpointing after every batch on a worker from `entry`. */
  function openOnWorker(
    entry: URL,
    checkpoint: { cells?: number; intervalMs?: number } = { cells: 1 },
  ): LmdbStorage<Command> {
    const workerDirectory = mkdtempSync(join(tmpdir(), "physalia-lmdb-worker-"));
    directories.push(workerDirectory);
    const storage = LmdbStorage.open({
      path: workerDirectory,
      codec: commandCodec,
      checkpoint,
      checkpointWorker: entry,
    });
    open.push(storage);
    return storage;
  }

  it("a read waiting for a checkpoint worker that ended learns it at once, not after the 120 s bound", async () => {
    // A blocked read cannot hear the worker's exit event: the worker's thread marks its end in the
    // memory the read waits on. Here the worker's module does not exist, so it ends at its start.
    const broken = openOnWorker(new URL("./no-such-checkpoint-worker.ts", import.meta.url));
    await persist(broken, batch({ writes: [fresh("a", 1, [1])] }));
    expect(broken.stats().pendingCells).toBe(1);
    const started = performance.now();
    // The checkpoint of "a" is in flight: the read waits for it, and learns that it failed. It
    // throws rather than read lmdb, which lacks "a" (a node that seems never to have promised).
    expect(() => broken.load("a")).toThrow(/checkpoint worker/);
    expect(performance.now() - started).toBeLessThan(10_000);
    // Nor is any other cell loaded from it while it is broken.
    expect(() => broken.load("a")).toThrow(/checkpoint worker/);
    expect(() => broken.load("never-written")).toThrow(/checkpoint worker/);
    // The storage then refuses writes, with the reason.
    await expect(persist(broken, batch({ writes: [fresh("b", 1, [1])] }))).rejects.toThrow(
      /checkpoint worker/,
    );
  });

  it("on a checkpoint worker: writes go on while a checkpoint runs, and a read of its cells waits for it", async () => {
    const onWorker = openOnWorker(checkpointWorker);
    await persist(onWorker, batch({ writes: [fresh("a", 1, [1, 2])] }));
    // The batch's checkpoint is in flight on the worker (it starts once the batch is done).
    expect(onWorker.stats().pendingCells).toBe(1);
    await persist(onWorker, batch({ writes: [fresh("b", 1, [1])] }));
    // The worker may be asked for a collection at any time; it goes on serving checkpoints.
    onWorker.collectWorkerGarbage();
    expect(onWorker.load("a")).toMatchObject({ status: "found" });
    expect(onWorker.load("b")).toMatchObject({ status: "found" });
    expect(onWorker.stats().pendingCells).toBe(0);
    expect(onWorker.stats().checkpoints).toBeGreaterThanOrEqual(2);
  });

  it("on a checkpoint worker: catches lmdb up with what was written without holding the event loop", async () => {
    // No checkpoint starts by itself here: caughtUp() must start one.
    const onWorker = openOnWorker(checkpointWorker, { intervalMs: 600_000 });
    await persist(onWorker, batch({ writes: [fresh("a", 1, [1, 2])] }));
    await persist(onWorker, batch({ writes: [fresh("b", 1, [1])] }));
    // Blocking for the worker's checkpoint (waitIdle) or checkpointing on this thread (runNow) is
    // what holds the event loop: never here.
    const runner = (onWorker as unknown as { runner: { waitIdle(): void; runNow(job: unknown): unknown } })
      .runner;
    const waitIdle = runner.waitIdle.bind(runner);
    const runNow = runner.runNow.bind(runner);
    let blocked = 0;
    runner.waitIdle = () => {
      blocked += 1;
      waitIdle();
    };
    runner.runNow = (job) => {
      blocked += 1;
      return runNow(job);
    };
    expect(onWorker.stats().pendingCells).toBe(2);
    const caughtUp = onWorker.caughtUp();
    // Written after the call: not waited for, and written while lmdb catches up.
    await persist(onWorker, batch({ writes: [fresh("c", 1, [1])] }));
    await caughtUp;
    expect(blocked).toBe(0);
    expect(onWorker.stats().checkpoints).toBe(1);
    runner.waitIdle = waitIdle;
    runner.runNow = runNow;
    const listed = onWorker.hostedCellsPage("", 10, { settled: true });
    expect(listed.slice(0, 2)).toEqual(["a", "b"]);
    // With nothing written since, it resolves at once.
    await onWorker.caughtUp();
    expect(onWorker.hostedCellsPage("", 10, { settled: true })).toContain("a");
  });

  it("tells whether more cells would make the event loop wait for the checkpoint in flight", async () => {
    await storage.close();
    const s = LmdbStorage.open({
      path: directory,
      codec: commandCodec,
      checkpoint: { cells: 2, intervalMs: 600_000 },
    });
    open.push(s);
    expect(s.wouldWaitForCheckpoint(5)).toBe(false); // no checkpoint in flight
    // Two cells reach the bound: their checkpoint starts, in a turn of its own (no worker here).
    await persist(s, batch({ writes: [fresh("a", 1, [1]), fresh("b", 1, [1])] }));
    expect(s.wouldWaitForCheckpoint(1)).toBe(false); // what was pending went to that checkpoint
    await persist(s, batch({ writes: [fresh("c", 1, [1])] }));
    expect(s.wouldWaitForCheckpoint(0)).toBe(false);
    expect(s.wouldWaitForCheckpoint(1)).toBe(true); // c and one more reach the bound meanwhile
    await new Promise((resolve) => setImmediate(resolve));
    expect(s.stats().checkpoints).toBe(1);
    expect(s.wouldWaitForCheckpoint(1)).toBe(false); // nothing in flight any more
  });

  it("counts batches, records, bytes and commit latency", async () => {
    await persist(storage, batch({ writes: [fresh("a", 1, [1, 2])], pointers: [pointer("p", 1)] }));
    await persist(storage, batch({ writes: [{ ...fresh("a", 1, []), snapshot: null, truncateThrough: 1 }] }));
    storage.checkpoint();
    const stats = storage.stats();
    expect(stats.batchesWritten).toBe(2);
    expect(stats.checkpoints).toBe(1);
    // The two batches fold into one write before they reach lmdb: the node record, a segment of
    // entry 2 (entry 1, truncated by the second batch, never reaches lmdb), the pointer and the
    // journal position.
    expect(stats.recordsWritten).toBe(4);
    expect(stats.recordsDeleted).toBe(0);
    expect(stats.bytesWritten).toBeGreaterThan(100);
    expect(stats.lastCommitLatencyMs).toBeGreaterThan(0);
    expect(stats.storedSegments).toBe(1);
    // One checkpoint, in one bucket of the duration histogram.
    expect(stats.checkpointDurations.counts.reduce((a, b) => a + b, 0)).toBe(1);
    expect(stats.checkpointDurations.sumMs).toBeGreaterThan(0);
    expect(stats.checkpointDurations.sumMs).toBe(stats.lastCheckpointMs);
  });

  // Checkpoints only when a read needs them; one after every batch, running while the next
  // batches are written (on the storage's thread, then on a worker as servers run them).
  it.each([
    ["checkpoints before reads", { intervalMs: 600_000 }, false, 100],
    ["a checkpoint after every batch", { cells: 1 }, false, 100],
    ["a checkpoint after every batch, on a worker", { cells: 1 }, true, 25],
  ] as const)(
    "agrees with MemoryStorage over random sequences of batches, checkpoints and crashes: %s",
    async (_name, policy, onWorker, numRuns) => {
      const cellKeys = ["a", "ab", "b"];
      const cellArb = fc.constantFrom(...cellKeys);
      const writeArb = fc.record({
        cellKey: cellArb,
        incarnation: fc.integer({ min: 1, max: 3 }),
        promisedRound: fc.option(fc.integer({ min: 1, max: 5 })),
        snapshot: fc.option(
          fc.record({ index: fc.integer({ min: 0, max: 8 }), applied: fc.integer({ min: 0, max: 3 }) }),
        ),
        truncateThrough: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 10 })),
        entries: fc.array(
          fc.record({ slot: fc.integer({ min: 1, max: 12 }), round: fc.integer({ min: 1, max: 4 }) }),
          {
            maxLength: 4,
          },
        ),
      });
      const batchArb = fc.record({
        writes: fc.array(writeArb, { maxLength: 4 }),
        removed: fc.array(fc.record({ cellKey: cellArb, incarnation: fc.integer({ min: 1, max: 3 }) }), {
          maxLength: 2,
        }),
        pointers: fc.array(fc.record({ cellKey: cellArb, epoch: fc.integer({ min: 1, max: 5 }) }), {
          maxLength: 2,
        }),
      });
      type DrawnBatch = typeof batchArb extends fc.Arbitrary<infer T> ? T : never;
      const toBatch = (drawn: DrawnBatch): StorageBatch<Command> => ({
        writes: drawn.writes.map((w) => ({
          cellKey: w.cellKey,
          node: node("s1", w.incarnation),
          promised: w.promisedRound === null ? null : makeBallot(w.promisedRound, 1),
          snapshot: w.snapshot === null ? null : snapshotAt(w.snapshot.index, w.snapshot.applied),
          truncateThrough: w.truncateThrough,
          entries: w.entries.map((e) => entry(e.slot, e.round)),
        })),
        removed: drawn.removed,
        pointers: drawn.pointers.map((p) => pointer(p.cellKey, p.epoch)),
      });
      // After each batch: compare (reads checkpoint first), go on (changes pile up in the journal),
      // crash (closing without a checkpoint; the next open replays the journal), or a quiet
      // moment's collection (a checkpoint worker, when idle, is replaced by a new one).
      const stepArb = fc.record({
        batch: batchArb,
        after: fc.constantFrom("compare", "continue", "crash", "collect"),
      });
      await fc.assert(
        fc.asyncProperty(fc.array(stepArb, { minLength: 1, maxLength: 10 }), async (steps) => {
          const runDirectory = mkdtempSync(join(tmpdir(), "physalia-lmdb-model-"));
          const openRun = (): LmdbStorage<Command> =>
            LmdbStorage.open({
              path: runDirectory,
              codec: commandCodec,
              checkpoint: policy,
              ...(onWorker ? { checkpointWorker } : {}),
            });
          let lmdb = openRun();
          try {
            const model = new MemoryStorage<Command>();
            for (const step of steps) {
              const real = toBatch(step.batch);
              await persist(lmdb, real);
              await persist(model, real);
              if (step.after === "compare")
                expect(everything(lmdb, cellKeys)).toEqual(everything(model, cellKeys));
              if (step.after === "crash") {
                await lmdb.abandonForTest();
                lmdb = openRun();
              }
              if (step.after === "collect") {
                // Let a checkpoint in flight end, so that the worker is idle and is replaced.
                await new Promise((resolve) => setTimeout(resolve, 20));
                lmdb.collectWorkerGarbage();
              }
            }
            expect(everything(lmdb, cellKeys)).toEqual(everything(model, cellKeys));
          } finally {
            await lmdb.close();
            rmSync(runDirectory, { recursive: true, force: true });
          }
        }),
        { numRuns },
      );
    },
    // Each run of the worker case starts a checkpoint worker, seconds each on a loaded machine.
    600_000,
  );
});
