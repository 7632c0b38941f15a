/**
 * The write-ahead journal in front of lmdb (docs/ARCHITECTURE.md, docs/PROTOCOL.md section 11a): every
 * storage batch is appended to a file as one record by one synchronous write (the file is opened
 * O_DSYNC), and only acknowledged once that write returned, durable. lmdb is brought up to date later, many batches at once (a checkpoint),
 * so a cell written many times between checkpoints costs one lmdb update instead of one per turn,
 * and a batch costs one synchronous sequential write instead of lmdb's scattered pages and two
 * flushes.
 *
 * Files `journal.log` and `journal.1.log` in the server's data directory: appends go to one of
 * them; a checkpoint that runs while the server goes on moves them to the other (rotate), whose
 * records the checkpoint before it already put in lmdb. Records, back to back from offset 0:
 *
 *   u32 body length | u32 CRC-32 | u32 seq (high) | u32 seq (low) | body
 *
 * (big-endian). The CRC covers the length, the sequence number and the body. Sequence numbers
 * grow by one per batch for the life of the data directory; lmdb stores the last one a
 * checkpoint applied, in the same transaction as the checkpoint itself. A file is written from
 * offset 0 again once lmdb has all its records (reset, rotate), over the old ones, so it keeps its
 * size and a write seldom has to make a new size durable (each file is also preallocated with
 * zeros when it is created).
 *
 * Reading at start: in each file, records are taken from offset 0 while each one is whole, passes
 * its CRC and carries the number after the one before it; those of both files above the
 * checkpoint's number are then replayed in order while the numbers follow one another. What ends
 * a file: a zero length (never written), a record torn by a crash (it was never acknowledged: a
 * batch is acknowledged only after its write returned, and the next is written only after that),
 * or an older record left from before the file last started over (its number does not follow).
 */
