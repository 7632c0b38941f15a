/**
 * In-memory storage: every batch is durable as soon as it is written. For unit tests and tools;
 * the simulator's disk (src/sim) adds latency, crashes and torn writes on top of the same model.
 */
import type { CellKey } from "../core/index.ts";
import type { LogEntry, NodeWrite, PersistedNode } from "../paxos/index.ts";
import type { ForwardingPointer, LoadResult, StorageBatch, StoragePort } from "./port.ts";

interface StoredNode<C> {
  node: PersistedNode<C>["node"];
  promised: number;
  snapshot: PersistedNode<C>["snapshot"] | null;
  entries: Map<number, LogEntry<C>>;
}

export class MemoryStorage<C> implements StoragePort<C> {
  private readonly nodes = new Map<CellKey, StoredNode<C>>();
  private readonly storedPointers = new Map<CellKey, ForwardingPointer>();
  batches = 0;

  load(cellKey: CellKey): LoadResult<C> {
    const stored = this.nodes.get(cellKey);
    if (stored === undefined || stored.snapshot === null) return { status: "absent" };
    const snapshotIndex = stored.snapshot.index;
    return {
      status: "found",
      node: {
        node: stored.node,
        promised: stored.promised,
        snapshot: stored.snapshot,
        // Entries at or below the snapshot are covered by it: a node never reads them (as lmdb).
        entries: [...stored.entries.values()]
          .filter((entry) => entry.slot > snapshotIndex)
          .sort((a, b) => a.slot - b.slot),
      },
    };
  }

  hostedCells(): CellKey[] {
    return [...this.nodes.keys()];
  }

  pointers(nowMs = Number.NEGATIVE_INFINITY): ForwardingPointer[] {
    const live: ForwardingPointer[] = [];
    for (const [cellKey, pointer] of this.storedPointers) {
      if (pointer.expiresAtMs > nowMs) live.push(pointer);
      else this.storedPointers.delete(cellKey);
    }
    return live;
  }

  write(batch: StorageBatch<C>, done: (error: Error | null) => void): void {
    this.applyBatch(batch);
    done(null);
  }

  /** Apply a batch to the stored state (also used by the simulator's disk). */
  applyBatch(batch: StorageBatch<C>): void {
    this.batches += 1;
    for (const write of batch.writes) this.applyWrite(write);
    for (const { cellKey, incarnation } of batch.removed) {
      if (this.nodes.get(cellKey)?.node.incarnation === incarnation) this.nodes.delete(cellKey);
    }
    for (const pointer of batch.pointers) this.storedPointers.set(pointer.cellKey, pointer);
  }

  applyWrite(write: NodeWrite<C>): void {
    let stored = this.nodes.get(write.cellKey);
    if (stored !== undefined && stored.node.incarnation > write.node.incarnation) return; // an older incarnation
    if (stored === undefined || stored.node.incarnation !== write.node.incarnation) {
      stored = { node: write.node, promised: 0, snapshot: null, entries: new Map() };
      this.nodes.set(write.cellKey, stored);
      this.storedPointers.delete(write.cellKey);
    }
    if (write.promised !== null && write.promised > stored.promised) stored.promised = write.promised;
    if (
      write.snapshot !== null &&
      (stored.snapshot === null || write.snapshot.index >= stored.snapshot.index)
    ) {
      stored.snapshot = write.snapshot;
    }
    if (write.truncateThrough > 0) {
      for (const slot of [...stored.entries.keys()])
        if (slot <= write.truncateThrough) stored.entries.delete(slot);
    }
    for (const entry of write.entries) stored.entries.set(entry.slot, entry);
  }
}
