/**
 * Durable storage in lmdb (docs/ARCHITECTURE.md): one environment per server directory, with a
 * write-ahead journal in front (journal.ts).
 *
 * Writes: a storage batch (every cell the server touched in one turn) is one journal record,
 * written synchronously and durably before the batch is acknowledged. Its changes are kept in
 * memory, folded per cell (overlay.ts), until a checkpoint applies them all to lmdb in one write
 * transaction committed with its flushes (LmdbApplier) and records there the journal's sequence
 * number it covers. Checkpoints start after a batch once a bound of CheckpointPolicy is reached
 * and run while the event loop goes on (on a worker thread, when the storage is given one;
 * checkpoint-runner.ts), with new records going to the journal's other file meanwhile; before a
 * read that needs a cell with pending changes, and on close, the storage waits for the one in
 * flight and applies the rest itself. Opening the environment replays what the journal holds
 * beyond the last checkpoint. A cell written many times between checkpoints costs lmdb one
 * update, not one per turn.
 *
 * Reads are synchronous: lmdb is memory mapped, so loading a node the first time its cell is
 * touched costs no event-loop turn.
 *
 * Sub-databases (keys and values are raw bytes):
 *   nodes     key: cellKey as UTF-8
 *             value: checksum, kind byte, then
 *               kind 1 (node):    encodeNodeHeader (record version, node id, promised, snapshot)
 *               kind 2 (pending): record version, node id, promised. A node that has promised or
 *                                 accepted before it received its first snapshot (a node joining
 *                                 a cell); it loads as absent, like MemoryStorage's.
 *   entries   log segments: the entries one checkpoint stores for one node, in one record
 *             key: byte length of cellKey, cellKey as UTF-8, the segment's highest slot as 8
 *                  bytes big-endian, then its write order: the checkpoint's journal sequence
 *                  number (8 bytes) and the segment's ordinal within the checkpoint (4 bytes)
 *             value: checksum, record version, uint entry count, then each entry as
 *                    writeLogEntry writes it, in increasing slot order
 *   pointers  key: cellKey as UTF-8
 *             value: checksum, record version, uint epoch, uint count, node ids, f64 expiresAtMs
 *
 * The length prefix makes one node's segments exactly one contiguous key range ordered by highest
 * slot: two keys share a prefix only if they name the same cell, so truncating or deleting a
 * node's log never visits another cell's keys. Truncating through slot t deletes the key range of
 * segments whose highest slot is <= t; a segment that straddles t is rewritten without its entries
 * <= t unless the stored snapshot already covers t (load() never returns what a snapshot covers,
 * and the replica truncates only what a durable snapshot covers). A slot stored in two segments (accepted again under a higher ballot after its
 * first segment was written) is read from the one written last.
 *
 * Why segments rather than a record per entry: a checkpoint's cost is mostly lmdb's per-record
 * work (the B-tree descent, the copy of a dirtied leaf page), so a node written k times between
 * two checkpoints costs one put instead of k, and its truncation one delete per segment.
 * Directories written before segments hold one record per entry (key: length, cellKey, slot as 8
 * bytes; value: checksum, encodeStoredEntry): they are read as segments of one entry written
 * before any other, and deleted by the same key ranges, so such a directory needs no conversion.
 *
 * Checksum: 4 bytes big-endian, CRC-32 (node:zlib) of the key bytes followed by the rest of the
 * value. It guards against accidental damage (bit rot, torn or misdirected writes, a record
 * copied under the wrong key), not against an adversary who can write the file: whoever can do
 * that can also fix up any hash. CRC-32 detects every burst of up to 32 bits and misses random
 * damage with probability 2^-32 per record, costs four bytes per record and runs in native code
 * at gigabytes per second; a truncated SHA-256 would cost several times the CPU on the write
 * path of every accept for no gain against accidents. Covering the key catches a valid record
 * stored under the wrong cell or slot.
 *
 * A record that fails its checksum or its decoding is reported by load() as `corrupt`, naming
 * the cell and the record; the node must not act on it (the server rebuilds it as a non-voting
 * learner). A write that begins a node's stored state (NodeWrite.founding: a node created anew
 * or added by the control plane to replace the faulty one) replaces a damaged node record and its
 * entries, and so does a removal (a node removed from its cell, whatever incarnation the damaged
 * record names: it builds on nothing stored, and the server removes a damaged node only once its
 * cell has moved to other servers). Any other write, a snapshot that compacts a node's log
 * included (it needs the record to keep the promise monotonic and the accepted entries), fails
 * its whole batch instead of guessing: the record is checked before the batch is journaled,
 * nothing of the batch is written and done receives the error. Damage that appears between that
 * check and the checkpoint leaves the record as it is (the node loads as corrupt) and is
 * counted, except under a write carrying a snapshot, which the checkpoint cannot tell from a
 * founding one (the flag is not journaled): that window is the time to the next checkpoint,
 * seconds.
 *
 * meta      key: "journal.checkpointed"
 *           value: checksum, record version, uint sequence number of the last journal record
 *           a checkpoint applied
 */
import { performance } from "node:perf_hooks";
import { crc32 } from "node:zlib";
import { type Database, open, type RootDatabase, type RootDatabaseOptionsWithPath } from "lmdb";
import {
  assert,
  ByteReader,
  ByteWriter,
  type CellKey,
  DecodeError,
  DurationHistogram,
  limits,
  type NodeId,
  utf8Encode,
} from "../core/index.ts";
import {
  type CommandCodec,
  decodeNodeHeader,
  decodeStoredEntry,
  encodeNodeHeader,
  type LogEntry,
  type NodeHeader,
  PAXOS_RECORD_VERSION,
  persistedNode,
  readLogEntry,
  readNodeId,
  type Snapshot,
  writeLogEntry,
  writeNodeId,
} from "../paxos/index.ts";
import {
  CallerRunner,
  type CheckpointJob,
  type CheckpointOutcome,
  type CheckpointResult,
  type CheckpointRunner,
  WorkerRunner,
} from "./checkpoint-runner.ts";
import { diskNearlyFullBytes, diskSpaceNote, freeBytes } from "./disk-space.ts";
import {
  type DroppedRecord,
  decodeJournalBatch,
  encodeJournalBatch,
  Journal,
  type JournalRecord,
} from "./journal.ts";
import { environmentFileProblem } from "./lmdb-header.ts";
import {
  decodePendingChanges,
  type EncodedEntry,
  type EncodedNodeWrite,
  encodePendingChanges,
  Overlay,
  type PendingChange,
  unfold,
} from "./overlay.ts";
import { readPointerFields, writePointerFields } from "./pointer-codec.ts";
import type { ForwardingPointer, LoadResult, StorageBatch, StoragePort } from "./port.ts";

export interface LmdbStorageOptions<C> {
  /** Directory of the server's environment; created if missing. */
  readonly path: string;
  /** How commands inside log entries are written and read. */
  readonly codec: CommandCodec<C>;
  /** When lmdb is brought up to date from the journal; defaults in `defaultCheckpointPolicy`. */
  readonly checkpoint?: Partial<CheckpointPolicy>;
  /**
   * A module that starts serveCheckpoints() (checkpoint-worker.ts) with this storage's codec: if
   * given, checkpoints run on a worker thread started from it and the event loop goes on
   * meanwhile; if not, they run on the storage's own thread, in turns of their own.
   */
  readonly checkpointWorker?: URL;
}

/**
 * A checkpoint applies the journal's pending changes to lmdb in one transaction. It runs after a
 * batch is acknowledged once any bound is reached, and before a read that needs a pending cell.
 * The bounds also bound what a restart replays and what the pending changes hold in memory.
 */
export interface CheckpointPolicy {
  /** Journal bytes written since the last checkpoint (also the journal file's preallocated size). */
  readonly journalBytes: number;
  /** Cells with pending changes. */
  readonly cells: number;
  /** Time since the first pending change. */
  readonly intervalMs: number;
}

/** Upper bounds of the checkpoint duration histogram's buckets (LmdbStorageStats), in ms. */
export const checkpointBucketsMs: readonly number[] = [1, 5, 10, 25, 50, 100, 250, 500, 1000];

export const defaultCheckpointPolicy: CheckpointPolicy = {
  journalBytes: 8 * 1024 * 1024,
  cells: 20_000,
  // A checkpoint costs about 10 us per record it puts, and puts one segment per node it covers
  // however often that node was written: the longer the interval, the more entries per put, up
  // to the point where every hosted cell is written in each interval. 1 s against 500 ms (when
  // checkpoints ran on the event loop): 1.08-1.27 times the writes/s at 1,000 cells. On the
  // worker, 2 s against 1 s: 19-21 against 28-33 us of the checkpoint workers' CPU per write
  // under `throughput`; 4 s, 16 us (docs/BENCHMARK-LOG.md). The journal and cell bounds above cap
  // what a restart replays whatever the interval.
  intervalMs: 2000,
};