import { closeSync, constants, fstatSync, fsyncSync, openSync, readSync, statSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import { crc32 } from "node:zlib";
import { assert, ByteReader, type ByteWriter, type CellKey, DecodeError } from "../core/index.ts";
import {
  type CommandCodec,
  type LogEntry,
  type NodeWrite,
  readCellKey,
  readLogEntry,
  readNodeId,
  readSnapshot,
  writeLogEntry,
  writeNodeId,
  writeSnapshot,
} from "../paxos/index.ts";
import { readPointerFields, writePointerFields } from "./pointer-codec.ts";
import type { ForwardingPointer, StorageBatch } from "./port.ts";

export const journalFileName = "journal.log";
/** The second file: appends go to one file, then the other, a checkpoint at a time. */
export const journalAlternateFileName = "journal.1.log";
const headerBytes = 16;
/** Format of a record's body. */
const JOURNAL_BODY_VERSION = 1;
/** A record longer than this is not a record (a torn or foreign length): the journal ends there. */
export const journalRecordBytesMax = 256 * 1024 * 1024;
/** Zeros written ahead when the file is created, so that appends overwrite instead of growing. */
const preallocateChunkBytes = 1024 * 1024;

export interface JournalRecord {
  readonly seq: number;
  readonly body: Uint8Array;
}

/** One of the journal's two files: its descriptor and where its next record goes. */
class JournalFile {
  /** Where the next record goes. */
  offset = 0;
  private fd: number | null;

  constructor(
    fd: number,
    readonly path: string,
  ) {
    this.fd = fd;
  }

  static open(path: string, preallocateBytes: number): JournalFile {
    // Read-write, created if missing, without O_APPEND (which would ignore the write position).
    // O_DSYNC: a write returns once its data (and the file size, if it grew) is durable, as
    // write + fdatasync would, in one system call and with less CPU than the pair.
    let handle: number;
    try {
      handle = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_DSYNC, 0o644);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EISDIR") throw error;
      throw new JournalDamagedError(`journal ${path} is a directory, not a file. ${refuseAdvice}`);
    }
    const file = new JournalFile(handle, path);
    try {
      const size = fstatSync(handle).size;
      if (size < preallocateBytes) file.preallocate(size, preallocateBytes);
      return file;
    } catch (error) {
      file.close();
      throw error;
    }
  }

  handle(): number {
    assert(this.fd !== null, () => `journal ${this.path} is closed`);
    return this.fd;
  }

  close(): void {
    if (this.fd === null) return;
    closeSync(this.fd);
    this.fd = null;
  }

  /**
   * The records from offset 0 while each is whole, passes its CRC and carries the number after
   * the one before (the first may carry any): what was appended since the file last started over.
   * The chain ends at the first record that is older (left from before the file started over),
   * never written (zeros), or torn by a crash; a crash tears only the last record written, so
   * nothing written after a torn record is intact. A record that cannot be taken with an intact
   * record of a later number further on was therefore damaged after it was written, whatever
   * part of it was hit (its body, its number, or its length, which would otherwise hide every
   * record after it): the records from it to the intact one are listed in `damaged`, and the
   * chain goes on from the intact one. Records above `checkpointedSeq` lost that way are the
   * caller's to refuse; those at or below it, lmdb holds already.
   */
  chain(checkpointedSeq: number): {
    records: JournalRecord[];
    ends: number[];
    damaged: DamagedRecords[];
    dropped: DroppedRecord | null;
  } {
    const fd = this.handle();
    const size = fstatSync(fd).size;
    const file = Buffer.allocUnsafe(size);
    if (size > 0) readFully(fd, file, 0);
    const records: JournalRecord[] = [];
    const ends: number[] = [];
    const damaged: DamagedRecords[] = [];
    let dropped: DroppedRecord | null = null;
    let at = 0;
    let expected = -1;
    while (at + headerBytes <= size) {
      const length = recordLengthAt(file, at);
      let problem = length === 0 ? "has a length of zero" : "has a length that does not fit the file";
      let later: { at: number; seq: number } | null = null;
      if (length > 0) {
        const seq = recordSeqAt(file, at);
        const intact = file.readUInt32BE(at + 4) === recordChecksum(file.subarray(at), length);
        if (intact && (expected === -1 || seq === expected)) {
          records.push({
            seq,
            body: new Uint8Array(file.buffer, file.byteOffset + at + headerBytes, length),
          });
          at += headerBytes + length;
          ends.push(at);
          expected = seq + 1;
          continue;
        }
        if (intact && seq < expected) break;
        if (intact) {
          // A later record where this one should be: the ones between are missing.
          problem = `is missing (record ${seq} is where it should be)`;
          later = { at, seq };
        } else {
          problem = "fails its checksum";
        }
      }
      // The first number that should be here: the next in the chain, or for a file's first record
      // the first above the checkpoint (a file starts over only once lmdb holds all it had).
      const first = expected === -1 ? checkpointedSeq + 1 : expected;
      later ??= intactRecordAfter(file, at, first);
      if (later === null) {
        // Where the chain ends: zeros were never written, anything else was written and is not
        // whole. Only a crash during its write leaves that (the record was never acknowledged),
        // or damage after it was written, which no content can tell apart: the caller says so.
        // A header naming a record lmdb has is an older record's, damaged since: nothing lost.
        const old = at + headerBytes <= size && recordSeqAt(file, at) <= checkpointedSeq;
        if (first > checkpointedSeq && !old && !isZero(file, at, Math.min(size, at + headerBytes)))
          dropped = { path: this.path, seq: first, at, problem };
        break;
      }
      damaged.push({ seq: first, through: later.seq - 1, at, problem, intactSeq: later.seq });
      at = later.at;
      expected = later.seq;
    }
    return { records, ends, damaged, dropped };
  }

  private preallocate(from: number, to: number): void {
    const fd = this.handle();
    const zeros = Buffer.alloc(Math.min(preallocateChunkBytes, to - from));
    for (let at = from; at < to; at += zeros.length) {
      writeSync(fd, zeros, 0, Math.min(zeros.length, to - at), at);
    }
    fsyncSync(fd);
    // The file's directory entry, for a journal created just now.
    const directory = openSync(join(this.path, ".."), "r");
    try {
      fsyncSync(directory);
    } finally {
      closeSync(directory);
    }
  }
}

