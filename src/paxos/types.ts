/** Log values, membership and the messages of the replication protocol (docs/PROTOCOL.md). */
import type { CellKey, NodeId, ServerId } from "../core/index.ts";
import type { Ballot } from "./ballot.ts";

/** A membership change: add a node on a server, remove a node, or both at once (a replacement). */
export interface MembershipChange {
  readonly add: ServerId | null;
  readonly remove: NodeId | null;
}

export type LogValue<C> =
  | { readonly kind: "noop"; readonly stampMs: number }
  | {
      readonly kind: "commands";
      /** The proposer's clock reading when it proposed the batch. */
      readonly stampMs: number;
      /**
       * The ballot it proposed under: stamps are comparable only within one ballot (one clock,
       * one leadership), so the cell measures elapsed time only between entries of one ballot.
       */
      readonly stampBallot: number;
      readonly commands: readonly C[];
    }
  | { readonly kind: "reconfigure"; readonly stampMs: number; readonly change: MembershipChange };

/** One membership of the cell, governing the slots from `fromSlot` until the next one. */
export interface Configuration {
  readonly fromSlot: number;
  readonly epoch: number;
  readonly members: readonly NodeId[];
}

/** The replicated membership state, part of every snapshot. */
export interface MembershipState {
  /** Bumped by every applied membership change. */
  readonly epoch: number;
  /** Next incarnation to mint for an added node; incarnations are unique within a cell. */
  readonly nextIncarnation: number;
  /** Governing configurations, oldest first; the first covers every slot before the second. */
  readonly configurations: readonly Configuration[];
}

export type MembershipResult =
  | {
      readonly status: "applied";
      readonly epoch: number;
      readonly added: NodeId | null;
      readonly fromSlot: number;
    }
  | { readonly status: "rejected"; readonly reason: string };

/** A snapshot of a node: the state machine's bytes plus membership, at `index`. */
export interface Snapshot {
  readonly index: number;
  readonly membership: MembershipState;
  readonly state: Uint8Array;
}

export interface LogEntry<C> {
  readonly slot: number;
  /** Ballot the value was accepted with, or BALLOT_CHOSEN for a value known to be chosen. */
  readonly ballot: Ballot;
  readonly value: LogValue<C>;
}

interface Envelope {
  readonly cellKey: CellKey;
  readonly from: NodeId;
  readonly to: NodeId;
  /** The sender's membership epoch. */
  readonly epoch: number;
}

export type PaxosMessage<C> =
  | (Envelope & { readonly type: "prepare"; readonly ballot: Ballot; readonly fromSlot: number })
  | (Envelope & {
      readonly type: "promise";
      readonly ballot: Ballot;
      /** The entries cover slots (base, coveredThrough]. */
      readonly base: number;
      readonly coveredThrough: number;
      readonly applied: number;
      readonly entries: readonly LogEntry<C>[];
    })
  | (Envelope & {
      readonly type: "accept";
      readonly ballot: Ballot;
      readonly slot: number;
      readonly value: LogValue<C>;
      readonly commit: number;
    })
  | (Envelope & {
      readonly type: "accepted";
      readonly ballot: Ballot;
      readonly slot: number;
      readonly applied: number;
    })
  | (Envelope & {
      readonly type: "nack";
      /** The ballot the sender was refused for, and the higher one the receiver had promised. */
      readonly ballot: Ballot;
      readonly promised: Ballot;
      readonly reason: "ballot" | "epoch";
      readonly applied: number;
    })
  | (Envelope & {
      readonly type: "heartbeat";
      readonly ballot: Ballot;
      readonly commit: number;
      readonly round: number;
    })
  | (Envelope & {
      readonly type: "heartbeat_ack";
      readonly ballot: Ballot;
      readonly round: number;
      readonly applied: number;
      readonly ok: boolean;
    })
  | (Envelope & {
      readonly type: "catchup_request";
      readonly fromSlot: number;
      readonly needSnapshot: boolean;
    })
  | (Envelope & {
      readonly type: "catchup";
      /** Chosen values for consecutive slots, or a snapshot when the log no longer reaches back. */
      readonly entries: readonly LogEntry<C>[];
      readonly snapshot: Snapshot | null;
      readonly applied: number;
    })
  /** Leader transfer: the receiver starts an election at once. */
  | (Envelope & { readonly type: "campaign"; readonly ballot: Ballot });

export type PaxosMessageType = PaxosMessage<unknown>["type"];
