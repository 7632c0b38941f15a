/**
 * What the journal holds and lmdb does not yet: the changes of every batch since the last
 * checkpoint, kept per cell in the order they were written, with consecutive writes to the same
 * node folded into one. A checkpoint applies each cell's changes to lmdb in order.
 *
 * Folding write b into an earlier write a of the same node (incarnation) gives a write with the
 * same effect as a then b on any stored state:
 *   promised        the larger (a stored promise only grows)
 *   snapshot        the one of larger index, b's on a tie (a stored snapshot is replaced by one
 *                   of equal or larger index)
 *   truncateThrough the larger, and a's entries at or below b's truncation are dropped
 *   entries         a's, then b's (b's replace a's of the same slot)
 * Removals, forwarding pointers and writes of another incarnation are kept as they are, in
 * order, so a cell's history replays exactly. overlay.test.ts checks the equivalence against
 * MemoryStorage on random histories.
 */
import type { CellKey, NodeId } from "../core/index.ts";
import type { LogEntry, NodeWrite, Snapshot } from "../paxos/index.ts";
import type { ForwardingPointer, StorageBatch } from "./port.ts";

export type PendingChange<C> =
  | { readonly kind: "write"; readonly write: FoldedWrite<C> }
  | { readonly kind: "remove"; readonly incarnation: number }
  | { readonly kind: "pointer"; readonly pointer: ForwardingPointer };

/** A node write that may stand for several (see the file comment). */
export interface FoldedWrite<C> {
  readonly cellKey: CellKey;
  readonly node: NodeId;
  promised: number | null;
  snapshot: Snapshot | null;
  truncateThrough: number;
  readonly entries: Map<number, LogEntry<C>>;
}

export class Overlay<C> {
  private readonly cells = new Map<CellKey, PendingChange<C>[]>();

  /** Cells with pending changes. */
  get size(): number {
    return this.cells.size;
  }

  has(cellKey: CellKey): boolean {
    return this.cells.has(cellKey);
  }

  /** Adds a batch in the order StorageBatch defines: its writes, then removals, then pointers. */
  add(batch: StorageBatch<C>): void {
    for (const write of batch.writes) this.addWrite(write);
    for (const { cellKey, incarnation } of batch.removed)
      this.changesOf(cellKey).push({ kind: "remove", incarnation });
    for (const pointer of batch.pointers) this.changesOf(pointer.cellKey).push({ kind: "pointer", pointer });
  }

  /** Every cell's pending changes, in the order they must be applied. */
  entries(): IterableIterator<[CellKey, readonly PendingChange<C>[]]> {
    return this.cells.entries();
  }

  clear(): void {
    this.cells.clear();
  }

  private addWrite(write: NodeWrite<C>): void {
    const changes = this.changesOf(write.cellKey);
    const last = changes[changes.length - 1];
    if (
      last?.kind === "write" &&
      last.write.node.incarnation === write.node.incarnation &&
      last.write.node.serverId === write.node.serverId
    ) {
      foldInto(last.write, write);
      return;
    }
    const folded: FoldedWrite<C> = {
      cellKey: write.cellKey,
      node: write.node,
      promised: null,
      snapshot: null,
      truncateThrough: 0,
      entries: new Map(),
    };
    foldInto(folded, write);
    changes.push({ kind: "write", write: folded });
  }

  private changesOf(cellKey: CellKey): PendingChange<C>[] {
    let changes = this.cells.get(cellKey);
    if (changes === undefined) {
      changes = [];
      this.cells.set(cellKey, changes);
    }
    return changes;
  }
}

function foldInto<C>(into: FoldedWrite<C>, write: NodeWrite<C>): void {
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
  for (const entry of write.entries) into.entries.set(entry.slot, entry);
}

/** The folded write as a plain node write, entries in slot order. */
export function unfold<C>(folded: FoldedWrite<C>): NodeWrite<C> {
  const entries = [...folded.entries.values()].sort((a, b) => a.slot - b.slot);
  return {
    cellKey: folded.cellKey,
    node: folded.node,
    promised: folded.promised,
    snapshot: folded.snapshot,
    truncateThrough: folded.truncateThrough,
    entries,
  };
}