export interface LmdbStorageStats {
  /**
   * Node records stored (hosted cells), from lmdb's page statistics (no scan), as of the last
   * checkpoint: stats() never forces one. hostedCount() is exact.
   */
  readonly hostedNodes: number;
  /** Log segment records stored, likewise (each holds one or more entries of one node). */
  readonly storedSegments: number;
  /** Batches made durable (one journal record each). */
  readonly batchesWritten: number;
  /** Batches refused or not written (nothing of them is durable). */
  readonly batchesFailed: number;
  /** Journal bytes written since the last checkpoint. */
  readonly journalBytes: number;
  /** Cells with changes in the journal that lmdb does not have yet. */
  readonly pendingCells: number;
  /** Checkpoints committed to lmdb. */
  readonly checkpoints: number;
  /** Journal records applied to lmdb when the storage was opened (batches a crash left there). */
  readonly replayedBatches: number;
  /** How long the last checkpoint took. */
  readonly lastCheckpointMs: number;
  /**
   * How long checkpoints took, as a histogram: counts[i] checkpoints took at most
   * checkpointBucketsMs[i] and more than the bucket before (the last count: longer than all).
   */
  readonly checkpointDurations: { readonly counts: readonly number[]; readonly sumMs: number };
  /** Cells a checkpoint left as they were because their stored node record failed its checksum. */
  readonly checkpointCellsSkippedCorrupt: number;
  /** Records put by checkpoints. */
  readonly recordsWritten: number;
  /** Records deleted by checkpoints. */
  readonly recordsDeleted: number;
  /** Key and value bytes put by checkpoints. */
  readonly bytesWritten: number;
  /** From write() to durable, of the last batch. */
  readonly lastCommitLatencyMs: number;
  /** lmdb's id of the last committed write transaction (one per checkpoint). */
  readonly lastTransactionId: number;
  /** Forwarding pointers pointers() left out because they failed their checksum or decoding. */
  readonly pointersSkippedCorrupt: number;
  /** Forwarding pointers pointers() deleted because they had expired. */
  readonly pointersExpired: number;
}

/** A stored record, named for the test-only raw access methods. */
export type StoredRecordRef =
  | { readonly kind: "node"; readonly cellKey: CellKey }
  /** The log segment (written last, if several) whose highest slot is lastSlot. */
  | { readonly kind: "segment"; readonly cellKey: CellKey; readonly lastSlot: number }
  | { readonly kind: "pointer"; readonly cellKey: CellKey };

const checksumBytes = 4;
const slotBytes = 8;
const nodeRecordKind = { node: 1, pending: 2 } as const;
/** Largest slot an entry key can hold: slots are safe integers. */
const slotMax = Number.MAX_SAFE_INTEGER;
/** Bytes of a segment key after the highest slot: checkpoint sequence number (8), ordinal (4). */
const segmentOrderBytes = 12;
/** A segment is closed once its entries reach this many bytes; one larger entry gets its own. */
const segmentBytesTarget = 32 * 1024;
/** Entries in one segment, at most. */
const segmentEntriesMax = 4096;
/** Cells whose node record the adapter remembers as intact (a few dozen bytes each). */
const intactNodesMax = 100_000;

type StoredNode =
  | { readonly kind: "node"; readonly header: NodeHeader }
  | { readonly kind: "pending"; readonly node: NodeId; readonly promised: number };

type Verified<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly problem: string };

/** A stored record a write needed failed verification: the batch is abandoned, not guessed at. */
/** The environment's data file is damaged where lmdb cannot be trusted to read it. */
export class EnvironmentDamagedError extends Error {
  override name = "EnvironmentDamagedError";
}

const damagedEnvironmentAdvice =
  "The server cannot read the nodes it stored, so it refuses to start on this data directory: " +
  "replace its nodes with new incarnations on a healthy server (docs/OPERATIONS.md section 7), " +
  "then start it again with an empty directory";

export class CorruptRecordError extends Error {
  override name = "CorruptRecordError";
}

/**
 * Durability settings, each set explicitly rather than left to lmdb's platform defaults.
 * `mapAsync` is not in lmdb's option types but is read by its open().
 */
/** Reads that may wait for a checkpoint at once (caughtUp); past this they are refused. */
const checkpointWaitersMax = 1024;

export const durableEnvironmentOptions = {
  // Every commit is flushed (fdatasync) before the transaction resolves.
  noSync: false,
  // The meta page is flushed too: without it a crash may roll back the last acknowledged commit.
  noMetaSync: false,
  // Pages are written with write(2), never through a writable shared mapping, so a stray
  // pointer in the process cannot damage the file.
  useWritemap: false,
  // msync without waiting (only meaningful with writemap): never.
  mapAsync: false,
  // With overlapping sync lmdb resolves a commit before its flush and, after a process crash,
  // trusts unflushed commits while the boot id is unchanged. Off: a resolved commit is durable.
  // It buys nothing here anyway, as the next batch waits for this one's acknowledgement.
  overlappingSync: false,
  // Commit as soon as the batch's transaction is queued; batching happens one level up.
  commitDelay: 0,
  // Each node write dirties its own leaf page (entry keys are scattered over cells), and a commit
  // writes every dirtied page whole: 1 KiB pages instead of 4 KiB write less per node write
  // (docs/BENCHMARK-LOG.md). Keys stay far below the size such pages allow (cell key <= 128 bytes,
  // plus 9). Takes effect when an environment is created.
  pageSize: 1024,
} as const satisfies RootDatabaseOptionsWithPath & { mapAsync: boolean };

export class LmdbStorage<C> implements StoragePort<C> {
  private state: "open" | "closing" | "closed" = "open";
  /** The batch whose acknowledgement is pending; at most one (StoragePort contract). */
  private inFlight: Promise<void> | null = null;
  /** Set when the journal or a checkpoint failed: every later write fails with it. */
  private broken: Error | null = null;
  private batchesWritten = 0;
  private batchesFailed = 0;
  private recordsWritten = 0;
  private recordsDeleted = 0;
  private bytesWritten = 0;
  private lastCommitLatencyMs = 0;
  private lastTransactionId = 0;
  private pointersSkippedCorrupt = 0;
  private pointersExpired = 0;
  private checkpoints = 0;
  private replayedBatches = 0;
  private droppedJournalRecords: readonly DroppedRecord[] = [];
  private lastCheckpointMs = 0;
  private readonly checkpointDurations = new DurationHistogram(checkpointBucketsMs);
  private checkpointCellsSkippedCorrupt = 0;
  /**
   * Cells whose node record this thread read and found intact (a bounded set, oldest first out):
   * a write to them needs no read before it is journaled. A checkpoint that finds one damaged
   * drops it.
   */
  private readonly intact = new Set<CellKey>();
  /** Cells whose node record a pending write may build on: checked intact, absent, or replaced. */
  private readonly verified = new Set<CellKey>();
  /** Changes durable in the journal and not yet handed to a checkpoint. */
  private pending = new Overlay<C>();
  /** The last journal record handed to a checkpoint (or covered by lmdb, at open). */
  private handedThrough = 0;
  /** Where each entry of the batch being journaled lies in its record (encodeJournalBatch). */
  private readonly entrySpans: number[] = [];
  /** The checkpoint in flight: the cells its changes touch. */
  private checkpointing: { readonly cells: Set<CellKey> } | null = null;
  /** Cells whose node record was overwritten outside a checkpoint (tests): the applier forgets them. */
  private forget: CellKey[] = [];
  /** When the first journal record not yet handed to a checkpoint was written (performance.now()). */
  private pendingSinceMs = 0;
  /** Callers of caughtUp() waiting for the checkpoint in flight. */
  private readonly checkpointWaiters: (() => void)[] = [];
  /** Set while changes wait and no write comes to start their checkpoint (see armQuietCheckpoint). */
  private quietTimer: NodeJS.Timeout | null = null;
  /** Sequence number of the last journal record. */
  private seq = 0;
  private readonly journalWriter = new ByteWriter(64 * 1024);
  private runner: CheckpointRunner;

  private readonly root: RootDatabase;
  private readonly nodes: Database<Uint8Array, Uint8Array>;
  private readonly entries: Database<Uint8Array, Uint8Array>;
  private readonly storedPointers: Database<Uint8Array, Uint8Array>;
  private readonly meta: Database<Uint8Array, Uint8Array>;
  /** Applies checkpoints on this thread: those of open(), and all of them without a worker. */
  private readonly applier: LmdbApplier<C>;
  private journal: Journal | null = null;