/**
 * What is wrong with the journal's files in `directory`, given that both had at least
 * `bytesMin` bytes when it was last opened, or null: a file missing, not a file, or shorter.
 */
export function journalFilesProblem(directory: string, bytesMin: number): string | null {
  for (const name of [journalFileName, journalAlternateFileName]) {
    const path = join(directory, name);
    let size: number;
    try {
      const stats = statSync(path);
      if (!stats.isFile()) return `journal ${path} is not a file`;
      size = stats.size;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT")
        return `journal ${path} is missing: it was deleted, with the records it held that lmdb may not have`;
      throw error;
    }
    if (size < bytesMin)
      return (
        `journal ${path} is ${size} bytes, shorter than the ${bytesMin} it had: journal files never shrink, so it ` +
        "was cut short, with the records it held that lmdb may not have"
      );
  }
  return null;
}

/** The journal lost records a crash cannot lose: the storage must not start on what is left. */
export class JournalDamagedError extends Error {
  override name = "JournalDamagedError";
}

const refuseAdvice =
  "Acknowledged writes would be lost, so this server refuses to start on this data directory: " +
  "replace its nodes with new incarnations on a healthy server (docs/OPERATIONS.md section 7), " +
  "then start it again with an empty directory.";

export class Journal {
  /** The file appends go to. */
  private active: JournalFile;

  private constructor(private readonly files: readonly [JournalFile, JournalFile]) {
    this.active = files[0];
  }

  /**
   * Opens (creating and preallocating if missing) the journal's two files in `directory` and
   * returns the journal with the records after `checkpointedSeq`, in order: those of both files,
   * from checkpointedSeq + 1 while each number follows the one before. The next append goes
   * after the last of them, in its file.
   */
  static open(
    directory: string,
    checkpointedSeq: number,
    preallocateBytes: number,
    /**
     * The size both files had at least when this directory last opened them (lmdb keeps it), or
     * null for a directory that never recorded it: files never shrink, so one that is missing or
     * shorter was deleted or cut short from outside, with whatever records it held.
     */
    recordedBytesMin: number | null = null,
  ): { journal: Journal; records: JournalRecord[]; bytesMin: number; dropped: DroppedRecord[] } {
    if (recordedBytesMin !== null) {
      const problem = journalFilesProblem(directory, recordedBytesMin);
      if (problem !== null) throw new JournalDamagedError(`${problem}. ${refuseAdvice}`);
    }
    const first = JournalFile.open(join(directory, journalFileName), preallocateBytes);
    let second: JournalFile;
    try {
      second = JournalFile.open(join(directory, journalAlternateFileName), preallocateBytes);
    } catch (error) {
      first.close();
      throw error;
    }
    const journal = new Journal([first, second]);
    try {
      const bytesMin = Math.min(fstatSync(first.handle()).size, fstatSync(second.handle()).size);
      const { records, dropped } = journal.scan(checkpointedSeq);
      return { journal, records, bytesMin, dropped };
    } catch (error) {
      journal.close();
      throw error;
    }
  }

  /** The file appends go to now (tests and messages). */
  get path(): string {
    return this.active.path;
  }

  /** Bytes written to the file appends go to since it last started over. */
  get bytes(): number {
    return this.active.offset;
  }

  /** Writes the record, durably (O_DSYNC): when this returns the record survives a crash. */
  append(seq: number, body: Uint8Array): void {
    const fd = this.active.handle();
    assert(body.length <= journalRecordBytesMax, () => `journal record of ${body.length} bytes`);
    const record = Buffer.allocUnsafe(headerBytes + body.length);
    record.writeUInt32BE(body.length, 0);
    record.writeUInt32BE(Math.floor(seq / 2 ** 32), 8);
    record.writeUInt32BE(seq >>> 0, 12);
    record.set(body, headerBytes);
    record.writeUInt32BE(recordChecksum(record, body.length), 4);
    const offset = this.active.offset;
    let written = 0;
    while (written < record.length) {
      written += writeSync(fd, record, written, record.length - written, offset + written);
    }
    this.active.offset += record.length;
  }

