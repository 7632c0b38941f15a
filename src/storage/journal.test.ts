/**
 * The journal file on its own (records, torn tails, starting over) and the batch encoding; the
 * journal under LmdbStorage is covered by lmdb.test.ts (random crashes against MemoryStorage) and
 * lmdb.crash.test.ts (SIGKILL).
 */
import {
  closeSync,
  constants,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  truncateSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type Command, commandCodec, OPERATION_FORMAT_VERSION } from "../cell/index.ts";
import { ByteWriter, DecodeError } from "../core/index.ts";
import { encodeStoredEntry, initialMembership, makeBallot } from "../paxos/index.ts";
import {
  decodeJournalBatch,
  encodeJournalBatch,
  Journal,
  JournalDamagedError,
  journalAlternateFileName,
  journalFileName,
} from "./journal.ts";
import { LmdbStorage } from "./lmdb.ts";
import type { StorageBatch } from "./port.ts";

const preallocate = 64 * 1024;

function body(n: number, length = 40): Uint8Array {
  return new Uint8Array(length).fill(n);
}

const command: Command = {
  version: OPERATION_FORMAT_VERSION,
  session: 7,
  seq: 1,
  newSession: true,
  op: {
    type: "txn",
    txn: { conditions: [], reads: [], writes: [{ item: "k", op: "put", value: body(3, 5) }] },
  },
};

const everyField: StorageBatch<Command> = {
  writes: [
    {
      cellKey: "vol-é1",
      node: { serverId: "s1", incarnation: 4 },
      promised: makeBallot(9, 4),
      snapshot: {
        index: 12,
        membership: initialMembership([{ serverId: "s1", incarnation: 4 }]),
        state: body(1, 30),
      },
      truncateThrough: 12,
      entries: [
        {
          slot: 14,
          ballot: makeBallot(9, 4),
          value: {
            kind: "commands",
            stampMs: 1_700_000_000_123,
            stampBallot: makeBallot(9, 4),
            commands: [command],
          },
        },
        { slot: 13, ballot: makeBallot(8, 2), value: { kind: "noop", stampMs: 5 } },
      ],
    },
    {
      cellKey: "b",
      node: { serverId: "s1", incarnation: 2 },
      promised: null,
      snapshot: null,
      truncateThrough: 0,
      entries: [],
    },
  ],
  removed: [{ cellKey: "gone", incarnation: 3 }],
  pointers: [
    {
      cellKey: "gone",
      epoch: 5,
      members: [{ serverId: "s4", incarnation: 8 }],
      expiresAtMs: 1_700_000_360_000.5,
    },
  ],
};