  private constructor(
    env: LmdbEnvironment,
    private readonly codec: CommandCodec<C>,
    private readonly policy: CheckpointPolicy,
    private readonly checkpointWorker: URL | null,
    readonly path: string,
  ) {
    this.root = env.root;
    this.nodes = env.nodes;
    this.entries = env.entries;
    this.storedPointers = env.storedPointers;
    this.meta = env.meta;
    this.applier = new LmdbApplier(env, codec);
    this.runner = this.callerRunner();
  }

  /**
   * Opens the environment and its journal. Batches the journal holds beyond lmdb's last
   * checkpoint (a crash came before their checkpoint) are applied to lmdb before this returns.
   */
  static open<C>(options: LmdbStorageOptions<C>): LmdbStorage<C> {
    const policy = { ...defaultCheckpointPolicy, ...options.checkpoint };
    assert(
      policy.journalBytes >= 1 && policy.cells >= 1 && policy.intervalMs >= 0,
      () => `checkpoint policy out of range: ${JSON.stringify(policy)}`,
    );
    // lmdb would crash the process on a data file cut short or without a header.
    const fileProblem = environmentFileProblem(options.path);
    if (fileProblem !== null)
      throw new EnvironmentDamagedError(`${fileProblem}. ${damagedEnvironmentAdvice}`);
    const env = openEnvironment(options.path);
    const storage = new LmdbStorage(
      env,
      options.codec,
      policy,
      options.checkpointWorker ?? null,
      options.path,
    );
    try {
      storage.openJournal();
    } catch (error) {
      void env.root.close();
      throw error;
    }
    return storage;
  }

  private openJournal(): void {
    const checkpointed = this.checkpointedSeq();
    const recordedBytes = this.journalFilesBytes();
    const { journal, records, bytesMin, dropped } = Journal.open(
      this.path,
      checkpointed,
      this.policy.journalBytes,
      recordedBytes,
    );
    this.journal = journal;
    this.droppedJournalRecords = dropped;
    this.seq = records.length > 0 ? (records[records.length - 1] as JournalRecord).seq : checkpointed;
    this.replayedBatches = records.length;
    if (records.length > 0) {
      // What a crash left in the journal goes to lmdb now, on this thread; the journal then starts
      // over, so both of its files hold only what lmdb has.
      const startedMs = performance.now();
      const pending = new Overlay<C>();
      for (const record of records) {
        const encoded: Uint8Array[] = [];
        let batch: StorageBatch<C>;
        try {
          batch = decodeJournalBatch(record.body, this.codec, encoded);
        } catch (error) {
          journal.close();
          const problem = error instanceof Error ? error.message : String(error);
          throw new Error(
            `journal ${journal.path}: record ${record.seq} passes its checksum but does not decode ` +
              `(${problem}); it was written by another version of physalia, or the file is damaged. ` +
              "Refusing to start without it: run the version that wrote it, or restore the data directory.",
            { cause: error },
          );
        }
        pending.add(batch, encoded);
      }
      try {
        const outcome = this.applier.apply(pending.entries(), this.seq);
        this.noteCheckpoint({ ok: true, outcome, tookMs: performance.now() - startedMs });
      } catch (error) {
        journal.close();
        throw error;
      }
    }
    journal.reset();
    if (recordedBytes !== bytesMin) {
      // Before any batch is acknowledged: from now on a journal file missing or cut short is
      // told from a crash at the next start.
      const key = utf8Encode(journalFilesMetaKey);
      this.root.transactionSync(() => this.meta.putSync(key, sealMetaNumber(key, bytesMin)));
    }
    this.handedThrough = this.seq;
    if (this.checkpointWorker !== null) this.runner = new WorkerRunner(this.path, this.checkpointWorker);
  }

  /** Checkpoints on this thread, with this storage's applier. */
  private callerRunner(): CheckpointRunner {
    return new CallerRunner((job) => this.applier.applyJob(job));
  }

  // ---------------------------------------------------------------- reads

  load(cellKey: CellKey): LoadResult<C> {
    this.assertReadable();
    // After a failed checkpoint lmdb lacks changes of cells it no longer tracks as pending: no
    // node is loaded from it (the server stops; a restart replays the journal).
    if (this.broken !== null) throw this.broken;
    // A cell with changes only in the journal is read after they reach lmdb (rare: a node is
    // loaded once, when its cell is touched again after a restart or an eviction).
    if (this.pending.has(cellKey) || this.checkpointing?.cells.has(cellKey)) this.checkpoint();
    const key = cellKeyBytes(cellKey);
    const raw = this.nodes.get(key);
    if (raw === undefined) return { status: "absent" };
    const stored = verifyNode(key, raw);
    if (!stored.ok) return { status: "corrupt", detail: `cell ${cellKey}: node record ${stored.problem}` };
    if (stored.value.kind === "pending") return { status: "absent" };
    const header = stored.value.header;
    // Only entries above the snapshot are live: skip segments that end at or below it.
    const segments: { order: Uint8Array; entries: readonly LogEntry<C>[] }[] = [];
    const range = this.entries.getRange({
      start: segmentBound(key, header.snapshot.index + 1, "below"),
      end: segmentBound(key, slotMax, "above"),
      inclusiveEnd: true,
    });
    for (const { key: storedKey, value } of range) {
      const read = readSegmentRecord(storedKey, key.length, value, this.codec);
      if (!read.ok) return { status: "corrupt", detail: `cell ${cellKey}: ${read.problem}` };
      segments.push(read.value);
    }
    // In write order, so that a slot stored twice keeps the entry written last.
    segments.sort((a, b) => Buffer.compare(a.order, b.order));
    const bySlot = new Map<number, LogEntry<C>>();
    for (const segment of segments) for (const entry of segment.entries) bySlot.set(entry.slot, entry);
    return { status: "found", node: persistedNode(header, [...bySlot.values()]) };
  }

  hostedCells(): CellKey[] {
    this.assertReadable();
    this.settle();
    const cells: CellKey[] = [];
    for (const key of this.nodes.getKeys()) cells.push(textDecoder.decode(key));
    return cells;
  }

  /**
   * Up to `limit` hosted cells after `after` (exclusive; "" for the start), in the order of
   * their keys' UTF-8 bytes: one range read, however many cells the server hosts.
   */
  hostedCellsPage(after: CellKey, limit: number, options: { readonly settled?: boolean } = {}): CellKey[] {
    this.assertReadable();
    // `settled`: the caller awaited caughtUp(), and takes lmdb as it is (changes written since are
    // left to their checkpoint).
    if (options.settled !== true) this.settle();
    const cells: CellKey[] = [];
    if (limit <= 0) return cells;
    const start = after === "" ? undefined : utf8Encode(after);
    for (const key of this.nodes.getKeys(start === undefined ? {} : { start })) {
      const cellKey = textDecoder.decode(key);
      if (cellKey === after) continue;
      cells.push(cellKey);
      if (cells.length >= limit) break;
    }
    return cells;
  }

  /** Cells with a node stored here, counted from lmdb's page statistics (no scan of the keys). */
  hostedCount(): number {
    this.assertReadable();
    this.settle();
    return entryCountOf(this.nodes);
  }

  /**
   * Stored forwarding pointers that expire after `nowMs`; one that fails verification is left out
   * and counted (a pointer is a hint). Those expired by `nowMs` are deleted, in one transaction.
   */
  pointers(nowMs = Number.NEGATIVE_INFINITY): ForwardingPointer[] {
    this.assertReadable();
    this.settle();
    const pointers: ForwardingPointer[] = [];
    const expired: Uint8Array[] = [];
    for (const { key, value } of this.storedPointers.getRange()) {
      const pointer = verifyPointer(key, value);
      if (!pointer.ok) this.pointersSkippedCorrupt += 1;
      else if (pointer.value.expiresAtMs > nowMs) pointers.push(pointer.value);
      else expired.push(copyOf(key));
    }
    if (expired.length > 0 && this.broken === null && !this.runner.busy) {
      // No checkpoint runs (settle waited for it), so this transaction races none. A pointer is
      // a hint: should a crash undo the deletion, the next start deletes it again.
      this.root.transactionSync(() => {
        for (const key of expired) this.storedPointers.removeSync(key);
      });
      this.pointersExpired += expired.length;
    }
    return pointers;
  }

  // ---------------------------------------------------------------- writes

