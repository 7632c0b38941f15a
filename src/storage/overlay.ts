/**
 * What the journal holds and lmdb does not yet: the changes of every batch since the last
 * checkpoint, kept per cell in the order they were written, with consecutive writes to the same
 * node folded into one. A checkpoint applies each cell's changes to lmdb in order.
 *
 * Log entries are kept as the journal encoded them (writeLogEntry's bytes, views of the batch's
 * record), not as decoded values: a checkpoint stores those bytes as they are instead of encoding
 * each entry again, and pending changes that outlive a few young-generation collections (they
 * wait for a checkpoint for up to its interval) hold one byte view per entry rather than a graph
 * of objects the collector copies each time.
 *
 * Folding write b into an earlier write a of the same node (incarnation) gives a write with the
 * same effect as a then b on any stored state:
 *   promised        the larger (a stored promise only grows)
 *   snapshot        the one of larger index, b's on a tie (a stored snapshot is replaced by one
 *                   of equal or larger index)
 *   truncateThrough the larger, and a's entries at or below b's truncation are dropped
 *   entries         a's, then b's (b's replace a's of the same slot)
 * Removals, forwarding pointers and writes of another incarnation are kept as they are, in
 * order, so a cell's history replays exactly. lmdb.test.ts checks the equivalence against
 * MemoryStorage on random histories of batches, checkpoints and crashes.
 */
import { assert, ByteReader, ByteWriter, type CellKey, DecodeError, type NodeId } from "../core/index.ts";
import { type LogEntry, type NodeWrite, readCellKey, type Snapshot } from "../paxos/index.ts";
import { boundedCount, readNodeWriteHeader, writeNodeWriteHeader } from "./journal.ts";
import { readPointerFields, writePointerFields } from "./pointer-codec.ts";
import type { ForwardingPointer, StorageBatch } from "./port.ts";

export type PendingChange =
  | { readonly kind: "write"; readonly write: FoldedWrite }
  | { readonly kind: "remove"; readonly incarnation: number }
  | { readonly kind: "pointer"; readonly pointer: ForwardingPointer };

/** A node write that may stand for several (see the file comment); entries encoded, by slot. */
export interface FoldedWrite {
  readonly cellKey: CellKey;
  readonly node: NodeId;
  promised: number | null;
  snapshot: Snapshot | null;
  truncateThrough: number;
  readonly entries: Map<number, Uint8Array>;
}

/** A log entry as writeLogEntry encodes it. */
export interface EncodedEntry {
  readonly slot: number;
  readonly bytes: Uint8Array;
}

/** A folded write as one node write: entries encoded, in slot order. */
export interface EncodedNodeWrite {
  readonly cellKey: CellKey;
  readonly node: NodeId;
  readonly promised: number | null;
  readonly snapshot: Snapshot | null;
  readonly truncateThrough: number;
  readonly entries: readonly EncodedEntry[];
}

export class Overlay<C> {
  private readonly cells_ = new Map<CellKey, PendingChange[]>();

  /** Cells with pending changes. */
  get size(): number {
    return this.cells_.size;
  }

  has(cellKey: CellKey): boolean {
    return this.cells_.has(cellKey);
  }

  /**
   * Adds a batch in the order StorageBatch defines: its writes, then removals, then pointers.
   * `encoded` holds every entry of the batch's writes encoded, in batch order (the journal
   * record's views: encodeJournalBatch's spans, or what decodeJournalBatch collects).
   */
  add(batch: StorageBatch<C>, encoded: readonly Uint8Array[]): void {
    let entries = 0;
    for (const write of batch.writes) entries += write.entries.length;
    // Checked before anything is added: a mismatch must not leave half a batch pending.
    assert(entries === encoded.length, () => `batch has ${entries} entries, ${encoded.length} encoded`);
    let next = 0;
    for (const write of batch.writes) {
      this.addWrite(write, encoded, next);
      next += write.entries.length;
    }
    for (const { cellKey, incarnation } of batch.removed)
      this.changesOf(cellKey).push({ kind: "remove", incarnation });
    for (const pointer of batch.pointers) this.changesOf(pointer.cellKey).push({ kind: "pointer", pointer });
  }

  /** Cells with pending changes. */
  cells(): IterableIterator<CellKey> {
    return this.cells_.keys();
  }

  /** Every cell's pending changes, in the order they must be applied. */
  entries(): IterableIterator<[CellKey, readonly PendingChange[]]> {
    return this.cells_.entries();
  }

  clear(): void {
    this.cells_.clear();
  }

  private addWrite(write: NodeWrite<C>, encoded: readonly Uint8Array[], first: number): void {
    const changes = this.changesOf(write.cellKey);
    const last = changes[changes.length - 1];
    if (
      last?.kind === "write" &&
      last.write.node.incarnation === write.node.incarnation &&
      last.write.node.serverId === write.node.serverId
    ) {
      foldInto(last.write, write, encoded, first);
      return;
    }
    const folded: FoldedWrite = {
      cellKey: write.cellKey,
      node: write.node,
      promised: null,
      snapshot: null,
      truncateThrough: 0,
      entries: new Map(),
    };
    foldInto(folded, write, encoded, first);
    changes.push({ kind: "write", write: folded });
  }

  private changesOf(cellKey: CellKey): PendingChange[] {
    let changes = this.cells_.get(cellKey);
    if (changes === undefined) {
      changes = [];
      this.cells_.set(cellKey, changes);
    }
    return changes;
  }
}