describe("Journal", () => {
  let directory: string;
  beforeEach(() => {
    directory = mkdtempSync(join(tmpdir(), "physalia-journal-"));
  });
  afterEach(() => rmSync(directory, { recursive: true, force: true }));

  const reopen = (checkpointed: number) => {
    const opened = Journal.open(directory, checkpointed, preallocate);
    opened.journal.close();
    return opened.records.map((record) => [record.seq, record.body[0], record.body.length]);
  };

  it("opens both journal files for durable writes (O_DSYNC), so a write returns once on the disk", () => {
    const opened = Journal.open(directory, 0, preallocate);
    try {
      // The kernel's view of this process's open files: each journal file's open flags.
      const flagsOf = new Map<string, number>();
      for (const fd of readdirSync("/proc/self/fd")) {
        let target: string;
        try {
          target = readlinkSync(`/proc/self/fd/${fd}`);
        } catch {
          continue; // closed meanwhile
        }
        if (!target.startsWith(directory)) continue;
        const info = readFileSync(`/proc/self/fdinfo/${fd}`, "utf8");
        flagsOf.set(basename(target), Number.parseInt(/^flags:\s+([0-7]+)/m.exec(info)?.[1] ?? "0", 8));
      }
      expect([...flagsOf.keys()].sort()).toEqual([journalAlternateFileName, journalFileName].sort());
      for (const [name, flags] of flagsOf) expect(flags & constants.O_DSYNC, name).toBe(constants.O_DSYNC);
    } finally {
      opened.journal.close();
    }
  });

  it("refuses a directory where a journal file should be, naming it", () => {
    mkdirSync(join(directory, journalAlternateFileName));
    expect(() => Journal.open(directory, 0, preallocate)).toThrow(JournalDamagedError);
    expect(() => Journal.open(directory, 0, preallocate)).toThrow(
      /journal .*journal\.1\.log is a directory, not a file/,
    );
  });

  it("is created preallocated with zeros, and empty", () => {
    const { journal, records } = Journal.open(directory, 0, preallocate);
    journal.close();
    expect(records).toEqual([]);
    expect(statSync(join(directory, journalFileName)).size).toBe(preallocate);
  });

  it("returns the records after the checkpoint, in order, and appends after them", () => {
    const { journal } = Journal.open(directory, 10, preallocate);
    journal.append(11, body(1));
    journal.append(12, body(2, 100));
    journal.close();
    expect(reopen(10)).toEqual([
      [11, 1, 40],
      [12, 2, 100],
    ]);
    const again = Journal.open(directory, 10, preallocate);
    again.journal.append(13, body(3));
    again.journal.close();
    expect(reopen(10).map(([seq]) => seq)).toEqual([11, 12, 13]);
    // Appends beyond the preallocated size grow the file.
    const big = Journal.open(directory, 10, preallocate);
    big.journal.append(14, body(4, 2 * preallocate));
    big.journal.close();
    expect(reopen(10).map(([seq]) => seq)).toEqual([11, 12, 13, 14]);
  });

  it("ends at a torn record, at a damaged last record, and at a record of the wrong number", () => {
    const { journal } = Journal.open(directory, 0, preallocate);
    for (let seq = 1; seq <= 4; seq++) journal.append(seq, body(seq));
    journal.close();
    const path = join(directory, journalFileName);
    const recordBytes = 16 + 40;
    // A byte of record 4's body flipped (the last one, as a crash tears it): records 1 to 3.
    const fd = openSync(path, "r+");
    writeSync(fd, new Uint8Array([0xff]), 0, 1, 3 * recordBytes + 20);
    // And of record 3's: 1 and 2, as nothing whole follows it.
    writeSync(fd, new Uint8Array([0xff]), 0, 1, 2 * recordBytes + 20);
    closeSync(fd);
    expect(reopen(0).map(([seq]) => seq)).toEqual([1, 2]);
    // A record torn by the end of the file.
    truncateSync(path, recordBytes + 30);
    expect(reopen(0).map(([seq]) => seq)).toEqual([1]);
    // Records whose numbers do not follow the checkpoint are older ones: none.
    expect(reopen(1)).toEqual([]);
  });

  it("names what it dropped where the next record would be, and nothing where it finds zeros or older records", () => {
    const { journal } = Journal.open(directory, 0, preallocate);
    for (let seq = 1; seq <= 4; seq++) journal.append(seq, body(seq));
    journal.close();
    const path = join(directory, journalFileName);
    const recordBytes = 16 + 40;
    const droppedAt = (checkpointed: number) => {
      const opened = Journal.open(directory, checkpointed, preallocate);
      opened.journal.close();
      return opened.dropped.map((d) => ({ path: d.path, seq: d.seq, at: d.at, problem: d.problem }));
    };
    // Whole records, then zeros: nothing dropped.
    expect(droppedAt(0)).toEqual([]);
    // Record 4 with a byte of its body flipped: dropped, named.
    const fd = openSync(path, "r+");
    writeSync(fd, new Uint8Array([0xff]), 0, 1, 3 * recordBytes + 20);
    expect(droppedAt(0)).toEqual([{ path, seq: 4, at: 3 * recordBytes, problem: "fails its checksum" }]);
    // Record 4's length zeroed, the rest of it left: dropped too, for what it is.
    writeSync(fd, new Uint8Array(4), 0, 4, 3 * recordBytes);
    expect(droppedAt(0)[0]?.problem).toBe("has a length of zero");
    // Record 4 all zeros: as never written, nothing to say.
    writeSync(fd, new Uint8Array(recordBytes), 0, recordBytes, 3 * recordBytes);
    closeSync(fd);
    expect(droppedAt(0)).toEqual([]);
    // Damage where lmdb already has every record: nothing lost, nothing to say.
    const again = openSync(path, "r+");
    writeSync(again, new Uint8Array([0xff]), 0, 1, 2 * recordBytes + 20);
    closeSync(again);
    expect(droppedAt(0)).toEqual([{ path, seq: 3, at: 2 * recordBytes, problem: "fails its checksum" }]);
    expect(droppedAt(3)).toEqual([]);
  });

  it("after a reset, the records written over the old ones end where the new ones end", () => {
    const { journal } = Journal.open(directory, 0, preallocate);
    for (let seq = 1; seq <= 5; seq++) journal.append(seq, body(seq));
    journal.reset();
    journal.append(6, body(6));
    journal.close();
    // Old records 2..5 follow record 6 in the file: they are not taken.
    expect(reopen(5)).toEqual([[6, 6, 40]]);
    // Before anything is written after a reset, nothing is taken.
    expect(reopen(6)).toEqual([]);
  });

  it("after a rotation, returns the records of both files in order and appends after the newest", () => {
    const { journal } = Journal.open(directory, 0, preallocate);
    journal.append(1, body(1));
    journal.append(2, body(2));
    journal.rotate();
    journal.append(3, body(3));
    journal.append(4, body(4));
    journal.close();
    expect(statSync(join(directory, journalAlternateFileName)).size).toBe(preallocate);
    expect(reopen(0).map(([seq]) => seq)).toEqual([1, 2, 3, 4]);
    expect(reopen(2).map(([seq]) => seq)).toEqual([3, 4]);
    expect(reopen(4)).toEqual([]);
    // Reopened, the next record follows the newest one, in the second file.
    const again = Journal.open(directory, 2, preallocate);
    expect(again.journal.path).toBe(join(directory, journalAlternateFileName));
    again.journal.append(5, body(5));
    again.journal.close();
    expect(reopen(2).map(([seq]) => seq)).toEqual([3, 4, 5]);
  });

  it("rotating back writes the first file over from offset 0; its older records are not taken", () => {
    const { journal } = Journal.open(directory, 0, preallocate);
    journal.append(1, body(1));
    journal.append(2, body(2));
    journal.rotate();
    journal.append(3, body(3));
    // A checkpoint covered 1 and 2: the first file starts over.
    journal.rotate();
    journal.append(4, body(4));
    journal.close();
    // The first file holds 4 then the old 2; the second holds 3.
    expect(reopen(2).map(([seq]) => seq)).toEqual([3, 4]);
    expect(reopen(3).map(([seq]) => seq)).toEqual([4]);
  });

  it("refuses to open when a damaged record has an intact later one after it, naming both", () => {
    const { journal } = Journal.open(directory, 0, preallocate);
    for (let seq = 1; seq <= 4; seq++) journal.append(seq, body(seq));
    journal.close();
    const recordBytes = 16 + 40;
    const fd = openSync(join(directory, journalFileName), "r+");
    writeSync(fd, new Uint8Array([0xff]), 0, 1, 1 * recordBytes + 20);
    closeSync(fd);
    expect(() => reopen(0)).toThrow(JournalDamagedError);
    expect(() => reopen(0)).toThrow(
      /journal\.log: record 2 at byte 56 fails its checksum, and record 3 written after it is intact.*refuses to start/,
    );
    // Damage to a record lmdb already holds is no loss: the records after the checkpoint open.
    expect(reopen(2).map(([seq]) => seq)).toEqual([3, 4]);
  });

  it("refuses to open when a record is missing between intact ones, across files too", () => {
    const { journal } = Journal.open(directory, 0, preallocate);
    journal.append(1, body(1));
    journal.append(2, body(2));
    journal.rotate();
    journal.append(4, body(4));
    journal.close();
    expect(() => reopen(0)).toThrow(/record 4 is intact but record 3 before it is missing from both files/);
    // Records the checkpoint does not reach, missing before the first one found.
    expect(() => reopen(2)).toThrow(/record 4 is intact but record 3 before it is missing/);
    expect(reopen(4)).toEqual([]);
  });

  it("says lmdb lost its records when nothing is checkpointed but the journal starts past record 1", () => {
    const { journal } = Journal.open(directory, 0, preallocate);
    for (let seq = 7; seq <= 9; seq++) journal.append(seq, body(seq));
    journal.close();
    expect(() => reopen(0)).toThrow(JournalDamagedError);
    expect(() => reopen(0)).toThrow(
      /holds no checkpoint \(its data\.mdb is new or was emptied\), but the journal's first record is 7 .*records 1 to 6 had gone into lmdb and are lost.*refuses to start/,
    );
    // With lmdb's checkpoint in place, the same journal opens.
    expect(reopen(6).map(([seq]) => seq)).toEqual([7, 8, 9]);
  });

  /** Writes `bytes` over the journal's first file at `at`. */
  function damage(at: number, bytes: number[]): void {
    const fd = openSync(join(directory, journalFileName), "r+");
    writeSync(fd, new Uint8Array(bytes), 0, bytes.length, at);
    closeSync(fd);
  }

  it("refuses to open when a damaged length would hide the intact records after it", () => {
    const recordBytes = 16 + 40;
    for (const length of [
      [0xff, 0xff, 0xff, 0xff], // past the end of the file
      [0, 0, 0, 0], // as if never written
      [0, 0, 0, 30], // fits, but the record does not end there
    ]) {
      rmSync(directory, { recursive: true, force: true });
      directory = mkdtempSync(join(tmpdir(), "physalia-journal-"));
      const { journal } = Journal.open(directory, 0, preallocate);
      for (let seq = 1; seq <= 4; seq++) journal.append(seq, body(seq));
      journal.close();
      damage(recordBytes, length);
      expect(() => reopen(0)).toThrow(JournalDamagedError);
      expect(() => reopen(0)).toThrow(
        /record 2 at byte 56 (has a length that does not fit the file|has a length of zero|fails its checksum), and record 3 written after it is intact: .* record 2 is lost/,
      );
      expect(() => reopen(1)).toThrow(JournalDamagedError);
      // lmdb holds record 2: nothing is lost, and the chain goes on after it.
      expect(reopen(2).map(([seq]) => seq)).toEqual([3, 4]);
    }
  });

  it("refuses to open when a record's number is damaged, which would make it look older", () => {
    const { journal } = Journal.open(directory, 0, preallocate);
    for (let seq = 1; seq <= 4; seq++) journal.append(seq, body(seq));
    journal.close();
    damage(56 + 15, [0]); // record 2's number, low byte: 2 becomes 0
    expect(() => reopen(0)).toThrow(
      /record 2 at byte 56 fails its checksum, and record 3 written after it is intact/,
    );
  });

  it("refuses to open when the first record of a file that started over is damaged", () => {
    const { journal } = Journal.open(directory, 0, preallocate);
    for (let seq = 1; seq <= 3; seq++) journal.append(seq, body(seq));
    // A checkpoint holds 1-3; the file starts over with 4-6.
    journal.reset();
    for (let seq = 4; seq <= 6; seq++) journal.append(seq, body(seq));
    journal.close();
    damage(0, [0xff]);
    expect(() => reopen(3)).toThrow(
      /record 4 at byte 0 .*record 5 written after it is intact.* record 4 is lost/,
    );
    // With the checkpoint at 4 there is nothing to lose: 5 and 6 are replayed.
    expect(reopen(4).map(([seq]) => seq)).toEqual([5, 6]);
  });

  it("never opens with fewer records than were written, whatever single byte is damaged", () => {
    // Records 1-5, all above the checkpoint. A damaged byte in records 1-4 must refuse; one in
    // record 5, the last, reads as a write torn by a crash (it was never acknowledged, or so the
    // journal must assume) and leaves 1-4; a byte changed to what it was changes nothing.
    const sizes = [40, 7, 300, 64, 25];
    const starts: number[] = [];
    let end = 0;
    for (const size of sizes) {
      starts.push(end);
      end += 16 + size;
    }
    const lastStart = starts[4] as number;
    fc.assert(
      fc.property(fc.nat(end - 1), fc.integer({ min: 0, max: 255 }), (at, value) => {
        rmSync(directory, { recursive: true, force: true });
        directory = mkdtempSync(join(tmpdir(), "physalia-journal-"));
        const { journal } = Journal.open(directory, 0, preallocate);
        sizes.forEach((size, i) => {
          journal.append(i + 1, body(i + 1, size));
        });
        journal.close();
        damage(at, [value]);
        let opened: number[] | "refused";
        try {
          opened = reopen(0).map(([seq]) => seq as number);
        } catch (error) {
          expect(error).toBeInstanceOf(JournalDamagedError);
          opened = "refused";
        }
        if (opened === "refused") {
          expect(at).toBeLessThan(lastStart);
        } else if (opened.length === 4) {
          expect(at).toBeGreaterThanOrEqual(lastStart);
        } else {
          expect(opened).toEqual([1, 2, 3, 4, 5]);
        }
      }),
      { numRuns: 300, seed: 7 },
    );
  });
});

