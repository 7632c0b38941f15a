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
import { assert, type CellKey, type NodeId } from "../core/index.ts";
import type { LogEntry, NodeWrite, Snapshot } from "../paxos/index.ts";
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
  private readonly cells = new Map<CellKey, PendingChange[]>();

  /** Cells with pending changes. */
  get size(): number {
    return this.cells.size;
  }

  has(cellKey: CellKey): boolean {
    return this.cells.has(cellKey);
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

  /** Every cell's pending changes, in the order they must be applied. */
  entries(): IterableIterator<[CellKey, readonly PendingChange[]]> {
    return this.cells.entries();
  }

  clear(): void {
    this.cells.clear();
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
    let changes = this.cells.get(cellKey);
    if (changes === undefined) {
      changes = [];
      this.cells.set(cellKey, changes);
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