  write(batch: StorageBatch<C>, done: (error: Error | null) => void): void {
    assert(this.inFlight === null, "one storage batch at a time");
    const startedMs = performance.now();
    // One journal record, durable when append() returns: this blocks the event loop for the
    // write, and what arrives meanwhile waits in the socket buffers and joins the next turn's
    // batch (the next batch could not start before this one is acknowledged anyway).
    let failure: unknown =
      this.state !== "open" ? new Error(`storage at ${this.path} is ${this.state}`) : this.broken;
    if (failure === null) {
      try {
        this.verify(batch);
      } catch (error) {
        failure = error;
      }
    }
    let encoded: Uint8Array[] = [];
    if (failure === null) {
      try {
        const journal = this.journal as Journal;
        if (this.seq === this.handedThrough) this.pendingSinceMs = startedMs;
        const spans = this.entrySpans;
        spans.length = 0;
        const body = encodeJournalBatch(batch, this.codec, this.journalWriter, spans);
        journal.append(this.seq + 1, body);
        this.seq += 1;
        encoded = entryViews(body, spans);
      } catch (error) {
        // A record half written, or not known durable: nothing after it may be appended.
        const message = error instanceof Error ? error.message : String(error);
        failure = this.broken = new Error(`${message}${diskSpaceNote(this.path)}`, { cause: error });
      }
    }
    if (failure === null) {
      this.pending.add(batch, encoded);
      for (const write of batch.writes) this.verified.add(write.cellKey);
      for (const removed of batch.removed) this.verified.add(removed.cellKey);
    }
    // Durable (or failed) already; `done` still comes later, never inside write() itself.
    this.inFlight = Promise.resolve().then(() => {
      this.inFlight = null;
      if (failure === null) {
        this.batchesWritten += 1;
        this.lastCommitLatencyMs = performance.now() - startedMs;
        done(null);
        if (this.checkpointDue()) this.startCheckpoint();
        else this.armQuietCheckpoint();
        return;
      }
      this.batchesFailed += 1;
      const message = failure instanceof Error ? failure.message : String(failure);
      done(
        new Error(`storage batch of ${batch.writes.length} node writes not written (${message})`, {
          cause: failure,
        }),
      );
    });
  }

  /**
   * What the journal held where the record after the last one replayed would be, when the
   * storage was opened, that was neither a whole record nor zeros: the record being written when
   * a crash struck (never acknowledged), or the last records damaged since (acknowledged, lost).
   * Nothing can tell which; the server warns of each (docs/OPERATIONS.md section 7).
   */
  get droppedJournalEnds(): readonly DroppedRecord[] {
    return this.droppedJournalRecords;
  }

  stats(): LmdbStorageStats {
    this.assertReadable();
    return {
      hostedNodes: entryCountOf(this.nodes),
      storedSegments: entryCountOf(this.entries),
      batchesWritten: this.batchesWritten,
      batchesFailed: this.batchesFailed,
      journalBytes: this.journal?.bytes ?? 0,
      pendingCells: this.pending.size + (this.checkpointing?.cells.size ?? 0),
      checkpoints: this.checkpoints,
      replayedBatches: this.replayedBatches,
      lastCheckpointMs: this.lastCheckpointMs,
      checkpointDurations: this.checkpointDurations.snapshot(),
      checkpointCellsSkippedCorrupt: this.checkpointCellsSkippedCorrupt,
      recordsWritten: this.recordsWritten,
      recordsDeleted: this.recordsDeleted,
      bytesWritten: this.bytesWritten,
      lastCommitLatencyMs: this.lastCommitLatencyMs,
      lastTransactionId: this.lastTransactionId,
      pointersSkippedCorrupt: this.pointersSkippedCorrupt,
      pointersExpired: this.pointersExpired,
    };
  }

  /**
   * Whether batches holding `cells` more cells would make the event loop wait for the checkpoint
   * in flight (see startCheckpoint): true while one runs and the changes written since it started,
   * with those cells, reach a bound of the policy. A caller that can wait without holding the event loop (the admin port creating a
   * burst of cells) waits until this is false before it adds them.
   */
  wouldWaitForCheckpoint(cells: number): boolean {
    return this.state === "open" && this.runner.busy && this.pendingReachesBound(cells);
  }

  /**
   * Whether the changes written since the last checkpoint started, with `cells` more cells, reach
   * a size bound of the policy (the more cells' journal bytes estimated from the average so far).
   */
  private pendingReachesBound(cells: number): boolean {
    const bytes = this.journal?.bytes ?? 0;
    const size = this.pending.size;
    const bytesPerCell = size > 0 ? bytes / size : 0;
    return size + cells >= this.policy.cells || bytes + bytesPerCell * cells >= this.policy.journalBytes;
  }

  /**
   * A quiet server's idle collection: the checkpoint worker, if the storage has one and it is
   * idle, is replaced (the next checkpoint starts a new one), which gives back what a load's
   * checkpoints left in its heap and its lmdb environment.
   */
  collectWorkerGarbage(): void {
    if (this.state === "open") this.runner.collectGarbage();
  }

  /** Waits for the batch in flight (its done is called), checkpoints, then closes the environment. */
  async close(): Promise<void> {
    if (this.state !== "open") return;
    this.state = "closing";
    this.disarmQuietCheckpoint();
    this.wakeCheckpointWaiters();
    while (this.inFlight !== null) await this.inFlight;
    try {
      // A clean stop leaves nothing to replay.
      if (this.broken === null) this.checkpoint();
    } finally {
      this.state = "closed";
      await this.runner.close();
      this.journal?.close();
      await this.root.close();
    }
  }

  /**
   * Brings lmdb up to date with the journal before it returns: waits for the checkpoint in
   * flight, then applies the records after it, and starts the journal over. Throws if a
   * checkpoint fails (the storage is then broken). Checkpoints otherwise run on their own after
   * batches (see CheckpointPolicy); public for tools and tests.
   */
  checkpoint(): void {
    while (this.runner.busy) this.runner.waitIdle();
    // A checkpoint that failed left lmdb without changes the journal holds: a read must not take
    // what lmdb has for the cell's state (it could be a promise older than one made).
    if (this.broken !== null) throw this.broken;
    if (this.seq === this.handedThrough) return;
    assert(this.broken === null, () => `storage at ${this.path} failed: ${this.broken?.message}`);
    const { job, cells } = this.freeze();
    this.finishCheckpoint(cells, this.runner.runNow(job));
    if (this.broken !== null) throw this.broken;
    // Both files hold only records lmdb has now.
    this.journal?.reset();
  }

  /** A read that needs lmdb whole: pending changes go there first. */
  private settle(): void {
    if (this.state === "closed" || (this.seq === this.handedThrough && !this.runner.busy)) return;
    try {
      this.checkpoint();
    } catch {
      // The storage is broken now (finishCheckpoint); reads go on with what lmdb has.
    }
  }

  /**
   * Hands the records written since the last checkpoint to a checkpoint that runs while the
   * event loop goes on (on the worker, if the storage has one). New records go to the journal's
   * other file meanwhile: it holds only records lmdb has, as the checkpoint before this one is
   * done. The records handed over stay in the file they were written to until the next
   * checkpoint starts, so a crash before this one commits replays them.
   */
  private startCheckpoint(): void {
    if (this.broken !== null || this.seq === this.handedThrough) return;
    if (this.runner.busy) {
      // What waits in memory (and for the next read that needs lmdb whole) stays bounded: once
      // the changes written meanwhile reach a size bound of the policy themselves, the event
      // loop waits for the checkpoint in flight.
      if (!this.pendingReachesBound(0)) return;
      // Its done may start the next checkpoint itself, taking the records written meanwhile.
      this.runner.waitIdle();
      if (this.broken !== null || this.runner.busy || this.seq === this.handedThrough) return;
    }
    const { job, cells } = this.freeze();
    this.journal?.rotate();
    this.checkpointing = { cells };
    this.runner.start(job, (result) => {
      this.finishCheckpoint(cells, result);
      this.wakeCheckpointWaiters();
      if (this.state === "open" && this.checkpointDue()) this.startCheckpoint();
      else this.armQuietCheckpoint();
    });
  }

  /**
   * Resolves once lmdb holds every change written before the call, or the storage can take no
   * more (broken, or closing). Unlike the reads that settle first, it never holds the event loop
   * while a checkpoint runs: it starts one if none runs and waits for it as the server goes on.
   */
  async caughtUp(): Promise<void> {
    const target = this.seq;
    for (;;) {
      if (this.state !== "open" || this.broken !== null) return;
      if (this.handedThrough >= target && !this.runner.busy) {
        // This thread's read transaction may be older than the last checkpoint's commit.
        this.root.resetReadTxn();
        return;
      }
      if (!this.runner.busy) this.startCheckpoint();
      if (!this.runner.busy) return; // nothing could start (the storage broke meanwhile)
      if (this.checkpointWaiters.length >= checkpointWaitersMax)
        throw new Error(`more than ${checkpointWaitersMax} reads wait for the storage to catch up`);
      await new Promise<void>((resolve) => this.checkpointWaiters.push(resolve));
    }
  }