  /**
   * The next record goes to offset 0 of the other file. The caller has made every record that
   * file holds redundant (lmdb's checkpoint covers them); those of the file written so far stay
   * until a checkpoint covers them too.
   */
  rotate(): void {
    this.active = this.active === this.files[0] ? this.files[1] : this.files[0];
    this.active.offset = 0;
  }

  /** The next record goes to offset 0 again (the caller has made every record so far redundant). */
  reset(): void {
    this.active.offset = 0;
  }

  close(): void {
    for (const file of this.files) file.close();
  }

  /**
   * The records after checkpointedSeq, in order. A crash tears at most the last record written,
   * and nothing is written after it; so a damaged record with the next one whole after it, or a
   * record missing with later ones present, means acknowledged writes would be lost: the
   * journal refuses to open rather than replay some of them and go on without the rest.
   */
  private scan(checkpointedSeq: number): { records: JournalRecord[]; dropped: DroppedRecord[] } {
    const located: { record: JournalRecord; file: JournalFile; end: number }[] = [];
    const droppedEnds: DroppedRecord[] = [];
    for (const file of this.files) {
      const { records, ends, damaged: damagedRecords, dropped } = file.chain(checkpointedSeq);
      if (dropped !== null) droppedEnds.push(dropped);
      const damaged = damagedRecords.find(
        (lost) => lost.through >= lost.seq && lost.through > checkpointedSeq,
      );
      if (damaged !== undefined) {
        const firstLost = Math.max(damaged.seq, checkpointedSeq + 1);
        const lost =
          firstLost === damaged.through
            ? `record ${firstLost} is`
            : `records ${firstLost} to ${damaged.through} are`;
        throw new JournalDamagedError(
          `journal ${file.path}: record ${damaged.seq} at byte ${damaged.at} ${damaged.problem}, and record ` +
            `${damaged.intactSeq} written after it is intact: the file was damaged after it was written, and ` +
            `${lost} lost. ${refuseAdvice}`,
        );
      }
      records.forEach((record, i) => {
        if (record.seq > checkpointedSeq) located.push({ record, file, end: ends[i] as number });
      });
    }
    located.sort((a, b) => a.record.seq - b.record.seq);
    const records: JournalRecord[] = [];
    let expected = checkpointedSeq + 1;
    for (const { record, file, end } of located) {
      if (record.seq !== expected && checkpointedSeq === 0 && records.length === 0) {
        // Nothing checkpointed, yet the journal starts later than its first record: lmdb had the
        // records before, and has lost them (its data file is new or was emptied).
        throw new JournalDamagedError(
          `lmdb in ${dirname(file.path)} holds no checkpoint (its data.mdb is new or was emptied), but the ` +
            `journal's first record is ${record.seq} (${file.path}): records 1 to ${record.seq - 1} had ` +
            `gone into lmdb and are lost. ${refuseAdvice}`,
        );
      }
      if (record.seq !== expected) {
        throw new JournalDamagedError(
          `journal ${file.path}: record ${record.seq} is intact but record ${expected} before it is ` +
            `missing from both files (the last record checkpointed into lmdb is ${checkpointedSeq}). ` +
            refuseAdvice,
        );
      }
      records.push(record);
      this.active = file;
      file.offset = end;
      expected += 1;
    }
    return { records, dropped: droppedEnds };
  }
}

function recordChecksum(record: Buffer, bodyLength: number): number {
  return crc32(record.subarray(8, headerBytes + bodyLength), crc32(record.subarray(0, 4)));
}

/** Records lost from a file's chain: numbers seq..through (none when through < seq), at byte `at`. */
/**
 * Bytes where the record after the last one replayed should be, that are not a whole record and
 * not zeros: what a crash leaves of a record being written when it struck (never acknowledged),
 * or what damage leaves of the last records written (acknowledged, and lost).
 */