/** Folds `write` into `into`; its entries' encodings are encoded[first], encoded[first + 1], ... */
function foldInto<C>(
  into: FoldedWrite,
  write: NodeWrite<C>,
  encoded: readonly Uint8Array[],
  first: number,
): void {
  if (write.promised !== null && (into.promised === null || write.promised > into.promised)) {
    into.promised = write.promised;
  }
  if (write.snapshot !== null && (into.snapshot === null || write.snapshot.index >= into.snapshot.index)) {
    into.snapshot = write.snapshot;
  }
  if (write.truncateThrough > 0) {
    for (const slot of into.entries.keys()) if (slot <= write.truncateThrough) into.entries.delete(slot);
    if (write.truncateThrough > into.truncateThrough) into.truncateThrough = write.truncateThrough;
  }
  const entries = write.entries;
  for (let i = 0; i < entries.length; i++) {
    into.entries.set((entries[i] as LogEntry<C>).slot, encoded[first + i] as Uint8Array);
  }
}

/** The folded write as one node write, entries in slot order. */
export function unfold(folded: FoldedWrite): EncodedNodeWrite {
  const entries: EncodedEntry[] = [];
  for (const [slot, bytes] of folded.entries) entries.push({ slot, bytes });
  entries.sort((a, b) => a.slot - b.slot);
  return {
    cellKey: folded.cellKey,
    node: folded.node,
    promised: folded.promised,
    snapshot: folded.snapshot,
    truncateThrough: folded.truncateThrough,
    entries,
  };
}

// ---------------------------------------------------------------- pending changes as bytes

/** Format of encodePendingChanges' bytes. */
const PENDING_CHANGES_VERSION = 1;
const changeTag = { write: 1, remove: 2, pointer: 3 } as const;
/** An entry's bytes are at most a journal record's; anything longer is not an entry. */
const entryBytesMax = 256 * 1024 * 1024;

/**
 * Cells' pending changes as one buffer, for a checkpoint that runs on another thread: entries
 * travel as the bytes the journal holds (length-prefixed, so the reader never decodes a command),
 * and the rest as the journal writes it.
 *
 * version | uint cells | (cellKey | uint changes | change*)*
 * change: 1 | node | bool promised? uint | bool snapshot? snapshot | uint truncateThrough |
 *             uint entries | (uint slot | bytes entry)*
 *       | 2 | uint incarnation
 *       | 3 | pointer fields (pointer-codec.ts)
 */
export function encodePendingChanges(
  cells: Iterable<[CellKey, readonly PendingChange[]]>,
  count: number,
  writer: ByteWriter = new ByteWriter(64 * 1024),
): Uint8Array {
  writer.clear().byte(PENDING_CHANGES_VERSION).uint(count);
  let written = 0;
  for (const [cellKey, changes] of cells) {
    writer.string(cellKey).uint(changes.length);
    for (const change of changes) {
      switch (change.kind) {
        case "write": {
          const write = change.write;
          writer.byte(changeTag.write);
          writeNodeWriteHeader(writer, write);
          writer.uint(write.entries.size);
          for (const [slot, bytes] of write.entries) writer.uint(slot).bytes(bytes);
          break;
        }
        case "remove":
          writer.byte(changeTag.remove).uint(change.incarnation);
          break;
        case "pointer":
          writer.byte(changeTag.pointer);
          writePointerFields(writer, change.pointer);
          break;
      }
    }
    written += 1;
  }
  assert(written === count, () => `${written} cells encoded, ${count} announced`);
  return writer.finish();
}

/**
 * What encodePendingChanges wrote, a cell at a time (a checkpoint applies each before the next is
 * read, so a large one never holds every cell's objects at once); entries are views of `bytes`.
 * Throws DecodeError for anything else, at the first byte that does not fit.
 */
export function* decodePendingChanges(bytes: Uint8Array): Generator<[CellKey, PendingChange[]]> {
  const reader = new ByteReader(bytes);
  const version = reader.byte();
  if (version !== PENDING_CHANGES_VERSION)
    throw new DecodeError(
      `pending changes of format ${version}; this build reads ${PENDING_CHANGES_VERSION}`,
    );
  const cellCount = boundedCount(reader, "cells");
  for (let i = 0; i < cellCount; i++) {
    const cellKey = readCellKey(reader);
    const changes: PendingChange[] = [];
    const changeCount = boundedCount(reader, "changes");
    for (let j = 0; j < changeCount; j++) {
      const tag = reader.byte();
      if (tag === changeTag.write) {
        const { node, promised, snapshot, truncateThrough } = readNodeWriteHeader(reader);
        const entries = new Map<number, Uint8Array>();
        const entryCount = boundedCount(reader, "entries");
        // A checkpoint applies a cell's entries before it reads the next cell, and lmdb copies what
        // it stores: nothing keeps a view past the job.
        for (let k = 0; k < entryCount; k++) entries.set(reader.uint(), reader.view(entryBytesMax));
        changes.push({
          kind: "write",
          write: { cellKey, node, promised, snapshot, truncateThrough, entries },
        });
      } else if (tag === changeTag.remove) {
        changes.push({ kind: "remove", incarnation: reader.uint() });
      } else if (tag === changeTag.pointer) {
        changes.push({ kind: "pointer", pointer: readPointerFields(reader, cellKey) });
      } else {
        throw new DecodeError(`unknown pending change tag ${tag}`);
      }
    }
    yield [cellKey, changes];
  }
  reader.end();
}