  private wakeCheckpointWaiters(): void {
    for (const wake of this.checkpointWaiters.splice(0)) wake();
  }

  /**
   * Checkpoints start after writes; changes a server then writes nothing after would wait in the
   * journal until the next write, however long it is quiet (and the hosted count with them). A
   * timer starts their checkpoint when the interval is up.
   */
  private armQuietCheckpoint(): void {
    if (this.quietTimer !== null || this.state !== "open" || this.broken !== null) return;
    if (this.seq === this.handedThrough) return;
    const dueInMs = Math.max(0, this.pendingSinceMs + this.policy.intervalMs - performance.now());
    this.quietTimer = setTimeout(() => {
      this.quietTimer = null;
      if (this.state !== "open" || this.broken !== null) return;
      if (this.checkpointDue()) this.startCheckpoint();
      else this.armQuietCheckpoint();
    }, dueInMs + 1);
    this.quietTimer.unref();
  }

  private disarmQuietCheckpoint(): void {
    if (this.quietTimer !== null) clearTimeout(this.quietTimer);
    this.quietTimer = null;
  }

  /** The pending changes as a checkpoint's job; later changes start a new overlay. */
  private freeze(): { job: CheckpointJob; cells: Set<CellKey> } {
    const frozen = this.pending;
    this.pending = new Overlay<C>();
    this.handedThrough = this.seq;
    const job: CheckpointJob = {
      changes: encodePendingChanges(frozen.entries(), frozen.size),
      throughSeq: this.seq,
      forget: this.takeForget(),
    };
    return { job, cells: new Set(frozen.cells()) };
  }

  private takeForget(): CellKey[] {
    const forget = this.forget;
    this.forget = [];
    return forget;
  }

  private finishCheckpoint(cells: ReadonlySet<CellKey>, result: CheckpointResult): void {
    this.checkpointing = null;
    if (!result.ok) {
      // The journal still holds every change, and a restart replays it; until then nothing more
      // is accepted, so the journal cannot outgrow what a restart reads.
      // A full disk shows here as lmdb's "Input/output error": say so, with what to do.
      const free = freeBytes(this.path);
      const restart =
        free !== null && free < diskNearlyFullBytes ? "" : "; restart the server to replay the journal";
      this.broken ??= new Error(
        `checkpoint to lmdb failed (${result.error})${diskSpaceNote(this.path, { free })}${restart}`,
      );
      return;
    }
    this.noteCheckpoint(result);
    for (const cellKey of cells) if (!this.pending.has(cellKey)) this.verified.delete(cellKey);
    for (const cellKey of result.outcome.skippedCells) this.intact.delete(cellKey);
    // This thread's read transaction may be older than the checkpoint's commit.
    this.root.resetReadTxn();
  }

  private noteCheckpoint(result: Extract<CheckpointResult, { ok: true }>): void {
    const { outcome, tookMs } = result;
    this.checkpoints += 1;
    this.checkpointCellsSkippedCorrupt += outcome.skippedCells.length;
    this.recordsWritten += outcome.recordsWritten;
    this.recordsDeleted += outcome.recordsDeleted;
    this.bytesWritten += outcome.bytesWritten;
    this.lastTransactionId = outcome.transactionId;
    this.lastCheckpointMs = tookMs;
    this.checkpointDurations.record(tookMs);
  }

  private checkpointDue(): boolean {
    return (
      this.seq > this.handedThrough &&
      ((this.journal?.bytes ?? 0) >= this.policy.journalBytes ||
        this.pending.size >= this.policy.cells ||
        performance.now() - this.pendingSinceMs >= this.policy.intervalMs)
    );
  }

  /**
   * Refuses a batch that a checkpoint could not apply: a write that does not begin its node's
   * stored state (`founding`) of a node whose stored record fails verification
   * (see the file comment). A snapshot taken to compact a node's log is no founding write: over a
   * damaged record it would leave the node's promise and accepted entries forgotten. Nothing of a
   * refused batch is written.
   */
  private verify(batch: StorageBatch<C>): void {
    for (const write of batch.writes) {
      if (write.snapshot === null || write.founding !== true) this.verifyNodeRecord(write.cellKey);
    }
  }

  private verifyNodeRecord(cellKey: CellKey): void {
    if (this.verified.has(cellKey) || this.intact.has(cellKey)) return;
    const key = cellKeyBytes(cellKey);
    const raw = this.nodes.get(key);
    if (raw === undefined) return;
    const stored = verifyNode(key, raw);
    if (!stored.ok) {
      throw new CorruptRecordError(
        `cell ${cellKey}: node record ${stored.problem}; the write needs it intact`,
      );
    }
    this.intact.add(cellKey);
    if (this.intact.size > intactNodesMax) {
      const oldest = this.intact.values().next().value;
      if (oldest !== undefined) this.intact.delete(oldest);
    }
  }

  /** The size both journal files had at least when last opened, or null if never recorded. */
  private journalFilesBytes(): number | null {
    return this.metaNumber(
      journalFilesMetaKey,
      "journal size",
      ". Restore the data directory from a replica (replace this server's nodes).",
    );
  }

  private checkpointedSeq(): number {
    return (
      this.metaNumber(
        journalMetaKey,
        "journal position",
        "; without it the journal cannot be replayed safely. Restore the data directory from a replica (replace this server's nodes).",
      ) ?? 0
    );
  }

  /** A number the meta database holds (sealMetaNumber), or null; a damaged one throws, with `advice`. */
  private metaNumber(name: string, what: string, advice: string): number | null {
    const key = utf8Encode(name);
    const raw = this.meta.get(key);
    if (raw === undefined) return null;
    const value = verifyMetaNumber(key, raw, what);
    if (!value.ok) throw new CorruptRecordError(`${this.path}: the ${what} record ${value.problem}${advice}`);
    return value.value;
  }

  // ---------------------------------------------------------------- test only

  /**
   * Test only: closes like a crash after the last acknowledged batch: no checkpoint, so what the
   * journal holds beyond lmdb is replayed by the next open.
   */
  async abandonForTest(): Promise<void> {
    if (this.state !== "open") return;
    this.state = "closing";
    this.disarmQuietCheckpoint();
    while (this.inFlight !== null) await this.inFlight;
    this.state = "closed";
    // A checkpoint in flight is let finish: a crash may come before or after its commit, and
    // lmdb.crash.test.ts kills processes at both points.
    await this.runner.close();
    this.journal?.close();
    await this.root.close();
  }

  /** Test only: a record's raw stored bytes, checksum included, or undefined if absent. */
  recordBytesForTest(record: StoredRecordRef): Uint8Array | undefined {
    this.assertReadable();
    this.settle();
    const [db, key] = this.locate(record);
    const raw = db.get(key);
    return raw === undefined ? undefined : copyOf(raw);
  }

  /** Test only: overwrites a record's raw bytes (to plant corruption), durably, in its own transaction. */
  overwriteRecordBytesForTest(record: StoredRecordRef, bytes: Uint8Array): void {
    assert(this.state === "open" && this.inFlight === null, "raw overwrite needs an idle open storage");
    this.settle();
    const [db, key] = this.locate(record);
    db.putSync(key, bytes);
    this.intact.delete(record.cellKey);
    this.verified.delete(record.cellKey);
    this.forget.push(record.cellKey);
  }

  private locate(record: StoredRecordRef): [Database<Uint8Array, Uint8Array>, Uint8Array] {
    switch (record.kind) {
      case "node":
        return [this.nodes, cellKeyBytes(record.cellKey)];
      case "segment": {
        const cell = cellKeyBytes(record.cellKey);
        let found: Uint8Array | undefined;
        // The last written of the segments ending at that slot.
        for (const key of this.entries.getKeys({
          start: segmentBound(cell, record.lastSlot, "below"),
          end: segmentBound(cell, record.lastSlot, "above"),
          inclusiveEnd: true,
        })) {
          found = copyOf(key);
        }
        assert(
          found !== undefined,
          () => `cell ${record.cellKey} has no segment ending at slot ${record.lastSlot}`,
        );
        return [this.entries, found];
      }
      case "pointer":
        return [this.storedPointers, cellKeyBytes(record.cellKey)];
    }
  }

  private assertReadable(): void {
    assert(this.state !== "closed", () => `storage at ${this.path} is closed`);
  }
}

/** A server directory's lmdb environment: its root and the sub-databases (see the file comment). */
export interface LmdbEnvironment {
  readonly root: RootDatabase;
  readonly nodes: Database<Uint8Array, Uint8Array>;
  readonly entries: Database<Uint8Array, Uint8Array>;
  readonly storedPointers: Database<Uint8Array, Uint8Array>;
  readonly meta: Database<Uint8Array, Uint8Array>;
}