export interface DroppedRecord {
  readonly path: string;
  /** The number the record there would have had. */
  readonly seq: number;
  readonly at: number;
  /** What is wrong with it, as a message's predicate. */
  readonly problem: string;
}

function isZero(file: Buffer, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (file[i] !== 0) return false;
  return true;
}

interface DamagedRecords {
  readonly seq: number;
  readonly through: number;
  readonly at: number;
  /** What is wrong where record `seq` should be, as a message's predicate. */
  readonly problem: string;
  /** The number of the intact record written after them. */
  readonly intactSeq: number;
}

/** The body length of the record at `at` if it is one that fits the file, else 0. */
function recordLengthAt(file: Buffer, at: number): number {
  const length = file.readUInt32BE(at);
  return length <= journalRecordBytesMax && at + headerBytes + length <= file.length ? length : 0;
}

function recordSeqAt(file: Buffer, at: number): number {
  return file.readUInt32BE(at + 8) * 2 ** 32 + file.readUInt32BE(at + 12);
}

/**
 * The first record after byte `origin` that is whole, passes its CRC and carries a number of at
 * least `seqMin`, written after the records from `origin` on: or null. Every byte offset is
 * tried, since a damaged length says nothing of where the next record starts. Records
 * `seqMin`..`seq - 1` lie between `origin` and such a record, each at least headerBytes + 1 long,
 * which bounds `seq` at each offset; bytes that merely look like a header (an older record's, or
 * a pattern in a body) seldom pass that bound, so the checksum is computed for almost nothing
 * else. Zeros (never written) and older records are passed over reading a few bytes an offset.
 */
function intactRecordAfter(file: Buffer, origin: number, seqMin: number): { at: number; seq: number } | null {
  const last = file.length - headerBytes;
  // The high word of any number sought is one of two; its first byte is looked at first.
  const seqCeiling = seqMin + Math.floor((last - origin) / (headerBytes + 1));
  const highByteMin = Math.floor(seqMin / 2 ** 32) >>> 24;
  const highByteMax = Math.floor(seqCeiling / 2 ** 32) >>> 24;
  for (let at = origin + 1; at <= last; at++) {
    // Four zero bytes (most of a preallocated file) are no record's length.
    if (file[at] === 0 && file[at + 1] === 0 && file[at + 2] === 0 && file[at + 3] === 0) continue;
    const highByte = file[at + 8];
    if (highByte !== highByteMin && highByte !== highByteMax) continue;
    const length = recordLengthAt(file, at);
    if (length === 0) continue;
    const seq = recordSeqAt(file, at);
    if (seq < seqMin || seq > seqMin + Math.floor((at - origin) / (headerBytes + 1))) continue;
    if (file.readUInt32BE(at + 4) === recordChecksum(file.subarray(at), length)) return { at, seq };
  }
  return null;
}

function readFully(fd: number, into: Buffer, position: number): void {
  let read = 0;
  while (read < into.length) {
    const n = readSync(fd, into, read, into.length - read, position + read);
    if (n === 0) throw new Error(`journal ends inside a record at byte ${position + read}`);
    read += n;
  }
}

// ---------------------------------------------------------------- a batch as a record body

/**
 * version | uint writes | write* | uint removed | (cellKey, uint incarnation)* | uint pointers | pointer*
 * write:   cellKey | node | bool promised? uint | bool snapshot? snapshot | uint truncateThrough |
 *          uint entries | entry*
 * pointer: cellKey | pointer fields (pointer-codec.ts)
 *
 * Returns a view of the writer's buffer, valid until the writer is used again (append copies it
 * into the record at once). Each log entry is written exactly as writeLogEntry writes it; when
 * `spans` is given, the start and end offset of every entry in the body are pushed onto it, in
 * batch order, so the caller can keep the entries' encodings instead of the decoded entries.
 */
