/**
 * What replicas produce in one server turn (DESIGN.md section 3). The server owns one Output per
 * turn for ALL the cells it touched: it writes `writes` as one storage batch with one fsync, then
 * sends `sendAfterPersist`, then answers `results`, `reads` and `dropped`, then calls `reset()`.
 * `sendNow` may leave before the batch is durable: nothing in it depends on unpersisted state.
 */
import type { CellKey, NodeId } from "../core/index.ts";
import type { Ballot } from "./ballot.ts";
import type { LogEntry, MembershipResult, PaxosMessage, Snapshot } from "./types.ts";

/** Durable changes of one node in this turn. */
export interface NodeWrite<C> {
  readonly cellKey: CellKey;
  readonly node: NodeId;
  /** New promised ballot, or null if unchanged. */
  promised: Ballot | null;
  /** Accepted or chosen entries to store (a later one for the same slot replaces an earlier one). */
  readonly entries: LogEntry<C>[];
  /** A new snapshot, or null. */
  snapshot: Snapshot | null;
  /** Delete stored entries with slot <= this (0: none). Only ever covered by a durable snapshot. */
  truncateThrough: number;
}

export type ProposalOutcome<R> =
  | { readonly kind: "command"; readonly result: R }
  | { readonly kind: "membership"; readonly result: MembershipResult };

export interface ProposalResult<R> {
  readonly cellKey: CellKey;
  readonly tag: number;
  readonly index: number;
  readonly outcome: ProposalOutcome<R>;
}

export type DropReason = "not_leader" | "stalled" | "retired" | "lost_leadership";

export interface DroppedRequest {
  readonly cellKey: CellKey;
  readonly tag: number;
  readonly reason: DropReason;
  /** Where the client should try next, if known. */
  readonly leader: NodeId | null;
}

export type ReplicaEvent =
  | {
      readonly type: "stalled";
      readonly cellKey: CellKey;
      readonly node: NodeId;
      readonly index: number;
      readonly reason: string;
    }
  | {
      readonly type: "retired";
      readonly cellKey: CellKey;
      readonly node: NodeId;
      readonly epoch: number;
      readonly members: readonly NodeId[];
    }
  | { readonly type: "leader"; readonly cellKey: CellKey; readonly node: NodeId; readonly ballot: Ballot }
  | {
      readonly type: "membership";
      readonly cellKey: CellKey;
      readonly node: NodeId;
      readonly epoch: number;
      readonly members: readonly NodeId[];
    };

export class Output<C, R> {
  readonly sendNow: PaxosMessage<C>[] = [];
  readonly sendAfterPersist: PaxosMessage<C>[] = [];
  readonly writes: NodeWrite<C>[] = [];
  readonly results: ProposalResult<R>[] = [];
  /** Linearizable reads whose read index is confirmed and applied: evaluate them now. */
  readonly reads: { readonly cellKey: CellKey; readonly tag: number }[] = [];
  readonly dropped: DroppedRequest[] = [];
  readonly events: ReplicaEvent[] = [];
  /** The write of each node touched in this turn (so replicas hold no per-turn state). */
  private readonly writeByNode = new Map<object, NodeWrite<C>>();

  /** The node's write for this turn, created on first use. */
  writeOf(owner: object, create: () => NodeWrite<C>): NodeWrite<C> {
    let write = this.writeByNode.get(owner);
    if (write === undefined) {
      write = create();
      this.writeByNode.set(owner, write);
      this.writes.push(write);
    }
    return write;
  }

  isEmpty(): boolean {
    return (
      this.sendNow.length === 0 &&
      this.sendAfterPersist.length === 0 &&
      this.writes.length === 0 &&
      this.results.length === 0 &&
      this.reads.length === 0 &&
      this.dropped.length === 0 &&
      this.events.length === 0
    );
  }

  reset(): void {
    this.sendNow.length = 0;
    this.sendAfterPersist.length = 0;
    this.writes.length = 0;
    this.results.length = 0;
    this.reads.length = 0;
    this.dropped.length = 0;
    this.events.length = 0;
    this.writeByNode.clear();
  }
}