describe("journal batch encoding", () => {
  it("round-trips every field", () => {
    const writer = new ByteWriter(16);
    const decoded = decodeJournalBatch(encodeJournalBatch(everyField, commandCodec, writer), commandCodec);
    expect(decoded).toEqual(everyField);
  });

  it("gives each entry's bytes as writeLogEntry writes them, encoding and decoding alike", () => {
    const spans: number[] = [];
    const record = encodeJournalBatch(everyField, commandCodec, new ByteWriter(16), spans);
    const entries = everyField.writes.flatMap((write) => write.entries);
    const expected = entries.map((entry) => encodeStoredEntry(entry, commandCodec).subarray(1));
    expect(spans).toHaveLength(2 * entries.length);
    expect(entries.map((_, i) => record.subarray(spans[2 * i], spans[2 * i + 1]))).toEqual(expected);
    const encoded: Uint8Array[] = [];
    decodeJournalBatch(record, commandCodec, encoded);
    expect(encoded).toEqual(expected);
  });

  it("bytes that are not a batch fail with DecodeError and nothing else", () => {
    const valid = encodeJournalBatch(everyField, commandCodec, new ByteWriter(16));
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 200 }),
          // Valid bytes with one byte changed, or cut short.
          fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 })).map(([at, value]) => {
            const copy = valid.slice();
            copy[at] = value;
            return copy;
          }),
          fc.nat(valid.length - 1).map((length) => valid.slice(0, length)),
        ),
        (bytes) => {
          try {
            decodeJournalBatch(bytes, commandCodec);
          } catch (error) {
            expect(error).toBeInstanceOf(DecodeError);
          }
        },
      ),
      { numRuns: 2_000 },
    );
  });
});

describe("LmdbStorage with a journal it cannot read", () => {
  it("refuses to open, naming the record and what to do", async () => {
    const directory = mkdtempSync(join(tmpdir(), "physalia-journal-lmdb-"));
    try {
      await LmdbStorage.open({ path: directory, codec: commandCodec }).close();
      // A record with a valid checksum and the next number, whose body is not a batch.
      const { journal } = Journal.open(directory, 0, preallocate);
      journal.append(1, new Uint8Array([99, 1, 2]));
      journal.close();
      expect(() => LmdbStorage.open({ path: directory, codec: commandCodec })).toThrow(
        /journal .*journal\.log: record 1 passes its checksum but does not decode \(journal record version 99/,
      );
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });
});