/**
 * Opens the environment at `path` (created if missing) with the durability settings above. A
 * process may open one directory on several threads: lmdb shares the environment between them.
 */
export function openEnvironment(path: string): LmdbEnvironment {
  const root = open({
    path,
    ...durableEnvironmentOptions,
    maxDbs: 4,
    readOnly: false,
    // The root database holds nothing; the sub-databases below hold everything.
    encoding: "binary",
    keyEncoding: "binary",
    compression: false,
    cache: false,
  } as RootDatabaseOptionsWithPath);
  const sub = (name: string): Database<Uint8Array, Uint8Array> =>
    root.openDB<Uint8Array, Uint8Array>({
      name,
      encoding: "binary",
      keyEncoding: "binary",
      compression: false,
      cache: false,
    });
  return {
    root,
    nodes: sub("nodes"),
    entries: sub("entries"),
    storedPointers: sub("pointers"),
    meta: sub("meta"),
  };
}

/**
 * The checkpoint itself: applies cells' pending changes to lmdb, in one write transaction
 * committed with its flushes, which also records the last journal record they cover. Runs on the
 * thread that owns the environment's writes: the storage's own thread or its checkpoint worker
 * (checkpoint-runner.ts), one at a time. Remembers which node records it wrote or found intact,
 * so that the common accept skips reading its node record.
 */
export class LmdbApplier<C> {
  /** Node records known intact in lmdb, by cell: incarnation and a lower bound of the promise. */
  private readonly intact = new Map<CellKey, { incarnation: number; promised: number }>();
  /** Reused for segment records (see writeEntries). */
  private readonly entryWriter = new ByteWriter(1024);
  private readonly segmentKeyBuffer = new Uint8Array(
    1 + limits.cellKeyBytesMax + slotBytes + segmentOrderBytes,
  );
  private readonly segmentKeyView = new DataView(this.segmentKeyBuffer.buffer);
  /** Segments the running checkpoint has written: the ordinal of its next one. */
  private segmentOrdinal = 0;
  /** The sequence number the running checkpoint covers: the write order of its segments. */
  private orderSeq = 0;
  private readonly nodes: Database<Uint8Array, Uint8Array>;
  private readonly entries: Database<Uint8Array, Uint8Array>;
  private readonly storedPointers: Database<Uint8Array, Uint8Array>;

  constructor(
    private readonly env: LmdbEnvironment,
    private readonly codec: CommandCodec<C>,
  ) {
    this.nodes = env.nodes;
    this.entries = env.entries;
    this.storedPointers = env.storedPointers;
  }

  /** A checkpoint runner's job: forgets what it was told to, then applies the changes. */
  applyJob(job: CheckpointJob): CheckpointOutcome {
    for (const cellKey of job.forget) this.intact.delete(cellKey);
    return this.apply(decodePendingChanges(job.changes), job.throughSeq);
  }

  /**
   * Applies each cell's pending changes, in order, and records throughSeq as the last journal
   * record lmdb covers, in one transaction. A failed transaction changes nothing and throws.
   */
  apply(pending: Iterable<[CellKey, readonly PendingChange[]]>, throughSeq: number): CheckpointOutcome {
    const tally: Tally = { recordsWritten: 0, recordsDeleted: 0, bytesWritten: 0, transactionId: 0 };
    const skippedCells: CellKey[] = [];
    try {
      this.segmentOrdinal = 0;
      this.orderSeq = throughSeq;
      this.env.root.transactionSync(() => {
        tally.transactionId = this.env.root.getWriteTxnId();
        for (const [cellKey, changes] of pending) {
          if (!this.applyChanges(cellKey, changes, tally)) skippedCells.push(cellKey);
        }
        const key = utf8Encode(journalMetaKey);
        this.put(this.env.meta, key, sealMetaNumber(key, throughSeq), tally);
      });
    } catch (error) {
      // What the aborted transaction noted about its nodes was never committed.
      this.intact.clear();
      throw error;
    }
    return { ...tally, skippedCells };
  }

  /**
   * Applies one cell's pending changes in order. False if the cell's stored node record failed
   * verification on the way: its remaining changes are left out and the record stays as it is,
   * so the node loads as corrupt (a non-voting learner) and nothing it promised is contradicted.
   * The record was intact when the changes were verified; only damage since then gets here.
   */
  private applyChanges(cellKey: CellKey, changes: readonly PendingChange[], tally: Tally): boolean {
    try {
      for (const change of changes) {
        switch (change.kind) {
          case "write":
            this.applyWrite(unfold(change.write), tally);
            break;
          case "remove":
            this.applyRemove(cellKey, change.incarnation, tally);
            break;
          case "pointer": {
            const key = cellKeyBytes(cellKey);
            this.put(this.storedPointers, key, sealPointer(key, change.pointer), tally);
            break;
          }
        }
      }
      return true;
    } catch (error) {
      if (!(error instanceof CorruptRecordError)) throw error;
      this.intact.delete(cellKey);
      return false;
    }
  }

  /**
   * Deletes the node's records, if the stored node is that incarnation, or if its record fails
   * verification (the incarnation it names cannot be known; a removal builds on nothing stored).
   */
  private applyRemove(cellKey: CellKey, incarnation: number, tally: Tally): void {
    const key = cellKeyBytes(cellKey);
    const raw = this.nodes.get(key);
    if (raw === undefined) return;
    const stored = verifyNode(key, raw);
    if (stored.ok && nodeOf(stored.value).incarnation !== incarnation) return;
    this.intact.delete(cellKey);
    this.remove(this.nodes, key, tally);
    this.deleteEntries(cellKey, slotMax, false, tally);
  }

  private applyWrite(write: EncodedNodeWrite, tally: Tally): void {
    const known = this.intact.get(write.cellKey);
    if (
      known !== undefined &&
      known.incarnation === write.node.incarnation &&
      write.snapshot === null &&
      (write.promised === null || write.promised <= known.promised)
    ) {
      // The common accept: the stored node stays as it is; only its entries change.
      this.writeEntries(write, 0, tally);
      return;
    }
    const key = cellKeyBytes(write.cellKey);
    // A write carrying a whole snapshot (a node created, or added to replace a faulty one) may
    // replace a damaged record: it does not build on what was stored.
    let stored = this.storedNodeForWrite(write.cellKey, key, write.snapshot !== null ? tally : null);
    // An older incarnation's write (a node already replaced on this server) changes nothing.
    if (stored !== null && nodeOf(stored).incarnation > write.node.incarnation) return;
    let changed = false;
    if (stored === null || nodeOf(stored).incarnation !== write.node.incarnation) {
      // A new incarnation: its records replace the old node's, and the cell is hosted again.
      if (stored !== null) this.deleteEntries(write.cellKey, slotMax, false, tally);
      this.remove(this.storedPointers, key, tally);
      stored = { kind: "pending", node: write.node, promised: 0 };
      changed = true;
    }
    let promised = stored.kind === "node" ? stored.header.promised : stored.promised;
    if (write.promised !== null && write.promised > promised) {
      promised = write.promised;
      changed = true;
    }
    let snapshot: Snapshot | null = stored.kind === "node" ? stored.header.snapshot : null;
    if (write.snapshot !== null && (snapshot === null || write.snapshot.index >= snapshot.index)) {
      snapshot = write.snapshot;
      changed = true;
    }
    if (changed) {
      const node = nodeOf(stored);
      const record =
        snapshot === null ? sealPending(key, node, promised) : sealNode(key, { node, promised, snapshot });
      this.put(this.nodes, key, record, tally);
    }
    this.noteIntact(write.cellKey, nodeOf(stored).incarnation, promised);
    this.writeEntries(write, snapshot?.index ?? 0, tally);
  }

  /**
   * Truncates, then stores the write's entries. `hiddenThrough` is a slot the node's stored
   * snapshot is known to cover (0 if not known): load() never returns entries at or below it, so
   * a truncation up to there need not rewrite the segment that straddles it. The replica truncates
   * only what a durable snapshot covers, so that is every truncation in practice.
   */
  private writeEntries(write: EncodedNodeWrite, hiddenThrough: number, tally: Tally): void {
    const through = write.truncateThrough;
    if (through > 0) this.deleteEntries(write.cellKey, through, through > hiddenThrough, tally);
    const entries = write.entries;
    if (entries.length === 0) return;
    const cell = cellKeyBytes(write.cellKey);
    let first = 0;
    let bytes = 0;
    for (let i = 0; i < entries.length; i++) {
      const size = (entries[i] as EncodedEntry).bytes.length;
      if (i > first && (bytes + size > segmentBytesTarget || i - first === segmentEntriesMax)) {
        this.putSegment(cell, entries, first, i, tally);
        first = i;
        bytes = 0;
      }
      bytes += size;
    }
    this.putSegment(cell, entries, first, entries.length, tally);
  }

