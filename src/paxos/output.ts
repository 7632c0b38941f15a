/**
 * What replicas produce in one server turn (docs/ARCHITECTURE.md). The server owns one Output per
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
  /**
   * Set on the write that begins a node's stored state: a founding member's first snapshot, or a
   * joining node's. Only such a write may replace a damaged record of its cell; any other write
   * (a snapshot taken to compact the log included) needs the record intact. Checked before the
   * batch is made durable; not stored.
   */
  founding?: true;
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

/**
 * Why a node started a campaign (an election of itself):
 *   no_leader         a request reached it and it knew of no leader other than itself
 *   leader_suspected  a request reached it and the server failure detector suspects its leader's server
 *   takeover          a request reached it with the client's word that the leader is unresponsive
 *                     (the server passes that on only after limits.leaderSilenceMs without a proposer)
 *   after_backoff     requests reached it during its backoff after a failed or preempted campaign
 *                     of its own, and the backoff ran out
 *   transfer          its leader handed it leadership
 *   caught_up         it led, and stepped down to take a peer's snapshot of slots it had not
 *                     applied (a leader elected while behind); it campaigns again at once
 */
export const campaignCauses = Object.freeze([
  "no_leader",
  "leader_suspected",
  "takeover",
  "after_backoff",
  "transfer",
  "caught_up",
] as const);

export type CampaignCause = (typeof campaignCauses)[number];

export type ReplicaEvent =
  | {
      readonly type: "campaign";
      readonly cellKey: CellKey;
      readonly node: NodeId;
      readonly cause: CampaignCause;
    }
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

/** Something that writes at most once per turn: it holds its write only until the turn ends. */
export interface WriteOwner<C> {
  turnWrite: NodeWrite<C> | null;
}

export class Output<C, R> {
  readonly sendNow: PaxosMessage<C>[] = [];
  readonly sendAfterPersist: PaxosMessage<C>[] = [];
  readonly writes: NodeWrite<C>[] = [];
  readonly results: ProposalResult<R>[] = [];
  /** Linearizable reads whose read index is confirmed and applied: evaluate them now. */
  readonly reads: { readonly cellKey: CellKey; readonly tag: number }[] = [];
  readonly dropped: DroppedRequest[] = [];
  readonly events: ReplicaEvent[] = [];
  /** Nodes holding a write of this turn; reset() takes it back so nothing outlives the turn. */
  private readonly writers: WriteOwner<C>[] = [];

  /** Makes `write` the owner's write for this turn (it has none yet); returns it. */
  adopt(owner: WriteOwner<C>, write: NodeWrite<C>): NodeWrite<C> {
    owner.turnWrite = write;
    this.writers.push(owner);
    this.writes.push(write);
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
    for (const owner of this.writers) owner.turnWrite = null;
    this.writers.length = 0;
  }
}
