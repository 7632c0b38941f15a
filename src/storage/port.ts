/**
 * The storage port: what a server needs from its disk. Reads are synchronous (a node is loaded
 * the first time its cell is touched); writes come as one batch per server turn and are
 * acknowledged once durable (one fsync). At most one batch is in flight at a time.
 */
import type { CellKey, NodeId } from "../core/index.ts";
import type { NodeWrite, PersistedNode } from "../paxos/index.ts";

/** A removed node's note of where its cell went. */
export interface ForwardingPointer {
  readonly cellKey: CellKey;
  readonly epoch: number;
  readonly members: readonly NodeId[];
  /** Server clock time after which the pointer may be forgotten. */
  readonly expiresAtMs: number;
}

export interface StorageBatch<C> {
  readonly writes: readonly NodeWrite<C>[];
  /** Nodes removed from their cell: delete every record of that incarnation (applied after writes). */
  readonly removed: readonly { readonly cellKey: CellKey; readonly incarnation: number }[];
  readonly pointers: readonly ForwardingPointer[];
}

export type LoadResult<C> =
  | { readonly status: "found"; readonly node: PersistedNode<C> }
  | { readonly status: "absent" }
  /** A stored record failed its checksum: the node must not act on it. */
  | { readonly status: "corrupt"; readonly detail: string };

export interface StoragePort<C> {
  load(cellKey: CellKey): LoadResult<C>;
  /** Cells with a node stored on this server. */
  hostedCells(): CellKey[];
  /**
   * Forwarding pointers stored on this server that expire after `nowMs` (all of them without
   * it); those that expired by then are deleted, so a server's pointers do not pile up on disk.
   */
  pointers(nowMs?: number): ForwardingPointer[];
  /** Make the batch durable, then call done (with an error if it could not be written). */
  write(batch: StorageBatch<C>, done: (error: Error | null) => void): void;
}