  /**
   * Stores entries [from, to) (in increasing slot order) as one segment of this checkpoint. One
   * key and one value buffer for all segments: a put inside a synchronous transaction copies
   * both into lmdb before it returns.
   */
  private putSegment(
    cell: Uint8Array,
    entries: readonly EncodedEntry[],
    from: number,
    to: number,
    tally: Tally,
  ): void {
    const key = this.segmentKeyBuffer.subarray(0, 1 + cell.length + slotBytes + segmentOrderBytes);
    key[0] = cell.length;
    key.set(cell, 1);
    const view = this.segmentKeyView;
    setSlot(view, 1 + cell.length, (entries[to - 1] as EncodedEntry).slot);
    setSlot(view, 1 + cell.length + slotBytes, this.orderSeq);
    view.setUint32(1 + cell.length + 2 * slotBytes, this.segmentOrdinal);
    this.segmentOrdinal += 1;
    const writer = this.entryWriter;
    writer
      .clear()
      .raw(checksumPlaceholder)
      .byte(PAXOS_RECORD_VERSION)
      .uint(to - from);
    // Each entry as the journal holds it (writeLogEntry's bytes).
    for (let i = from; i < to; i++) writer.raw((entries[i] as EncodedEntry).bytes);
    const record = writer.view();
    const body = record.subarray(checksumBytes);
    new DataView(record.buffer, record.byteOffset, checksumBytes).setUint32(0, checksumOf(key, body));
    this.put(this.entries, key, record, tally);
  }

  /**
   * Remembers a node record this adapter wrote or verified: its incarnation and promise (the
   * promise only grows, so a smaller one is a safe lower bound). Writes that change neither then
   * skip reading and decoding the record. Bounded; the oldest entries go first.
   */
  private noteIntact(cellKey: CellKey, incarnation: number, promised: number): void {
    this.intact.delete(cellKey);
    this.intact.set(cellKey, { incarnation, promised });
    if (this.intact.size > intactNodesMax) {
      const oldest = this.intact.keys().next().value;
      if (oldest !== undefined) this.intact.delete(oldest);
    }
  }

  /**
   * The stored node a write must build on. A damaged one abandons the batch (see the file
   * comment), unless `replacing` is given: then the damaged node's records are deleted and the
   * write starts afresh.
   */
  private storedNodeForWrite(
    cellKey: CellKey,
    key: Uint8Array,
    replacing: Tally | null = null,
  ): StoredNode | null {
    const raw = this.nodes.get(key);
    if (raw === undefined) return null;
    const stored = verifyNode(key, raw);
    if (!stored.ok) this.intact.delete(cellKey);
    if (!stored.ok && replacing !== null) {
      this.remove(this.nodes, key, replacing);
      this.deleteEntries(cellKey, slotMax, false, replacing);
      return null;
    }
    if (!stored.ok) {
      throw new CorruptRecordError(
        `cell ${cellKey}: node record ${stored.problem}; the write needs it intact`,
      );
    }
    return stored.value;
  }

  /**
   * Deletes the cell's entries with slot <= throughSlot: the key range of the segments that end
   * there or below, then, if `trim`, the segments that straddle it are rewritten without them. No
   * other cell's keys are visited.
   */
  private deleteEntries(cellKey: CellKey, throughSlot: number, trim: boolean, tally: Tally): void {
    const cell = cellKeyBytes(cellKey);
    const keys: Uint8Array[] = [];
    // Collected first: deleting under an open cursor is not something to rely on.
    for (const key of this.entries.getKeys({
      start: segmentBound(cell, 0, "below"),
      end: segmentBound(cell, throughSlot, "above"),
      inclusiveEnd: true,
    })) {
      keys.push(copyOf(key));
    }
    for (const key of keys) this.remove(this.entries, key, tally);
    if (trim) this.trimStraddlers(cellKey, cell, throughSlot, tally);
  }

  /**
   * Rewrites the cell's segments that end above throughSlot but begin at or below it without
   * their entries <= throughSlot (one per truncation at most, in practice: segments of one node
   * hold increasing slots unless a slot was accepted again). A damaged segment abandons the cell's
   * changes like a damaged node record: the node then loads as corrupt.
   */
  private trimStraddlers(cellKey: CellKey, cell: Uint8Array, throughSlot: number, tally: Tally): void {
    const rewrites: [Uint8Array, Uint8Array][] = [];
    for (const { key, value } of this.entries.getRange({
      start: segmentBound(cell, throughSlot + 1, "below"),
      end: segmentBound(cell, slotMax, "above"),
      inclusiveEnd: true,
    })) {
      // An entry record of the older layout holds only the slot its key names (> throughSlot).
      if (key.length !== 1 + cell.length + slotBytes + segmentOrderBytes) continue;
      const first = firstSlotOfSegment(key, value);
      if (!first.ok) {
        throw new CorruptRecordError(
          `cell ${cellKey}: log segment record ending at slot ${highestSlotOfKey(key, cell.length)} ` +
            `${first.problem}; truncating the log needs it intact`,
        );
      }
      if (first.value > throughSlot) continue;
      const read = readSegmentRecord(key, cell.length, value, this.codec);
      if (!read.ok) {
        throw new CorruptRecordError(`cell ${cellKey}: ${read.problem}; truncating the log needs it intact`);
      }
      const kept = read.value.entries.filter((entry) => entry.slot > throughSlot);
      const body = new ByteWriter(value.length);
      body.byte(PAXOS_RECORD_VERSION).uint(kept.length);
      for (const entry of kept) writeLogEntry(body, entry, this.codec);
      const storedKey = copyOf(key);
      rewrites.push([storedKey, seal(storedKey, body.finish())]);
    }
    for (const [key, record] of rewrites) this.put(this.entries, key, record, tally);
  }

  private put(db: Database<Uint8Array, Uint8Array>, key: Uint8Array, value: Uint8Array, tally: Tally): void {
    db.putSync(key, value);
    tally.recordsWritten += 1;
    tally.bytesWritten += key.length + value.length;
  }

  private remove(db: Database<Uint8Array, Uint8Array>, key: Uint8Array, tally: Tally): void {
    if (db.removeSync(key)) tally.recordsDeleted += 1;
  }
}

interface Tally {
  recordsWritten: number;
  recordsDeleted: number;
  bytesWritten: number;
  transactionId: number;
}

const textDecoder = new TextDecoder("utf-8", { fatal: true });

function entryCountOf(db: Database<Uint8Array, Uint8Array>): number {
  const stats = db.getStats() as { entryCount?: unknown };
  assert(typeof stats.entryCount === "number", "lmdb statistics carry an entry count");
  return stats.entryCount;
}

function nodeOf(stored: StoredNode): NodeId {
  return stored.kind === "node" ? stored.header.node : stored.node;
}

// ---------------------------------------------------------------- keys

function cellKeyBytes(cellKey: CellKey): Uint8Array {
  const bytes = utf8Encode(cellKey);
  assert(
    bytes.length >= 1 && bytes.length <= limits.cellKeyBytesMax,
    () => `cell key of ${bytes.length} bytes outside 1..${limits.cellKeyBytesMax}`,
  );
  return bytes;
}

/**
 * A bound of the cell's segment keys ending at `slot`. The lower one ("below") is the keys'
 * common prefix, which sorts before each of them and before an older-layout entry key of that
 * slot (the same prefix, nothing after it); the upper one has every order byte at 0xff.
 */
function segmentBound(cell: Uint8Array, slot: number, side: "below" | "above"): Uint8Array {
  const key = new Uint8Array(1 + cell.length + slotBytes + (side === "above" ? segmentOrderBytes : 0));
  key.fill(0xff);
  key[0] = cell.length;
  key.set(cell, 1);
  setSlot(new DataView(key.buffer), 1 + cell.length, slot);
  return key;
}

function setSlot(view: DataView, at: number, slot: number): void {
  assert(Number.isSafeInteger(slot) && slot >= 0, () => `slot ${slot} is not a stored slot number`);
  view.setUint32(at, Math.floor(slot / 2 ** 32));
  view.setUint32(at + 4, slot >>> 0);
}

const checksumPlaceholder = new Uint8Array(4);

/** The highest slot a segment key (or an older-layout entry key) names. */
function highestSlotOfKey(key: Uint8Array, cellLength: number): number {
  const view = new DataView(key.buffer, key.byteOffset, key.byteLength);
  const at = 1 + cellLength;
  return view.getUint32(at) * 2 ** 32 + view.getUint32(at + 4);
}

// ---------------------------------------------------------------- checksummed records

function checksumOf(key: Uint8Array, body: Uint8Array): number {
  return crc32(body, crc32(key));
}