export function encodeJournalBatch<C>(
  batch: StorageBatch<C>,
  codec: CommandCodec<C>,
  writer: ByteWriter,
  spans?: number[],
): Uint8Array {
  writer.clear();
  writer.byte(JOURNAL_BODY_VERSION).uint(batch.writes.length);
  for (const write of batch.writes) {
    writer.string(write.cellKey);
    writeNodeWriteHeader(writer, write);
    writer.uint(write.entries.length);
    for (const entry of write.entries) {
      spans?.push(writer.size);
      writeLogEntry(writer, entry, codec);
      spans?.push(writer.size);
    }
  }
  writer.uint(batch.removed.length);
  for (const removed of batch.removed) writer.string(removed.cellKey).uint(removed.incarnation);
  writer.uint(batch.pointers.length);
  for (const pointer of batch.pointers) {
    writer.string(pointer.cellKey);
    writePointerFields(writer, pointer);
  }
  return writer.view();
}

/** The batch a record body holds; `encoded` receives each entry's bytes (views of `body`), in batch order. */
export function decodeJournalBatch<C>(
  body: Uint8Array,
  codec: CommandCodec<C>,
  encoded?: Uint8Array[],
): StorageBatch<C> {
  const reader = new ByteReader(body);
  const version = reader.byte();
  if (version !== JOURNAL_BODY_VERSION)
    throw new DecodeError(`journal record version ${version}; this build reads ${JOURNAL_BODY_VERSION}`);
  const writes: NodeWrite<C>[] = [];
  const writeCount = boundedCount(reader, "node writes");
  for (let i = 0; i < writeCount; i++) {
    const cellKey = readCellKey(reader);
    const { node, promised, snapshot, truncateThrough } = readNodeWriteHeader(reader);
    const entryCount = boundedCount(reader, "log entries");
    const entries: LogEntry<C>[] = [];
    for (let j = 0; j < entryCount; j++) {
      const start = body.length - reader.remaining;
      entries.push(readLogEntry(reader, codec));
      encoded?.push(body.subarray(start, body.length - reader.remaining));
    }
    writes.push({ cellKey, node, promised, snapshot, truncateThrough, entries });
  }
  const removed: { cellKey: CellKey; incarnation: number }[] = [];
  const removedCount = boundedCount(reader, "removed nodes");
  for (let i = 0; i < removedCount; i++)
    removed.push({ cellKey: readCellKey(reader), incarnation: reader.uint() });
  const pointers: ForwardingPointer[] = [];
  const pointerCount = boundedCount(reader, "forwarding pointers");
  for (let i = 0; i < pointerCount; i++) pointers.push(readPointerFields(reader, readCellKey(reader)));
  reader.end();
  return { writes, removed, pointers };
}

/** What a node write says besides its cell and entries. */
export type NodeWriteHeader = Pick<NodeWrite<unknown>, "node" | "promised" | "snapshot" | "truncateThrough">;

/** node | bool promised? uint | bool snapshot? snapshot | uint truncateThrough */
export function writeNodeWriteHeader(writer: ByteWriter, write: NodeWriteHeader): void {
  writeNodeId(writer, write.node);
  writer.bool(write.promised !== null);
  if (write.promised !== null) writer.uint(write.promised);
  writer.bool(write.snapshot !== null);
  if (write.snapshot !== null) writeSnapshot(writer, write.snapshot);
  writer.uint(write.truncateThrough);
}

export function readNodeWriteHeader(reader: ByteReader): NodeWriteHeader {
  const node = readNodeId(reader);
  const promised = reader.bool() ? reader.uint() : null;
  const snapshot = reader.bool() ? readSnapshot(reader) : null;
  return { node, promised, snapshot, truncateThrough: reader.uint() };
}

/** A count of items of at least one byte each: never more than the bytes left. */
export function boundedCount(reader: ByteReader, what: string): number {
  const n = reader.uint();
  if (n > reader.remaining) throw new DecodeError(`${n} ${what} in ${reader.remaining} bytes`);
  return n;
}