/** checksum || body */
function seal(key: Uint8Array, body: Uint8Array): Uint8Array {
  const record = new Uint8Array(checksumBytes + body.length);
  new DataView(record.buffer).setUint32(0, checksumOf(key, body));
  record.set(body, checksumBytes);
  return record;
}

/** The record's body as an independent copy (lmdb's buffers are not ours to keep), or the problem. */
function unseal(key: Uint8Array, raw: Uint8Array): Verified<Uint8Array> {
  const problem = sealProblem(key, raw);
  if (problem !== null) return { ok: false, problem };
  return { ok: true, value: copyOf(raw.subarray(checksumBytes)) };
}

/** Why the record's checksum does not hold, or null if it does. */
function sealProblem(key: Uint8Array, raw: Uint8Array): string | null {
  if (raw.length < checksumBytes + 1) return `is truncated (${raw.length} bytes)`;
  const expected = new DataView(raw.buffer, raw.byteOffset, raw.byteLength).getUint32(0);
  const actual = checksumOf(key, raw.subarray(checksumBytes));
  if (actual === expected) return null;
  return `fails its checksum (stored ${hex32(expected)}, computed ${hex32(actual)}, ${raw.length} bytes)`;
}

/**
 * A plain Uint8Array copy. lmdb hands out Buffers, and Buffer's slice shares memory (and even
 * Uint8Array.prototype.slice returns a Buffer for one): decoded values must own their bytes.
 */
function copyOf(bytes: Uint8Array): Uint8Array {
  const copy = new Uint8Array(bytes.length);
  copy.set(bytes);
  return copy;
}

function hex32(value: number): string {
  return value.toString(16).padStart(8, "0");
}

/** A reader past a record's version byte; another version is a DecodeError naming the record. */
function recordReader(bytes: Uint8Array, what: string): ByteReader {
  const reader = new ByteReader(bytes);
  const version = reader.byte();
  if (version !== PAXOS_RECORD_VERSION)
    throw new DecodeError(`${what} record version ${version}; this build reads ${PAXOS_RECORD_VERSION}`);
  return reader;
}

/** Runs a decoder over verified bytes; malformed content becomes a problem, anything else is a bug. */
function decoded<T>(decode: () => T): Verified<T> {
  try {
    return { ok: true, value: decode() };
  } catch (error) {
    if (error instanceof DecodeError) return { ok: false, problem: `does not decode: ${error.message}` };
    throw error;
  }
}

function sealNode(key: Uint8Array, header: NodeHeader): Uint8Array {
  // A snapshot without configurations would be refused on load: storing one is a bug upstream.
  assert(
    header.snapshot.membership.configurations.length > 0,
    () => `snapshot at index ${header.snapshot.index} has no configuration`,
  );
  const encoded = encodeNodeHeader(header);
  const body = new Uint8Array(1 + encoded.length);
  body[0] = nodeRecordKind.node;
  body.set(encoded, 1);
  return seal(key, body);
}

function sealPending(key: Uint8Array, node: NodeId, promised: number): Uint8Array {
  const writer = new ByteWriter(32);
  writer.byte(nodeRecordKind.pending).byte(PAXOS_RECORD_VERSION);
  writeNodeId(writer, node);
  writer.uint(promised);
  return seal(key, writer.finish());
}

function verifyNode(key: Uint8Array, raw: Uint8Array): Verified<StoredNode> {
  const body = unseal(key, raw);
  if (!body.ok) return body;
  const bytes = body.value;
  switch (bytes[0]) {
    case nodeRecordKind.node:
      return decoded(() => ({ kind: "node", header: decodeNodeHeader(bytes.subarray(1)) }));
    case nodeRecordKind.pending:
      return decoded(() => {
        const reader = recordReader(bytes.subarray(1), "pending node");
        const node = readNodeId(reader);
        const promised = reader.uint();
        reader.end();
        return { kind: "pending", node, promised };
      });
    default:
      return { ok: false, problem: `has unknown kind ${bytes[0]}` };
  }
}

/** Key of the meta record holding the journal's last checkpointed sequence number. */
const journalMetaKey = "journal.checkpointed";
/** Key of the meta record holding the size both journal files had at least when last opened. */
const journalFilesMetaKey = "journal.files.bytes";

/** A meta record holding one number (the journal's position, its files' size), sealed under its key. */
function sealMetaNumber(key: Uint8Array, value: number): Uint8Array {
  const writer = new ByteWriter(16);
  writer.byte(PAXOS_RECORD_VERSION).uint(value);
  return seal(key, writer.finish());
}

function verifyMetaNumber(key: Uint8Array, raw: Uint8Array, label: string): Verified<number> {
  const body = unseal(key, raw);
  if (!body.ok) return body;
  return decoded(() => {
    const reader = recordReader(body.value, label);
    const seq = reader.uint();
    reader.end();
    return seq;
  });
}

/**
 * A stored segment's entries and write order, or the problem (naming the record). An older-layout
 * entry record reads as a segment of its one entry, ordered before every segment.
 */
function readSegmentRecord<C>(
  key: Uint8Array,
  cellLength: number,
  raw: Uint8Array,
  codec: CommandCodec<C>,
): Verified<{ order: Uint8Array; entries: readonly LogEntry<C>[] }> {
  const lastSlot = highestSlotOfKey(key, cellLength);
  const legacy = key.length === 1 + cellLength + slotBytes;
  const what = legacy
    ? `log entry record of slot ${lastSlot}`
    : `log segment record ending at slot ${lastSlot}`;
  const body = unseal(key, raw);
  if (!body.ok) return { ok: false, problem: `${what} ${body.problem}` };
  const entries = decoded(() => {
    if (legacy) return [decodeStoredEntry(body.value, codec)];
    const reader = recordReader(body.value, "log segment");
    const count = reader.uint();
    if (count < 1 || count > segmentEntriesMax)
      throw new DecodeError(`segment of ${count} entries (1..${segmentEntriesMax})`);
    const read: LogEntry<C>[] = [];
    for (let i = 0; i < count; i++) read.push(readLogEntry(reader, codec));
    reader.end();
    return read;
  });
  if (!entries.ok) return { ok: false, problem: `${what} ${entries.problem}` };
  const read = entries.value;
  for (let i = 1; i < read.length; i++) {
    if ((read[i] as LogEntry<C>).slot <= (read[i - 1] as LogEntry<C>).slot)
      return { ok: false, problem: `${what} holds slots out of order` };
  }
  const last = (read[read.length - 1] as LogEntry<C>).slot;
  if (last !== lastSlot) return { ok: false, problem: `${what} holds slot ${last} as its last` };
  const order = legacy
    ? new Uint8Array(segmentOrderBytes)
    : copyOf(key.subarray(key.length - segmentOrderBytes));
  return { ok: true, value: { order, entries: read } };
}

/**
 * The first slot of a stored segment after its checksum is verified, without decoding its
 * entries (each begins with its slot: writeLogEntry).
 */
function firstSlotOfSegment(key: Uint8Array, raw: Uint8Array): Verified<number> {
  const problem = sealProblem(key, raw);
  if (problem !== null) return { ok: false, problem };
  return decoded(() => {
    const reader = recordReader(raw.subarray(checksumBytes), "log segment");
    reader.uint();
    return reader.uint();
  });
}

function sealPointer(key: Uint8Array, pointer: ForwardingPointer): Uint8Array {
  const writer = new ByteWriter(64);
  writer.byte(PAXOS_RECORD_VERSION);
  writePointerFields(writer, pointer);
  return seal(key, writer.finish());
}

function verifyPointer(key: Uint8Array, raw: Uint8Array): Verified<ForwardingPointer> {
  const body = unseal(key, raw);
  if (!body.ok) return body;
  return decoded(() => {
    let cellKey: CellKey;
    try {
      cellKey = textDecoder.decode(key);
    } catch {
      throw new DecodeError("cell key is not UTF-8");
    }
    const reader = recordReader(body.value, "pointer");
    const pointer = readPointerFields(reader, cellKey);
    reader.end();
    return pointer;
  });
}

/**
 * Views of each journaled entry's bytes, in a copy of the record body made once for all of them
 * (the body is a view of a writer that the next batch reuses).
 */
function entryViews(body: Uint8Array, spans: readonly number[]): Uint8Array[] {
  if (spans.length === 0) return [];
  const first = spans[0] as number;
  const copy = body.slice(first, spans[spans.length - 1]);
  const views: Uint8Array[] = new Array(spans.length / 2);
  for (let i = 0; i < spans.length; i += 2) {
    views[i / 2] = copy.subarray((spans[i] as number) - first, (spans[i + 1] as number) - first);
  }
  return views;
}
