/**
 * The Multi-Paxos replica of one node of one cell. PURE: it takes messages, ticks and proposals
 * and writes what to persist, send and answer into an Output; it never does I/O, never reads a
 * clock (time comes in as `nowMs`) and never awaits. docs/PROTOCOL.md describes the protocol.
 *
 * Safety rests on per-slot Paxos with the acceptor set of slot s fixed by the committed log
 * prefix (configurationFor(s)): a proposer writes into slot s only after a majority of that
 * slot's configuration promised its ballot and reported what they accepted at s.
 */
import {
  assert,
  assertNever,
  type CellKey,
  formatNodeId,
  InvariantError,
  limits,
  type NodeId,
  nodeIdEquals,
  type Prng,
  type ServerId,
} from "../core/index.ts";
import {
  BALLOT_CHOSEN,
  BALLOT_NONE,
  type Ballot,
  ballotIncarnation,
  ballotRound,
  makeBallot,
  ROUND_MAX,
} from "./ballot.ts";
import { AcceptFanout } from "./fanout.ts";
import { InflightSlots } from "./inflight.ts";
import {
  applyMembershipChange,
  configurationFor,
  latestConfiguration,
  type MembershipInterner,
  majority,
  memberByIncarnation,
  memberIndex,
  pruneMembership,
} from "./membership.ts";
import type { CampaignCause, DropReason, NodeWrite, Output } from "./output.ts";
import { SlotLog } from "./slot-log.ts";
import type { StateMachine } from "./state-machine.ts";
import type {
  Configuration,
  LogEntry,
  LogValue,
  MembershipChange,
  MembershipState,
  PaxosMessage,
  Snapshot,
} from "./types.ts";

/**
 * Deliberately wrong behaviours, switched on only by tests that prove the checkers catch them.
 * Production code never sets any of these.
 */
export interface PlantedBugs {
  /** Acceptors accept proposals with a ballot lower than the one they promised. */
  readonly acceptLowerBallot?: boolean;
  /** Leaders answer linearizable reads from local state without confirming leadership. */
  readonly readWithoutReadIndex?: boolean;
  /** Membership changes govern the very next slot instead of slot i + pipelineDepth. */
  readonly membershipWithoutDelay?: boolean;
  /** A learner (a node whose stored state was lost) votes again once it has caught up, forgetting its promises. */
  readonly damagedNodeVotes?: boolean;
  /** Followers take a reported commit index for every entry they hold, whatever ballot proposed it. */
  readonly commitAnyBallot?: boolean;
}

/** Observes protocol decisions; the simulator's checkers use it. */
export interface ReplicaObserver {
  chosen(cellKey: CellKey, slot: number, value: LogValue<unknown>, by: NodeId): void;
  applied(cellKey: CellKey, node: NodeId, slot: number, value: LogValue<unknown>): void;
}

/** Shared by every replica of one server. */
export interface ReplicaEnvironment {
  readonly random: Prng;
  /** The server-level failure detector's opinion of a server. */
  isServerAlive(serverId: ServerId): boolean;
  readonly observer: ReplicaObserver | null;
  readonly bugs: PlantedBugs | null;
  /** Shares equal membership states between this server's nodes. */
  readonly memberships: MembershipInterner;
  /**
   * Followers beyond a majority sent each accept at once (default limits.acceptSpareFollowers).
   * limits.membersMax sends every accept to every follower at once; the exhaustive explorer's
   * scenarios of the protocol's core use that, and one scenario explores the deferral itself.
   */
  readonly acceptSpareFollowers?: number;
  /**
   * True: a request that arrives while a slot is in flight takes the next slot at once (within
   * the pipeline depth), as a full batch does. By default it waits for the slot in flight. The
   * explorer's scenarios use it to put several slots in flight with single writes: the pipeline
   * works the same whatever its slots hold.
   */
  readonly pipelineSingleRequests?: boolean;
}

/** What a node loaded from storage holds. */
export interface PersistedNode<C> {
  readonly node: NodeId;
  readonly promised: Ballot;
  readonly snapshot: Snapshot;
  readonly entries: readonly LogEntry<C>[];
}

export type RequestOutcome =
  | { readonly status: "queued" }
  | { readonly status: "redirect"; readonly leader: NodeId | null }
  | { readonly status: "overloaded" }
  | { readonly status: "stalled"; readonly reason: string }
  | { readonly status: "retired" };

const queued: RequestOutcome = Object.freeze({ status: "queued" });

export interface ReplicaStatus {
  readonly cellKey: CellKey;
  readonly node: NodeId;
  readonly role: "follower" | "candidate" | "leader" | "retired" | "joining" | "learner";
  readonly leader: NodeId | null;
  readonly epoch: number;
  readonly members: readonly NodeId[];
  readonly promised: Ballot;
  readonly applied: number;
  readonly committed: number;
  readonly stalled: string | null;
  readonly quiet: boolean;
}

const enum Role {
  Follower = 0,
  Candidate = 1,
  Leader = 2,
}

type Pending<C> =
  | { readonly kind: "command"; readonly command: C; readonly tag: number }
  | { readonly kind: "change"; readonly change: MembershipChange; readonly tag: number }
  | { readonly kind: "read"; readonly tag: number };

interface PromiseReport<C> {
  readonly base: number;
  readonly coveredThrough: number;
  readonly entries: Map<number, LogEntry<C>> | null;
}

interface Inflight<C> {
  readonly slot: number;
  readonly value: LogValue<C>;
  readonly tags: number[] | null;
  readonly configuration: Configuration;
  /** Bit i set: configuration.members[i] accepted. */
  votes: number;
  /** Bit i set: the accept went to configuration.members[i] at once, not deferred. */
  readonly sentAtOnce: number;
  sentAtMs: number;
  /** When to send the accept again to members that have not answered. */
  retransmitAtMs: number;
  /** How long the last copy is waited for: doubled with each copy. */
  waitMs: number;
  retransmits: number;
}

interface ReadWaiter {
  readonly tag: number;
  readonly index: number;
  readonly round: number;
}

/** Proposer state: a candidate running phase 1, or an established leader. */
interface ProposerState<C> {
  readonly ballot: Ballot;
  established: boolean;
  readonly reports: Map<number, PromiseReport<C>>;
  /** Highest slot any promise reported an entry for. */
  maxReportedSlot: number;
  /** Last time prepares went out, per incarnation, and how often. */
  readonly prepareSentMs: Map<number, number>;
  prepareRetransmits: number;
  nextSlot: number;
  readonly inflight: InflightSlots<Inflight<C>>;
  /** Propose no-ops through this slot so a membership change activates in an idle cell. */
  padThrough: number;
  /** The next slot's configuration has not promised this ballot yet. */
  blockedOnPrepare: boolean;
  /** A configuration a majority of which promised this ballot for every slot from here on. */
  preparedConfiguration: Configuration | null;
  /**
   * Nodes removed by a membership change, told the commit index by heartbeats until they have
   * applied the last slot they were members for (then they retire and leave a forwarding pointer,
   * and are forgotten here). At most membersMax: past it the one told longest ago is forgotten.
   */
  readonly retiring: { readonly node: NodeId; readonly lastSlot: number }[];
  /** Nodes were just removed: send a heartbeat round (accepts do not reach them). */
  retiringNoticeDue: boolean;
  /** Heartbeat rounds confirm leadership (reads) and carry the commit index to followers. */
  round: number;
  roundSentMs: number;
  roundRetransmits: number;
  /**
   * Smoothed time from an accept to its majority (0 until measured), from slots that were not
   * retransmitted. Retransmission waits a few of these, so a loaded colony, whose answers are
   * slow but not lost, is not flooded with copies of messages already on their way.
   */
  roundTripMs: number;
  /** Highest round a majority acknowledged. */
  confirmedRound: number;
  /** incarnation -> highest round acknowledged with ok. */
  readonly acks: Map<number, number>;
  /** incarnation -> highest applied index reported. */
  readonly followerApplied: Map<number, number>;
  /**
   * incarnation -> highest commit index an accept or heartbeat of this ballot carried to it since
   * the last commit notices (null: none; a quiet leader keeps no map).
   */
  toldCommit: Map<number, number> | null;
  /** The commit index last announced by a commit notice (notices are not acknowledged). */
  noticedThrough: number;
  readonly reads: ReadWaiter[];
  heartbeatPending: boolean;
  /** When to tell followers the commit index if no accept carries it first (Infinity: no need). */
  commitNoticeAtMs: number;
  /**
   * Who gets each accept at once, and the accepts held for the others: sent at its releaseAtMs,
   * or before anything tells those followers a commit index.
   */
  readonly fanout: AcceptFanout<LogValue<C>>;
}

export interface ReplicaOptions<C, R> {
  readonly cellKey: CellKey;
  readonly node: NodeId;
  readonly machine: StateMachine<C, R>;
  readonly env: ReplicaEnvironment;
}

export class Replica<C, R> {
  readonly cellKey: CellKey;
  readonly node: NodeId;
  private readonly machine: StateMachine<C, R>;
  private readonly env: ReplicaEnvironment;

  private membership: MembershipState;
  private joining: boolean;
  private promised: Ballot = BALLOT_NONE;
  /** Entries above the latest snapshot, by slot. */
  private log: SlotLog<C> | null = null;
  private snapshotIndex = 0;
  /** Every slot up to here is applied and no longer held in memory (>= snapshotIndex). */
  private logFloor = 0;
  private applied = 0;
  /** Slots <= committed are known chosen and their values are in the log (or applied). */
  private committed = 0;
  /** Highest commit index heard, and the ballot of the leader that said so. */
  private commitKnown = 0;
  private commitKnownBallot: Ballot = BALLOT_NONE;
  /** Highest slot known chosen from any source (a peer's snapshot or applied index). */
  private chosenKnown = 0;

  private role: Role = Role.Follower;
  private leaderHint: NodeId | null = null;
  private proposer: ProposerState<C> | null = null;
  private pending: Pending<C>[] | null = null;
  private highestRoundSeen = 0;
  private backoffMs = 0;
  private backoffUntilMs = 0;
  private catchUpFrom: NodeId | null = null;
  private catchUpSentMs = 0;
  private catchUpAttempts = 0;
  private stalledReason: string | null = null;
  private retired = false;
  /**
   * A node whose stored state was lost (a record failed its checksum): it may have promised or
   * accepted things it no longer knows, so it never votes again under this incarnation. It learns
   * chosen values from its peers by catch-up and persists nothing; the control plane replaces it.
   */
  private learner = false;

  /** This node's write of the current turn (owned by the Output; null between turns). */
  turnWrite: NodeWrite<C> | null = null;

  /** When this replica next needs tick(); Infinity when quiet. */
  wakeAtMs = Number.POSITIVE_INFINITY;

  private constructor(options: ReplicaOptions<C, R>, membership: MembershipState, joining: boolean) {
    this.cellKey = options.cellKey;
    this.node = options.node;
    this.machine = options.machine;
    this.env = options.env;
    this.membership = options.env.memberships.intern(membership);
    this.joining = joining;
  }

  /** A founding member of a new cell. Persists its initial snapshot. */
  static create<C, R>(
    options: ReplicaOptions<C, R>,
    membership: MembershipState,
    out: Output<C, R>,
  ): Replica<C, R> {
    const replica = new Replica(options, membership, false);
    assert(
      memberIndex(latestConfiguration(membership), options.node) >= 0,
      () => `${formatNodeId(options.node)} is not a member of the cell it is created for`,
    );
    const write = replica.dirty(out);
    write.snapshot = { index: 0, membership, state: options.machine.snapshot() };
    write.founding = true;
    return replica;
  }

  /** A node added by a membership change: it knows nothing and catches up from its peers. */
  static join<C, R>(options: ReplicaOptions<C, R>): Replica<C, R> {
    return new Replica(options, { epoch: 0, nextIncarnation: 0, configurations: [] }, true);
  }

  /**
   * A node whose stored state failed its checksum, rebuilt as a non-voting learner under its old
   * identity: it catches up chosen values from its peers but never promises, accepts or
   * acknowledges, proposes or campaigns, and persists nothing (PROTOCOL.md 8).
   */
  static learn<C, R>(options: ReplicaOptions<C, R>): Replica<C, R> {
    const replica = new Replica(options, { epoch: 0, nextIncarnation: 0, configurations: [] }, true);
    replica.learner = true;
    return replica;
  }

  get isLearner(): boolean {
    return this.learner;
  }

  /** A node reloaded from storage after a restart or eviction. */
  static restore<C, R>(options: ReplicaOptions<C, R>, persisted: PersistedNode<C>): Replica<C, R> {
    const snapshot = persisted.snapshot;
    const joining = snapshot.membership.configurations.length === 0;
    const replica = new Replica(options, snapshot.membership, joining);
    if (!joining) options.machine.restore(snapshot.state);
    replica.snapshotIndex = snapshot.index;
    replica.logFloor = snapshot.index;
    replica.applied = snapshot.index;
    replica.committed = snapshot.index;
    let promised = persisted.promised;
    for (const entry of persisted.entries) {
      if (entry.slot <= snapshot.index) continue;
      replica.logMap().set(entry.slot, entry);
      // A torn write may have stored an accept without the promise that preceded it.
      if (entry.ballot !== BALLOT_CHOSEN && entry.ballot > promised) promised = entry.ballot;
    }
    replica.promised = promised;
    replica.highestRoundSeen = ballotRound(promised);
    return replica;
  }

  // ------------------------------------------------------------------ inputs

  /** A client write (or any command) for this cell. */
  propose(
    command: C,
    tag: number,
    nowMs: number,
    out: Output<C, R>,
    leaderUnresponsive = false,
  ): RequestOutcome {
    return this.request({ kind: "command", command, tag }, nowMs, out, leaderUnresponsive);
  }

  /** A membership change (control plane). One may be pending at a time. */
  proposeChange(change: MembershipChange, tag: number, nowMs: number, out: Output<C, R>): RequestOutcome {
    return this.request({ kind: "change", change, tag }, nowMs, out, false);
  }

  /** A linearizable read: answered through out.reads once the read index is confirmed and applied. */
  read(tag: number, nowMs: number, out: Output<C, R>, leaderUnresponsive = false): RequestOutcome {
    return this.request({ kind: "read", tag }, nowMs, out, leaderUnresponsive);
  }

  /** Ask this leader to hand leadership to `target`. */
  transferLeadership(target: NodeId, out: Output<C, R>): boolean {
    const p = this.proposer;
    if (this.role !== Role.Leader || p === null || nodeIdEquals(target, this.node)) return false;
    if (memberIndex(latestConfiguration(this.membership), target) < 0) return false;
    this.flushDeferred(p, out);
    this.send(out.sendNow, {
      type: "campaign",
      cellKey: this.cellKey,
      from: this.node,
      to: target,
      epoch: this.membership.epoch,
      ballot: p.ballot,
    });
    return true;
  }

  step(message: PaxosMessage<C>, nowMs: number, out: Output<C, R>): void {
    assert(message.cellKey === this.cellKey, "message routed to the wrong cell");
    if (this.learner) {
      this.learnerStep(message, nowMs, out);
      return;
    }
    switch (message.type) {
      case "prepare":
        this.onPrepare(message, out);
        break;
      case "promise":
        this.onPromise(message, nowMs, out);
        break;
      case "accept":
        this.onAccept(message, nowMs, out);
        break;
      case "accepted":
        this.onAccepted(message, nowMs, out);
        break;
      case "nack":
        this.onNack(message, nowMs, out);
        break;
      case "heartbeat":
        this.onHeartbeat(message, nowMs, out);
        break;
      case "heartbeat_ack":
        this.onHeartbeatAck(message, nowMs, out);
        break;
      case "catchup_request":
        this.onCatchUpRequest(message, out);
        break;
      case "catchup":
        this.onCatchUp(message, nowMs, out);
        break;
      case "campaign":
        this.onCampaign(message, nowMs, out);
        break;
      default:
        assertNever(message, "paxos message");
    }
    this.updateWake(nowMs);
  }

  tick(nowMs: number, out: Output<C, R>): void {
    if (nowMs < this.wakeAtMs) return;
    const p = this.proposer;
    if (p !== null) {
      if (p.established) this.tickLeader(p, nowMs, out);
      else this.tickCandidate(p, nowMs, out);
    } else if (this.pending !== null && this.pending.length > 0 && nowMs >= this.backoffUntilMs) {
      this.campaign(nowMs, out, "after_backoff");
    }
    if (this.catchUpFrom !== null && nowMs - this.catchUpSentMs >= limits.retransmitMs) {
      if (this.catchUpAttempts >= limits.retransmitsMax) this.catchUpFrom = null;
      else this.sendCatchUpRequest(this.catchUpFrom, nowMs, out);
    }
    this.updateWake(nowMs);
  }

  /**
   * A learner answers nothing that counts as a vote. It learns what is committed from accepts and
   * heartbeats and fetches the chosen values by catch-up (which carries only chosen values).
   */
  private learnerStep(message: PaxosMessage<C>, nowMs: number, out: Output<C, R>): void {
    switch (message.type) {
      case "accept":
      case "heartbeat":
        this.noteChosen(message.commit);
        this.requestCatchUpIfNeeded(message.from, nowMs, out);
        break;
      case "catchup":
        this.onCatchUp(message, nowMs, out);
        break;
      case "catchup_request":
        this.onCatchUpRequest(message, out);
        break;
      case "prepare":
        // A new leader is forming: learn from it once it is established; nothing to answer now.
        this.requestCatchUpIfNeeded(message.from, nowMs, out);
        break;
      case "promise":
      case "accepted":
      case "nack":
      case "heartbeat_ack":
      case "campaign":
        break;
      default:
        assertNever(message, "paxos message");
    }
    this.updateWake(nowMs);
  }

  // ------------------------------------------------------------------ queries

  status(): ReplicaStatus {
    const configuration = this.joining ? null : latestConfiguration(this.membership);
    let role: ReplicaStatus["role"];
    if (this.retired) role = "retired";
    else if (this.learner) role = "learner";
    else if (this.joining) role = "joining";
    else if (this.role === Role.Leader) role = "leader";
    else if (this.role === Role.Candidate) role = "candidate";
    else role = "follower";
    return {
      cellKey: this.cellKey,
      node: this.node,
      role,
      leader: this.role === Role.Leader ? this.node : this.leaderHint,
      epoch: this.membership.epoch,
      members: configuration?.members ?? [],
      promised: this.promised,
      applied: this.applied,
      committed: this.committed,
      stalled: this.stalledReason,
      quiet: this.wakeAtMs === Number.POSITIVE_INFINITY,
    };
  }

  /**
   * An independent copy for state-space exploration, over another environment and state machine
   * (restored from this one's snapshot). Log entries, values and membership are immutable and
   * shared; every mutable container is copied.
   */
  clone(env: ReplicaEnvironment, machine: StateMachine<C, R>): Replica<C, R> {
    const copy = new Replica<C, R>(
      { cellKey: this.cellKey, node: this.node, machine, env },
      this.membership,
      this.joining,
    );
    Object.assign(copy, this, { env, machine });
    copy.log = this.log === null ? null : this.log.copy();
    copy.pending = this.pending === null ? null : [...this.pending];
    copy.turnWrite = null;
    const p = this.proposer;
    copy.proposer =
      p === null
        ? null
        : {
            ...p,
            reports: new Map(p.reports),
            prepareSentMs: new Map(p.prepareSentMs),
            inflight: p.inflight.copy((inflight) => ({ ...inflight })),
            acks: new Map(p.acks),
            followerApplied: new Map(p.followerApplied),
            toldCommit: p.toldCommit === null ? null : new Map(p.toldCommit),
            reads: [...p.reads],
            retiring: [...p.retiring],
            fanout: p.fanout.copy(),
          };
    return copy;
  }

  /**
   * A canonical description of every protocol-relevant field, for state-space exploration:
   * two replicas with equal fingerprints behave identically from here on.
   */
  fingerprint(describeValue: (value: LogValue<C>) => string): string {
    const parts: string[] = [
      `r${this.role}`,
      `p${this.promised}`,
      `a${this.applied}`,
      `c${this.committed}`,
      `k${this.commitKnown}/${this.commitKnownBallot}/${this.chosenKnown}/${this.logFloor}`,
      `e${this.membership.epoch}`,
      `h${this.leaderHint === null ? "-" : formatNodeId(this.leaderHint)}`,
      `s${this.stalledReason === null ? "" : "!"}${this.retired ? "R" : ""}${this.joining ? "J" : ""}`,
      `q${this.pendingCount()}`,
      `g${this.highestRoundSeen}`,
    ];
    const log = this.log;
    if (log !== null) {
      for (const slot of log.keys()) {
        const entry = log.get(slot) as LogEntry<C>;
        parts.push(`L${slot}:${entry.ballot}:${describeValue(entry.value)}`);
      }
    }
    const p = this.proposer;
    if (p !== null) {
      parts.push(
        `P${p.ballot}:${p.established ? 1 : 0}:${p.nextSlot}:${p.maxReportedSlot}:${p.round}:${p.confirmedRound}:${p.commitNoticeAtMs === Number.POSITIVE_INFINITY ? 0 : 1}:${p.fanout.describe(formatNodeId)}`,
      );
      for (const incarnation of [...p.reports.keys()].sort((a, b) => a - b)) {
        const report = p.reports.get(incarnation) as PromiseReport<C>;
        const entries = report.entries === null ? [] : [...report.entries.values()];
        parts.push(
          `R${incarnation}:${report.base}:${report.coveredThrough}:${entries
            .map((e) => `${e.slot}/${e.ballot}/${describeValue(e.value)}`)
            .join(",")}`,
        );
      }
      for (const inflight of p.inflight.ascending()) {
        parts.push(`I${inflight.slot}:${inflight.votes}:${describeValue(inflight.value)}`);
      }
      for (const incarnation of [...p.acks.keys()].sort((a, b) => a - b))
        parts.push(`A${incarnation}:${p.acks.get(incarnation)}`);
      const told = p.toldCommit;
      if (told !== null)
        for (const incarnation of [...told.keys()].sort((a, b) => a - b))
          parts.push(`T${incarnation}:${told.get(incarnation)}`);
    }
    return parts.join(" ");
  }

  get appliedIndex(): number {
    return this.applied;
  }

  /** The node has applied entries its latest snapshot does not cover. */
  get appliedPastSnapshot(): boolean {
    return this.applied > this.snapshotIndex;
  }

  /**
   * Takes a snapshot of what the node has applied, to be stored with this turn's writes, before
   * it is evicted from memory. Loaded again, a node starts from its latest snapshot, and learns
   * what was chosen after it only from a leader, which a quiet cell may not have: without this, a
   * cell whose nodes were all evicted would answer eventual reads from as far back as its last
   * periodic snapshot, behind what it had acknowledged and applied.
   */
  snapshotApplied(out: Output<C, R>): void {
    if (this.applied > this.snapshotIndex && !this.retired) this.takeSnapshot(out);
  }

  get epoch(): number {
    return this.membership.epoch;
  }

  get isLeader(): boolean {
    return this.role === Role.Leader && this.proposer !== null && this.proposer.established;
  }

  get isRetired(): boolean {
    return this.retired;
  }

  get membershipState(): MembershipState {
    return this.membership;
  }

  /** The leader this node believes in, if any. */
  get leader(): NodeId | null {
    return this.role === Role.Leader ? this.node : this.leaderHint;
  }

  // ------------------------------------------------------------------ requests

  private request(
    item: Pending<C>,
    nowMs: number,
    out: Output<C, R>,
    leaderUnresponsive: boolean,
  ): RequestOutcome {
    if (this.retired) return { status: "retired" };
    if (this.stalledReason !== null) return { status: "stalled", reason: this.stalledReason };
    if (this.joining || this.learner) return { status: "redirect", leader: this.leaderHint };
    const p = this.proposer;
    if (p?.established) {
      if (item.kind === "read" && !(this.env.bugs?.readWithoutReadIndex ?? false)) {
        if (p.reads.length >= limits.pendingReadsPerCellMax) return { status: "overloaded" };
        this.enqueueRead(p, item.tag, nowMs, out);
      } else if (item.kind === "read") {
        out.reads.push({ cellKey: this.cellKey, tag: item.tag });
      } else {
        if (this.pendingCount() >= limits.pendingRequestsPerCellMax) return { status: "overloaded" };
        this.enqueue(item);
        this.fillPipeline(p, nowMs, out);
      }
      this.updateWake(nowMs);
      return queued;
    }
    // Why this node would campaign for the request (it has no proposer): no other leader known,
    // the leader's server suspected, or the client's word that the live leader is unresponsive.
    let cause: CampaignCause = "no_leader";
    if (p === null) {
      const hint = this.leaderHint;
      if (hint !== null && !nodeIdEquals(hint, this.node)) {
        if (!this.env.isServerAlive(hint.serverId)) cause = "leader_suspected";
        else if (leaderUnresponsive) cause = "takeover";
        else return { status: "redirect", leader: hint };
      }
    }
    if (this.pendingCount() >= limits.pendingRequestsPerCellMax) return { status: "overloaded" };
    this.enqueue(item);
    if (p === null && nowMs >= this.backoffUntilMs) this.campaign(nowMs, out, cause);
    this.updateWake(nowMs);
    return queued;
  }

  private enqueue(item: Pending<C>): void {
    // A literal array of one: an empty array would grow a larger store on the first push.
    if (this.pending === null) this.pending = [item];
    else this.pending.push(item);
  }

  private pendingCount(): number {
    return this.pending === null ? 0 : this.pending.length;
  }

  private dropPending(reason: DropReason, out: Output<C, R>): void {
    const leader = this.leaderHint;
    const pending = this.pending;
    if (pending !== null) {
      for (const item of pending) out.dropped.push({ cellKey: this.cellKey, tag: item.tag, reason, leader });
      this.pending = null;
    }
    const p = this.proposer;
    if (p !== null) {
      for (const read of p.reads) out.dropped.push({ cellKey: this.cellKey, tag: read.tag, reason, leader });
      p.reads.length = 0;
      for (const inflight of p.inflight.ascending()) this.dropInflight(inflight, reason, leader, out);
    }
  }

  // ------------------------------------------------------------------ election (phase 1)

  private campaign(nowMs: number, out: Output<C, R>, cause: CampaignCause): void {
    if (this.joining || this.learner || this.retired || this.stalledReason !== null) return;
    const latest = latestConfiguration(this.membership);
    if (memberIndex(latest, this.node) < 0 && cause !== "transfer") return;
    const round = Math.max(this.highestRoundSeen, ballotRound(this.promised)) + 1;
    // Rounds run out only where a peer sent a ballot no election made (a bug, or a peer of
    // another build): this node cannot outbid it, and stays a follower rather than throw.
    if (round > ROUND_MAX) return;
    out.events.push({ type: "campaign", cellKey: this.cellKey, node: this.node, cause });
    this.highestRoundSeen = round;
    const ballot = makeBallot(round, this.node.incarnation);
    this.role = Role.Candidate;
    this.proposer = {
      ballot,
      established: false,
      reports: new Map(),
      maxReportedSlot: 0,
      prepareSentMs: new Map(),
      prepareRetransmits: 0,
      nextSlot: this.applied + 1,
      inflight: new InflightSlots(limits.pipelineDepth + 1),
      padThrough: 0,
      blockedOnPrepare: false,
      preparedConfiguration: null,
      retiring: [],
      retiringNoticeDue: false,
      round: 0,
      roundSentMs: 0,
      roundRetransmits: 0,
      roundTripMs: 0,
      confirmedRound: 0,
      acks: new Map(),
      followerApplied: new Map(),
      toldCommit: null,
      noticedThrough: 0,
      reads: [],
      heartbeatPending: false,
      commitNoticeAtMs: Number.POSITIVE_INFINITY,
      fanout: new AcceptFanout(this.env.acceptSpareFollowers ?? limits.acceptSpareFollowers),
    };
    // The ballot is durable before anything is sent under it: a candidate that won on its peers'
    // promises alone and crashed before its own promise was stored would otherwise come back
    // with the round it had, mint the same ballot again, and could propose another value under
    // it at a slot where its first run's value was accepted (PROTOCOL.md section 3).
    if (ballot > this.promised) {
      this.promised = ballot;
      this.dirty(out).promised = ballot;
    }
    this.sendPrepares(this.proposer, this.applied + 1, nowMs, out);
  }

  /** Ask every member of the configurations governing slots >= fromSlot that lacks coverage. */
  private sendPrepares(p: ProposerState<C>, fromSlot: number, nowMs: number, out: Output<C, R>): void {
    for (const configuration of this.membership.configurations) {
      for (const member of configuration.members) {
        const report = p.reports.get(member.incarnation);
        if (report !== undefined && report.base < fromSlot && fromSlot <= report.coveredThrough) continue;
        const last = p.prepareSentMs.get(member.incarnation);
        if (last !== undefined && nowMs - last < limits.retransmitMs) continue;
        p.prepareSentMs.set(member.incarnation, nowMs);
        // After the batch that stores the ballot (campaign), and so after every earlier write.
        this.send(out.sendAfterPersist, {
          type: "prepare",
          cellKey: this.cellKey,
          from: this.node,
          to: member,
          epoch: this.membership.epoch,
          ballot: p.ballot,
          fromSlot,
        });
      }
    }
  }

  private onPrepare(m: PaxosMessage<C> & { type: "prepare" }, out: Output<C, R>): void {
    if (this.retired) return;
    this.noteRound(m.ballot);
    if (m.epoch < this.membership.epoch) {
      this.send(out.sendNow, this.nack(m.from, m.ballot, "epoch"));
      return;
    }
    if (m.ballot < this.promised) {
      this.send(out.sendNow, this.nack(m.from, m.ballot, "ballot"));
      return;
    }
    if (m.ballot > this.promised) {
      this.promised = m.ballot;
      this.dirty(out).promised = m.ballot;
      if (!nodeIdEquals(m.from, this.node)) this.yieldTo(m.from, m.ballot, out);
    }
    // Report what this node accepted at slots >= fromSlot, bounded. Slots this node has already
    // folded into a snapshot are chosen: a proposer behind `base` must catch up first.
    const base = Math.max(m.fromSlot - 1, this.logFloor);
    const entries: LogEntry<C>[] = [];
    let coveredThrough = Number.POSITIVE_INFINITY;
    const log = this.log;
    if (log !== null && log.size > 0) {
      const slots = log.keys().filter((s) => s > base);
      for (const slot of slots) {
        if (entries.length >= limits.catchUpSegmentEntriesMax) {
          coveredThrough = slot - 1;
          break;
        }
        const entry = log.get(slot) as LogEntry<C>;
        entries.push(slot <= this.committed ? { slot, ballot: BALLOT_CHOSEN, value: entry.value } : entry);
      }
    }
    this.send(out.sendAfterPersist, {
      type: "promise",
      cellKey: this.cellKey,
      from: this.node,
      to: m.from,
      epoch: this.membership.epoch,
      ballot: m.ballot,
      base,
      coveredThrough,
      applied: this.applied,
      entries,
    });
  }

  private onPromise(m: PaxosMessage<C> & { type: "promise" }, nowMs: number, out: Output<C, R>): void {
    const p = this.proposer;
    if (p === null || m.ballot !== p.ballot) return;
    let entries: Map<number, LogEntry<C>> | null = null;
    for (const entry of m.entries) {
      if (entries === null) entries = new Map();
      entries.set(entry.slot, entry);
      if (entry.slot > p.maxReportedSlot) p.maxReportedSlot = entry.slot;
    }
    // Only members' reports are ever consulted; others are not kept (each may hold a log's worth).
    if (p.reports.has(m.from.incarnation) || this.tracked(p, m.from))
      p.reports.set(m.from.incarnation, { base: m.base, coveredThrough: m.coveredThrough, entries });
    if (m.base > this.committed && !nodeIdEquals(m.from, this.node)) {
      // The promiser has chosen slots folded into a snapshot that we lack: catch up from it.
      this.noteChosen(m.base);
      if (this.catchUpFrom === null) this.sendCatchUpRequest(m.from, nowMs, out);
    }
    if (!p.established) this.tryEstablish(p, nowMs, out);
    else this.fillPipeline(p, nowMs, out);
  }

  private tryEstablish(p: ProposerState<C>, nowMs: number, out: Output<C, R>): void {
    const slot = this.applied + 1;
    if (!this.prepared(p, configurationFor(this.membership, slot), slot)) return;
    p.established = true;
    p.nextSlot = this.applied + 1;
    this.role = Role.Leader;
    this.leaderHint = this.node;
    this.backoffMs = 0;
    out.events.push({ type: "leader", cellKey: this.cellKey, node: this.node, ballot: p.ballot });
    const pending = this.pending;
    if (pending !== null) {
      // Reads queued during the election become read-index reads now.
      const keep: Pending<C>[] = [];
      for (const item of pending) {
        if (item.kind === "read") this.enqueueRead(p, item.tag, nowMs, out);
        else keep.push(item);
      }
      this.pending = keep.length > 0 ? keep : null;
    }
    this.fillPipeline(p, nowMs, out);
  }

  /**
   * Whether a majority of `configuration` promised this ballot covering `slot`. Once a majority
   * covers every later slot too (complete reports), the configuration is remembered as prepared.
   */
  private prepared(p: ProposerState<C>, configuration: Configuration, slot: number): boolean {
    let usable = 0;
    let complete = 0;
    for (const member of configuration.members) {
      const report = p.reports.get(member.incarnation);
      if (report === undefined || report.base >= slot || slot > report.coveredThrough) continue;
      usable += 1;
      if (report.coveredThrough === Number.POSITIVE_INFINITY) complete += 1;
    }
    const needed = majority(configuration.members.length);
    if (complete >= needed) p.preparedConfiguration = configuration;
    return usable >= needed;
  }

  /** The value phase 1 forces at `slot`: the highest-ballot report of the slot's configuration. */
  private recoveredValue(p: ProposerState<C>, slot: number): LogValue<C> | null {
    const configuration = configurationFor(this.membership, slot);
    let best: LogEntry<C> | null = null;
    for (const member of configuration.members) {
      const entry = p.reports.get(member.incarnation)?.entries?.get(slot);
      if (entry !== undefined && (best === null || entry.ballot > best.ballot)) best = entry;
    }
    return best === null ? null : best.value;
  }

  private tickCandidate(p: ProposerState<C>, nowMs: number, out: Output<C, R>): void {
    if (nowMs - this.lastPrepareMs(p) < prepareWaitMs(p)) return;
    if (p.prepareRetransmits >= limits.retransmitsMax) {
      this.abandonProposer(nowMs, out, "not_leader");
      return;
    }
    p.prepareRetransmits += 1;
    this.sendPrepares(p, this.applied + 1, nowMs, out);
  }

  private lastPrepareMs(p: ProposerState<C>): number {
    let last = 0;
    for (const t of p.prepareSentMs.values()) if (t > last) last = t;
    return last;
  }

  /** Give up proposing; back off with seeded jitter before trying again. */
  private abandonProposer(nowMs: number, out: Output<C, R>, reason: DropReason): void {
    const p = this.proposer;
    if (p === null) return;
    this.dropPending(reason, out);
    this.proposer = null;
    this.role = Role.Follower;
    if (nodeIdEquals(this.leaderHint ?? this.node, this.node)) this.leaderHint = null;
    this.backoffMs = Math.min(
      limits.electionBackoffMsMax,
      this.backoffMs === 0 ? limits.electionBackoffMsMin : this.backoffMs * 2,
    );
    this.backoffUntilMs = nowMs + this.backoffMs + this.env.random.below(this.backoffMs + 1);
  }

  /** Another proposer runs `ballot`: follow it if it outranks this node's own proposal. */
  private yieldTo(from: NodeId, ballot: Ballot, out: Output<C, R>): void {
    if (this.proposer !== null && this.proposer.ballot > ballot) return;
    // Every accept names its sender: keep the hint held already when it is the same node, so a
    // follower does not keep each message's copy alive until the next one.
    if (this.leaderHint === null || !nodeIdEquals(this.leaderHint, from)) this.leaderHint = from;
    if (this.proposer !== null) {
      this.dropPending("lost_leadership", out);
      this.proposer = null;
      this.role = Role.Follower;
    }
  }

  private noteRound(ballot: Ballot): void {
    if (ballot === BALLOT_CHOSEN) return;
    const round = ballotRound(ballot);
    if (round > this.highestRoundSeen) this.highestRoundSeen = round;
  }

  private onCampaign(m: PaxosMessage<C> & { type: "campaign" }, nowMs: number, out: Output<C, R>): void {
    if (this.retired || this.joining || this.proposer !== null) return;
    this.noteRound(m.ballot);
    this.backoffUntilMs = 0;
    this.campaign(nowMs, out, "transfer");
  }

  // ------------------------------------------------------------------ phase 2 (leader)

  private fillPipeline(p: ProposerState<C>, nowMs: number, out: Output<C, R>): void {
    if (!p.established || this.stalledReason !== null) return;
    while (p.nextSlot <= this.applied + limits.pipelineDepth) {
      const slot = p.nextSlot;
      const configuration = configurationFor(this.membership, slot);
      if (configuration !== p.preparedConfiguration && !this.prepared(p, configuration, slot)) {
        // A configuration this leader has not prepared yet (or coverage ran out).
        if (!p.blockedOnPrepare) p.prepareRetransmits = 0;
        p.blockedOnPrepare = true;
        this.sendPrepares(p, slot, nowMs, out);
        return;
      }
      p.blockedOnPrepare = false;
      // Phase 1 reported nothing beyond maxReportedSlot: no value to recover past it.
      let value: LogValue<C> | null = slot <= p.maxReportedSlot ? this.recoveredValue(p, slot) : null;
      let tags: number[] | null = null;
      if (value === null && slot <= p.maxReportedSlot) value = { kind: "noop", stampMs: nowMs };
      if (value === null) {
        // New commands wait for the slot in flight unless they fill a batch (section 5).
        const onlyFull = p.inflight.size > 0 && slot > p.padThrough && !this.env.pipelineSingleRequests;
        const batch = this.takeBatch(nowMs, p.ballot, onlyFull);
        if (batch !== null) {
          value = batch.value;
          tags = batch.tags;
        } else if (slot <= p.padThrough) {
          value = { kind: "noop", stampMs: nowMs };
        } else {
          return;
        }
      }
      this.proposeAt(p, slot, value, tags, configuration, nowMs, out);
      p.nextSlot = slot + 1;
      if (slot === p.maxReportedSlot) forgetReportedEntries(p);
    }
  }

  /** Commands at the head of `pending` that one slot takes (batchCommandsMax, batchBytesMax). */
  private batchLength(pending: readonly Pending<C>[]): number {
    let bytes = 0;
    let taken = 0;
    while (taken < pending.length && taken < limits.batchCommandsMax) {
      const item = pending[taken] as Pending<C>;
      if (item.kind !== "command") break;
      const size = this.machine.commandBytes(item.command);
      if (taken > 0 && bytes + size > limits.batchBytesMax) break;
      bytes += size;
      taken += 1;
    }
    return taken;
  }

  /**
   * The next slot's batch of queued requests, taken off the queue; null if none is queued. With
   * `onlyFull`, also null unless the batch is as large as a slot takes: it leaves some requests
   * queued (a limit of batchCommandsMax commands or batchBytesMax bytes, or a membership change,
   * which travels alone) or holds batchCommandsMax commands.
   */
  private takeBatch(
    nowMs: number,
    ballot: Ballot,
    onlyFull = false,
  ): { value: LogValue<C>; tags: number[] } | null {
    const pending = this.pending;
    if (pending === null || pending.length === 0) return null;
    const head = pending[0] as Pending<C>;
    if (head.kind === "change") {
      pending.shift();
      return { value: { kind: "reconfigure", stampMs: nowMs, change: head.change }, tags: [head.tag] };
    }
    // Count first, then fill arrays of the exact size (an empty array grows a larger store).
    const taken = this.batchLength(pending);
    if (onlyFull && taken === pending.length && taken < limits.batchCommandsMax) return null;
    const commands = new Array<C>(taken);
    const tags = new Array<number>(taken);
    for (let i = 0; i < taken; i++) {
      const item = pending[i] as Pending<C> & { kind: "command" };
      commands[i] = item.command;
      tags[i] = item.tag;
    }
    if (taken === pending.length) this.pending = null;
    else pending.splice(0, taken);
    return { value: { kind: "commands", stampMs: nowMs, stampBallot: ballot, commands }, tags };
  }

  private proposeAt(
    p: ProposerState<C>,
    slot: number,
    value: LogValue<C>,
    tags: number[] | null,
    configuration: Configuration,
    nowMs: number,
    out: Output<C, R>,
  ): void {
    const members = configuration.members;
    const own = memberIndex(configuration, this.node);
    const atOnce = p.fanout.atOnce(members, own, this.env);
    p.inflight.add({
      slot,
      value,
      tags,
      configuration,
      votes: 0,
      sentAtOnce: atOnce,
      sentAtMs: nowMs,
      retransmitAtMs: nowMs + retransmitAfterMs(p),
      waitMs: retransmitAfterMs(p),
      retransmits: 0,
    });
    p.commitNoticeAtMs = Number.POSITIVE_INFINITY; // the accepts carry the commit index
    if (own >= 0) this.acceptOwn(p.ballot, slot, value, out);
    let later: NodeId[] | null = null;
    for (let i = 0; i < members.length; i++) {
      if (i === own) continue;
      const member = members[i] as NodeId;
      if ((atOnce & (1 << i)) !== 0) {
        if (p.fanout.holdsFor(member)) this.flushDeferred(p, out);
        this.sendAccept(p, member, slot, value, out);
      } else {
        later ??= [];
        later.push(member);
      }
    }
    if (later === null) return;
    if (p.fanout.full()) this.flushDeferred(p, out);
    p.fanout.hold(slot, value, later, nowMs);
  }

  /**
   * Send the accepts held for followers outside the majority. Each carries the commit index only
   * up to its own slot: the follower stores the slots in order, and a commit index beyond the
   * slots it has would send it to catch-up for entries that are right behind in the same frame.
   */
  private flushDeferred(p: ProposerState<C>, out: Output<C, R>): void {
    p.fanout.release(({ slot, value, targets }) => {
      for (const to of targets) this.sendAccept(p, to, slot, value, out, Math.min(this.committed, slot));
    });
  }

  /**
   * The leader's own acceptance of its proposal: what onAccept would do with an accept from
   * itself. Its vote still arrives as an `accepted` message, after its write is durable.
   */
  private acceptOwn(ballot: Ballot, slot: number, value: LogValue<C>, out: Output<C, R>): void {
    if (ballot !== this.promised) return; // it promised a higher ballot: this proposal cannot win
    if (slot > this.committed) {
      this.storeEntry({ slot, ballot, value }, out);
    }
    this.send(out.sendAfterPersist, {
      type: "accepted",
      cellKey: this.cellKey,
      from: this.node,
      to: this.node,
      epoch: this.membership.epoch,
      ballot,
      slot,
      applied: this.applied,
    });
  }

  private onAccept(m: PaxosMessage<C> & { type: "accept" }, nowMs: number, out: Output<C, R>): void {
    if (this.retired) return;
    this.noteRound(m.ballot);
    if (m.epoch < this.membership.epoch) {
      this.send(out.sendNow, this.nack(m.from, m.ballot, "epoch"));
      return;
    }
    if (m.ballot < this.promised && !(this.env.bugs?.acceptLowerBallot ?? false)) {
      this.send(out.sendNow, this.nack(m.from, m.ballot, "ballot"));
      return;
    }
    if (m.ballot > this.promised) {
      this.promised = m.ballot;
      this.dirty(out).promised = m.ballot;
    }
    if (!nodeIdEquals(m.from, this.node)) this.yieldTo(m.from, m.ballot, out);
    if (m.slot > this.applied + limits.logRetainedEntries * 4) {
      // Far ahead of what this node applied: do not vote (always safe); catch up instead.
      this.noteCommit(m.ballot, m.commit);
      this.requestCatchUpIfNeeded(m.from, nowMs, out);
      return;
    }
    if (m.slot > this.committed) {
      this.storeEntry({ slot: m.slot, ballot: m.ballot, value: m.value }, out);
    }
    // An accept whose commit index covers its own slot (a deferred one, sent after the slot
    // committed) asks for no vote: the slot is chosen and its leader counts nothing more for it.
    // Otherwise: a slot at or below `committed` is chosen; a proposer with a promise quorum
    // re-proposes the chosen value, so voting for it is safe without storing it again.
    if (m.commit < m.slot) {
      this.send(out.sendAfterPersist, {
        type: "accepted",
        cellKey: this.cellKey,
        from: this.node,
        to: m.from,
        epoch: this.membership.epoch,
        ballot: m.ballot,
        slot: m.slot,
        applied: this.applied,
      });
    }
    this.noteCommit(m.ballot, m.commit);
    this.advanceCommitted(nowMs, out);
    this.requestCatchUpIfNeeded(m.from, nowMs, out);
  }

  private onAccepted(m: PaxosMessage<C> & { type: "accepted" }, nowMs: number, out: Output<C, R>): void {
    const p = this.proposer;
    if (p === null || !p.established || m.ballot !== p.ballot) return;
    this.noteFollowerApplied(p, m.from, m.applied);
    const inflight = p.inflight.get(m.slot);
    if (inflight === undefined) return;
    const index = memberIndex(inflight.configuration, m.from);
    if (index < 0) return;
    inflight.votes |= 1 << index;
    const votes = popcount(inflight.votes);
    const needed = majority(inflight.configuration.members.length);
    if (votes < needed) return;
    // The vote that makes the majority measures the round trip, if the slot was sent only once
    // (an answer to a copy says nothing about it).
    if (votes === needed && inflight.retransmits === 0) {
      const sample = nowMs - inflight.sentAtMs;
      p.roundTripMs = p.roundTripMs === 0 ? sample : p.roundTripMs * 0.875 + sample * 0.125;
    }
    this.leaderCommit(p, nowMs, out);
  }

  /** Move the commit index over every consecutive slot with a majority. */
  private leaderCommit(p: ProposerState<C>, nowMs: number, out: Output<C, R>): void {
    let advanced = false;
    for (;;) {
      const slot = this.committed + 1;
      const inflight = p.inflight.get(slot);
      if (inflight === undefined) break;
      if (popcount(inflight.votes) < majority(inflight.configuration.members.length)) break;
      p.inflight.delete(slot);
      p.fanout.committed(
        inflight.configuration.members,
        memberIndex(inflight.configuration, this.node),
        inflight.sentAtOnce,
        inflight.votes,
      );
      const entry = this.log?.get(slot);
      if (entry === undefined || entry.value !== inflight.value) {
        // The leader's own acceptance may still be on its way to disk; keep the chosen value.
        this.logMap().set(slot, { slot, ballot: BALLOT_CHOSEN, value: inflight.value });
      }
      this.committed = slot;
      this.env.observer?.chosen(this.cellKey, slot, inflight.value as LogValue<unknown>, this.node);
      this.applyCommitted(out, inflight);
      advanced = true;
      if (this.proposer !== p) return;
    }
    if (!advanced) return;
    if (this.commitKnown < this.committed) {
      this.commitKnown = this.committed;
      this.commitKnownBallot = p.ballot;
    }
    this.fillPipeline(p, nowMs, out);
    this.releaseReads(p, out);
    if (p.retiringNoticeDue) {
      p.retiringNoticeDue = false;
      this.startHeartbeatRound(p, nowMs, out);
    }
    if (p.inflight.size === 0) {
      if (p.reads.length > 0) this.startHeartbeatRound(p, nowMs, out);
      else p.commitNoticeAtMs = Math.min(p.commitNoticeAtMs, nowMs + limits.commitNoticeDelayMs);
    }
  }

  private tickLeader(p: ProposerState<C>, nowMs: number, out: Output<C, R>): void {
    if (nowMs >= p.fanout.releaseAtMs) this.flushDeferred(p, out);
    if (nowMs >= p.commitNoticeAtMs) {
      p.commitNoticeAtMs = Number.POSITIVE_INFINITY;
      if (p.retiring.length > 0) forgetRetired(p);
      if (p.reads.length > 0 || p.retiring.length > 0) this.startHeartbeatRound(p, nowMs, out);
      else this.sendCommitNotices(p, out);
    }
    for (const inflight of p.inflight.ascending()) {
      if (nowMs < inflight.retransmitAtMs) continue;
      if (inflight.retransmits >= limits.retransmitsMax) {
        // No majority answers: this leader is cut off. Step down so others may lead.
        this.abandonProposer(nowMs, out, "lost_leadership");
        return;
      }
      // Each copy waits twice as long as the one before. A slot that needed a copy is not timed
      // (which copy was answered?), so later slots start from this wait until one sent once is:
      // a leader that has measured no round trip yet (a new one, on a loaded colony) would
      // otherwise send copies of every slot and never measure one.
      inflight.retransmits += 1;
      inflight.waitMs = Math.min(limits.retransmitMsMax, 2 * inflight.waitMs);
      inflight.retransmitAtMs = nowMs + inflight.waitMs;
      p.roundTripMs = Math.max(p.roundTripMs, inflight.waitMs / 3);
      const members = inflight.configuration.members;
      for (let i = 0; i < members.length; i++) {
        if ((inflight.votes & (1 << i)) !== 0) continue;
        this.sendAccept(p, members[i] as NodeId, inflight.slot, inflight.value, out);
      }
    }
    if (p.blockedOnPrepare && nowMs - this.lastPrepareMs(p) >= prepareWaitMs(p)) {
      if (p.prepareRetransmits >= limits.retransmitsMax) {
        this.abandonProposer(nowMs, out, "lost_leadership");
        return;
      }
      p.prepareRetransmits += 1;
    }
    if (p.nextSlot <= this.applied + limits.pipelineDepth) this.fillPipeline(p, nowMs, out);
    if (p.round > 0 && nowMs - p.roundSentMs >= roundWaitMs(p)) {
      if (p.roundRetransmits < limits.retransmitsMax) {
        p.roundRetransmits += 1;
        this.sendHeartbeats(p, nowMs, out, true);
      } else if (p.confirmedRound < p.round && p.reads.length > 0) {
        this.abandonProposer(nowMs, out, "lost_leadership");
      }
    }
  }

  // ------------------------------------------------------------------ heartbeats, reads, commit

  /**
   * Whether this leader knows every slot that may hold a chosen value: phase 1 found nothing
   * beyond the slots it has proposed, in every configuration that governs later slots, and it
   * holds every slot a peer reported as chosen. Until then no read index is safe.
   */
  private recoveryComplete(p: ProposerState<C>): boolean {
    if (p.nextSlot <= p.maxReportedSlot || p.blockedOnPrepare) return false;
    if (this.committed < this.chosenKnown || this.committed < this.commitKnown) return false;
    for (const configuration of this.membership.configurations) {
      const last =
        this.membership.configurations.indexOf(configuration) === this.membership.configurations.length - 1;
      const next = this.membership.configurations[this.membership.configurations.indexOf(configuration) + 1];
      if (!last && next !== undefined && next.fromSlot <= p.nextSlot) continue; // governs only earlier slots
      const slot = Math.max(p.nextSlot, configuration.fromSlot);
      let count = 0;
      for (const member of configuration.members) {
        const report = p.reports.get(member.incarnation);
        if (report !== undefined && report.base < slot && report.coveredThrough === Number.POSITIVE_INFINITY)
          count += 1;
      }
      if (count < majority(configuration.members.length)) return false;
    }
    return true;
  }

  private enqueueRead(p: ProposerState<C>, tag: number, nowMs: number, out: Output<C, R>): void {
    // Every slot proposed so far may hold a write acknowledged before this read began. While
    // recovery is incomplete the index is not known yet (-1): it is fixed when recovery ends.
    const index = this.recoveryComplete(p) ? p.nextSlot - 1 : -1;
    // A round already in flight may have left before this read arrived: wait for the next one.
    p.reads.push({ tag, index, round: p.round + 1 });
    if (p.confirmedRound >= p.round) this.startHeartbeatRound(p, nowMs, out);
    else p.heartbeatPending = true;
    this.releaseReads(p, out);
  }

  /**
   * Tells lagging members the commit index: heartbeats of round 0, which members do not
   * acknowledge and the leader does not retransmit. A member that misses one learns the commit
   * from the next accept or heartbeat, or by catch-up; nothing waits for it. (Rounds above 0
   * confirm leadership for reads and are acknowledged.)
   */
  private sendCommitNotices(p: ProposerState<C>, out: Output<C, R>): void {
    p.noticedThrough = this.committed;
    // The held accepts go first (a heartbeat would send them anyway). A member that an accept or
    // heartbeat of this ballot already told the whole commit index needs no notice: a commit
    // index counts the same whichever message of the ballot carries it.
    this.flushDeferred(p, out);
    for (const configuration of this.membership.configurations) {
      for (const member of configuration.members) {
        if (nodeIdEquals(member, this.node)) continue;
        if ((p.followerApplied.get(member.incarnation) ?? 0) >= this.committed) continue;
        if ((p.toldCommit?.get(member.incarnation) ?? 0) >= this.committed) continue;
        this.sendHeartbeat(p, member, 0, out);
      }
    }
    // Every member is now told (or has applied) the commit index; forgetting who was told costs
    // at most a notice later, and a quiet leader keeps no map.
    p.toldCommit = null;
  }

  private startHeartbeatRound(p: ProposerState<C>, nowMs: number, out: Output<C, R>): void {
    p.round += 1;
    p.roundRetransmits = 0;
    p.heartbeatPending = false;
    this.sendHeartbeats(p, nowMs, out, false);
    this.checkConfirmed(p, out);
  }

  /** A leader whose membership just dropped a configuration tells the nodes it removed. */
  private noteRemovedMembers(before: MembershipState): void {
    const p = this.proposer;
    if (p === null || !p.established) return;
    const latest = latestConfiguration(this.membership);
    const lastSlot = latest.fromSlot - 1;
    let added = false;
    forgetRetired(p);
    for (const configuration of before.configurations) {
      for (const member of configuration.members) {
        if (nodeIdEquals(member, this.node) || memberIndex(latest, member) >= 0) continue;
        if (p.retiring.some((r) => nodeIdEquals(r.node, member))) continue;
        // Full: the node told longest ago goes (most likely gone for good), not the new one.
        if (p.retiring.length >= limits.membersMax) p.retiring.shift();
        p.retiring.push({ node: member, lastSlot });
        added = true;
      }
    }
    if (added) p.retiringNoticeDue = true;
    this.forgetUntracked(p);
  }

  private sendHeartbeats(p: ProposerState<C>, nowMs: number, out: Output<C, R>, retransmit: boolean): void {
    p.roundSentMs = nowMs;
    const needConfirm = p.confirmedRound < p.round;
    for (const configuration of this.membership.configurations) {
      for (const member of configuration.members) {
        if (nodeIdEquals(member, this.node)) continue;
        if (
          retransmit &&
          !needConfirm &&
          (p.followerApplied.get(member.incarnation) ?? 0) >= this.committed
        ) {
          continue;
        }
        if (retransmit && !needConfirm && !this.env.isServerAlive(member.serverId)) continue;
        this.sendHeartbeat(p, member, p.round, out);
      }
    }
    for (const { node, lastSlot } of p.retiring) {
      if ((p.followerApplied.get(node.incarnation) ?? 0) >= lastSlot) continue;
      this.sendHeartbeat(p, node, p.round, out);
    }
  }

  /** Every heartbeat carries the commit index: the accepts held for deferred followers go first. */
  private sendHeartbeat(p: ProposerState<C>, to: NodeId, round: number, out: Output<C, R>): void {
    this.flushDeferred(p, out);
    noteTold(p, to, this.committed);
    this.send(out.sendNow, {
      type: "heartbeat",
      cellKey: this.cellKey,
      from: this.node,
      to,
      epoch: this.membership.epoch,
      ballot: p.ballot,
      commit: this.committed,
      round,
    });
  }

  private sendAccept(
    p: ProposerState<C>,
    to: NodeId,
    slot: number,
    value: LogValue<C>,
    out: Output<C, R>,
    commit: number = this.committed,
  ): void {
    this.send(out.sendNow, {
      type: "accept",
      cellKey: this.cellKey,
      from: this.node,
      to,
      epoch: this.membership.epoch,
      ballot: p.ballot,
      slot,
      value,
      commit,
    });
    noteTold(p, to, commit);
  }

  private onHeartbeat(m: PaxosMessage<C> & { type: "heartbeat" }, nowMs: number, out: Output<C, R>): void {
    if (this.retired) return;
    this.noteRound(m.ballot);
    if (m.epoch < this.membership.epoch) {
      this.send(out.sendNow, this.nack(m.from, m.ballot, "epoch"));
      return;
    }
    const ok = m.ballot >= this.promised;
    if (ok) {
      if (!nodeIdEquals(m.from, this.node)) this.yieldTo(m.from, m.ballot, out);
      this.noteCommit(m.ballot, m.commit);
      this.advanceCommitted(nowMs, out);
      this.requestCatchUpIfNeeded(m.from, nowMs, out);
      // A commit notice (round 0) is not acknowledged; a refusal always is.
      if (m.round === 0) return;
    }
    this.send(out.sendNow, {
      type: "heartbeat_ack",
      cellKey: this.cellKey,
      from: this.node,
      to: m.from,
      epoch: this.membership.epoch,
      ballot: ok ? m.ballot : this.promised,
      round: m.round,
      applied: this.applied,
      ok,
    });
  }

  private onHeartbeatAck(
    m: PaxosMessage<C> & { type: "heartbeat_ack" },
    nowMs: number,
    out: Output<C, R>,
  ): void {
    const p = this.proposer;
    if (p === null || !p.established) return;
    if (!m.ok) {
      if (m.ballot > p.ballot) {
        this.noteRound(m.ballot);
        this.leaderHint = memberByIncarnation(this.membership, ballotIncarnation(m.ballot));
        this.abandonProposer(nowMs, out, "lost_leadership");
      }
      return;
    }
    if (m.ballot !== p.ballot) return;
    this.noteFollowerApplied(p, m.from, m.applied);
    const previous = p.acks.get(m.from.incarnation);
    if (previous === undefined ? this.tracked(p, m.from) : m.round > previous)
      p.acks.set(m.from.incarnation, m.round);
    this.checkConfirmed(p, out);
    if (p.confirmedRound >= p.round && p.heartbeatPending) this.startHeartbeatRound(p, nowMs, out);
  }

  /** A round is confirmed when a majority of every governing configuration acknowledged it. */
  private checkConfirmed(p: ProposerState<C>, out: Output<C, R>): void {
    if (p.confirmedRound >= p.round) return;
    for (const configuration of this.membership.configurations) {
      let count = 0;
      for (const member of configuration.members) {
        if (nodeIdEquals(member, this.node) || (p.acks.get(member.incarnation) ?? 0) >= p.round) count += 1;
      }
      if (count < majority(configuration.members.length)) return;
    }
    p.confirmedRound = p.round;
    this.releaseReads(p, out);
  }

  private releaseReads(p: ProposerState<C>, out: Output<C, R>): void {
    if (p.reads.length === 0) return;
    if (p.reads.some((read) => read.index < 0)) {
      if (!this.recoveryComplete(p)) return;
      const index = p.nextSlot - 1;
      for (let i = 0; i < p.reads.length; i++) {
        const read = p.reads[i] as ReadWaiter;
        if (read.index < 0) p.reads[i] = { tag: read.tag, round: read.round, index };
      }
    }
    let kept = 0;
    for (const read of p.reads) {
      if (read.round <= p.confirmedRound && read.index <= this.applied) {
        out.reads.push({ cellKey: this.cellKey, tag: read.tag });
      } else {
        p.reads[kept++] = read;
      }
    }
    p.reads.length = kept;
  }

  private noteFollowerApplied(p: ProposerState<C>, from: NodeId, applied: number): void {
    const previous = p.followerApplied.get(from.incarnation);
    if (previous === undefined ? this.tracked(p, from) : applied > previous)
      p.followerApplied.set(from.incarnation, applied);
  }

  /**
   * Whether the leader keeps state for `node`: a member of a configuration, or a removed node it
   * still tells. What it keeps per node (votes, applied indexes, promises) is so bounded by the
   * members, whatever nodes messages claim to come from.
   */
  private tracked(p: ProposerState<C>, node: NodeId): boolean {
    for (const configuration of this.membership.configurations)
      if (memberIndex(configuration, node) >= 0) return true;
    return p.retiring.some((r) => nodeIdEquals(r.node, node));
  }

  /** After a membership change: forgets what it kept for nodes it no longer tracks. */
  private forgetUntracked(p: ProposerState<C>): void {
    const kept = new Set<number>();
    for (const configuration of this.membership.configurations)
      for (const member of configuration.members) kept.add(member.incarnation);
    for (const r of p.retiring) kept.add(r.node.incarnation);
    for (const map of [p.reports, p.acks, p.followerApplied, p.prepareSentMs, p.toldCommit]) {
      if (map === null) continue;
      for (const incarnation of map.keys()) if (!kept.has(incarnation)) map.delete(incarnation);
    }
  }

  private noteCommit(ballot: Ballot, commit: number): void {
    if (commit > this.commitKnown || (commit === this.commitKnown && ballot > this.commitKnownBallot)) {
      this.commitKnown = commit;
      this.commitKnownBallot = ballot;
    }
  }

  private noteChosen(slot: number): void {
    if (slot > this.chosenKnown) this.chosenKnown = slot;
  }

  /**
   * Follower side: a slot is chosen locally when its entry came from catch-up (BALLOT_CHOSEN) or
   * was proposed by the very ballot that reported it committed. Anything else needs catch-up.
   */
  private advanceCommitted(nowMs: number, out: Output<C, R>): void {
    const log = this.log;
    if (log === null || this.joining) return;
    for (;;) {
      const slot = this.committed + 1;
      const entry = log.get(slot);
      if (entry === undefined) break;
      const chosen =
        entry.ballot === BALLOT_CHOSEN ||
        (slot <= this.commitKnown &&
          (entry.ballot === this.commitKnownBallot || (this.env.bugs?.commitAnyBallot ?? false)));
      if (!chosen) break;
      this.committed = slot;
    }
    const p = this.proposer;
    const settled = p?.established === true && this.settleInflight(p, out);
    this.applyCommitted(out, null);
    if (settled && this.proposer === p && !this.retired) {
      // Slots it had in flight were chosen without its votes: under a higher ballot, maybe with
      // other values. Its own ballot may not go on telling followers a commit index over them (a
      // follower holding its losing proposal there would apply it): step down. The requests it
      // held are redirected; the next one elects a leader (this node again, under a new ballot,
      // unless the one that chose those slots still leads).
      this.abandonProposer(nowMs, out, "lost_leadership");
    }
  }

  /**
   * A leader learnt slots chosen by catch-up rather than by its own votes: whatever it still had
   * in flight through `committed` is settled. The requests in them may or may not be what was
   * chosen; they are dropped, and the client's retry under the same (session, seq) learns which.
   * True if any was: the leader then steps down (advanceCommitted).
   */
  private settleInflight(p: ProposerState<C>, out: Output<C, R>): boolean {
    if (p.nextSlot <= this.committed) p.nextSlot = this.committed + 1;
    if (p.inflight.size === 0) return false;
    let settled = false;
    for (const inflight of p.inflight.ascending()) {
      if (inflight.slot > this.committed) break;
      p.inflight.delete(inflight.slot);
      this.dropInflight(inflight, "lost_leadership", this.node, out);
      settled = true;
    }
    return settled;
  }

  /** Tells the requests proposed in `inflight` that this node will not answer them. */
  private dropInflight(
    inflight: Inflight<C>,
    reason: DropReason,
    leader: NodeId | null,
    out: Output<C, R>,
  ): void {
    if (inflight.tags === null) return;
    for (const tag of inflight.tags) out.dropped.push({ cellKey: this.cellKey, tag, reason, leader });
  }

  private behind(): boolean {
    return this.committed < this.commitKnown || this.committed < this.chosenKnown || this.joining;
  }

  private requestCatchUpIfNeeded(from: NodeId, nowMs: number, out: Output<C, R>): void {
    if (!this.behind() || nodeIdEquals(from, this.node)) return;
    if (this.catchUpFrom !== null && nowMs - this.catchUpSentMs < limits.retransmitMs) return;
    this.catchUpAttempts = 0;
    this.sendCatchUpRequest(from, nowMs, out);
  }

  private sendCatchUpRequest(from: NodeId, nowMs: number, out: Output<C, R>): void {
    this.catchUpFrom = from;
    this.catchUpSentMs = nowMs;
    this.catchUpAttempts += 1;
    this.send(out.sendNow, {
      type: "catchup_request",
      cellKey: this.cellKey,
      from: this.node,
      to: from,
      epoch: this.membership.epoch,
      fromSlot: this.committed + 1,
      needSnapshot: this.joining,
    });
  }

  private onCatchUpRequest(m: PaxosMessage<C> & { type: "catchup_request" }, out: Output<C, R>): void {
    if (this.joining || this.applied < m.fromSlot) return;
    const entries: LogEntry<C>[] = [];
    const log = this.log;
    let segment = !m.needSnapshot && m.fromSlot > this.logFloor && log !== null;
    if (segment && log !== null) {
      const last = Math.min(this.applied, m.fromSlot + limits.catchUpSegmentEntriesMax - 1);
      for (let slot = m.fromSlot; slot <= last; slot++) {
        const entry = log.get(slot);
        if (entry === undefined) {
          segment = false;
          break;
        }
        entries.push({ slot, ballot: BALLOT_CHOSEN, value: entry.value });
      }
    }
    if (segment) {
      this.send(out.sendNow, {
        type: "catchup",
        cellKey: this.cellKey,
        from: this.node,
        to: m.from,
        epoch: this.membership.epoch,
        entries,
        snapshot: null,
        applied: this.applied,
      });
      return;
    }
    const snapshot: Snapshot = {
      index: this.applied,
      membership: this.membership,
      state: this.machine.snapshot(),
    };
    this.send(out.sendNow, {
      type: "catchup",
      cellKey: this.cellKey,
      from: this.node,
      to: m.from,
      epoch: this.membership.epoch,
      entries: [],
      snapshot,
      applied: this.applied,
    });
  }

  private onCatchUp(m: PaxosMessage<C> & { type: "catchup" }, nowMs: number, out: Output<C, R>): void {
    if (this.retired) return;
    const snapshot = m.snapshot;
    if (snapshot !== null && snapshot.index > this.applied && snapshot.index <= limits.slotMax) {
      try {
        this.machine.restore(snapshot.state);
      } catch {
        return; // a corrupt snapshot from a peer: ignore it and try again later
      }
      this.membership = this.env.memberships.intern(snapshot.membership);
      const joined = this.joining;
      this.joining = false;
      if (this.learner && (this.env.bugs?.damagedNodeVotes ?? false)) this.learner = false;
      this.applied = snapshot.index;
      this.committed = snapshot.index;
      this.snapshotIndex = snapshot.index;
      this.logFloor = snapshot.index;
      this.noteChosen(snapshot.index);
      const log = this.log;
      if (log !== null) {
        log.deleteThrough(snapshot.index);
      }
      const write = this.dirty(out);
      write.snapshot = snapshot;
      if (joined) write.founding = true;
      // A leader that fell behind its own pipeline cannot continue it: step down, campaign anew
      // (at once: a leader elected while behind, as after a hand-over or a failover to a node
      // that lagged, would otherwise leave its cell leaderless until the next request).
      const steppedDown = this.proposer?.established === true;
      if (steppedDown) this.abandonProposer(nowMs, out, "lost_leadership");
      this.afterMembershipChange(out);
      if (steppedDown && this.proposer === null && !this.retired) this.campaign(nowMs, out, "caught_up");
    }
    // A segment starts just past what this node has committed (sendCatchUpRequest); an entry far
    // beyond (a peer's bug or a forged message) is not kept, as an accept that far ahead is not.
    const entriesEnd = this.committed + limits.logRetainedEntries * 4;
    for (const entry of m.entries) {
      if (entry.slot <= this.committed || entry.slot > entriesEnd) continue;
      this.storeEntry({ slot: entry.slot, ballot: BALLOT_CHOSEN, value: entry.value }, out);
    }
    if (m.applied <= limits.slotMax) this.noteChosen(m.applied);
    this.catchUpFrom = null;
    this.advanceCommitted(nowMs, out);
    if (this.behind()) this.requestCatchUpIfNeeded(m.from, nowMs, out);
    const p = this.proposer;
    if (p !== null && !p.established) this.tryEstablish(p, nowMs, out);
  }

  // ------------------------------------------------------------------ apply

  private applyCommitted(out: Output<C, R>, leaderInflight: Inflight<C> | null): void {
    const log = this.log;
    while (this.applied < this.committed && this.stalledReason === null && log !== null) {
      const slot = this.applied + 1;
      const entry = log.get(slot);
      if (entry === undefined) throw new InvariantError(`committed slot ${slot} has no value`);
      const value = entry.value;
      const tags = leaderInflight !== null && leaderInflight.slot === slot ? leaderInflight.tags : null;
      switch (value.kind) {
        case "noop":
          break;
        case "commands": {
          for (const command of value.commands) {
            const reason = this.machine.unsupported(command);
            if (reason !== null) {
              this.stall(slot, reason, out);
              return;
            }
          }
          const context = { index: slot, stampMs: value.stampMs, stampBallot: value.stampBallot };
          const commands = value.commands;
          for (let i = 0; i < commands.length; i++) {
            const result = this.machine.apply(commands[i] as C, context);
            if (tags !== null) {
              out.results.push({
                cellKey: this.cellKey,
                tag: tags[i] as number,
                index: slot,
                outcome: { kind: "command", result },
              });
            }
          }
          break;
        }
        case "reconfigure": {
          const delayed = !(this.env.bugs?.membershipWithoutDelay ?? false);
          const applied = applyMembershipChange(
            this.membership,
            value.change,
            slot,
            delayed ? limits.pipelineDepth : 1,
          );
          this.membership = this.env.memberships.intern(applied.state);
          if (tags !== null) {
            out.results.push({
              cellKey: this.cellKey,
              tag: tags[0] as number,
              index: slot,
              outcome: { kind: "membership", result: applied.result },
            });
          }
          if (applied.result.status === "applied") {
            const p = this.proposer;
            if (p?.established) p.padThrough = applied.result.fromSlot - 1;
            const latest = latestConfiguration(this.membership);
            out.events.push({
              type: "membership",
              cellKey: this.cellKey,
              node: this.node,
              epoch: latest.epoch,
              members: latest.members,
            });
          }
          break;
        }
        default:
          assertNever(value, "log value");
      }
      this.applied = slot;
      this.env.observer?.applied(this.cellKey, this.node, slot, value as LogValue<unknown>);
      const before = this.membership;
      const pruned = pruneMembership(before, this.applied);
      if (pruned !== before) this.membership = this.env.memberships.intern(pruned);
      if (this.membership !== before) this.noteRemovedMembers(before);
      if (this.applied - this.snapshotIndex >= limits.snapshotIntervalEntries) this.takeSnapshot(out);
      else this.trimLog();
      // Retirement can only begin when the membership changes (a change applied, or one activating).
      if (value.kind === "reconfigure" || this.membership !== before) this.afterMembershipChange(out);
      if (this.retired) return;
    }
  }

  private takeSnapshot(out: Output<C, R>): void {
    const write = this.dirty(out);
    // Stored entries up to the previous snapshot are covered by a snapshot already durable.
    write.truncateThrough = Math.max(write.truncateThrough, this.snapshotIndex);
    write.snapshot = { index: this.applied, membership: this.membership, state: this.machine.snapshot() };
    const log = this.log;
    if (log !== null) {
      log.deleteThrough(this.applied);
      if (log.size === 0) this.log = null;
    }
    this.snapshotIndex = this.applied;
    this.logFloor = this.applied;
  }

  /**
   * Applied entries stay in memory only where they serve catch-up by log segment: a leader keeps
   * the last logMemoryEntries (they are on disk), other nodes drop them once applied. Kept in
   * every member, each entry outlived several young-generation collections for a leader's sake
   * only (docs/BENCHMARK-LOG.md: a fifth more writes/s without). A follower that becomes leader
   * answers members behind its first entries with a snapshot, and a candidate behind a promiser's
   * applied index catches up from it before it leads (PROTOCOL.md section 9).
   */
  private trimLog(): void {
    const floor = this.applied - (this.role === Role.Leader ? limits.logMemoryEntries : 0);
    const log = this.log;
    if (floor <= this.logFloor || log === null) return;
    log.deleteThrough(floor);
    this.logFloor = floor;
    if (log.size === 0) this.log = null;
  }

  private stall(slot: number, reason: string, out: Output<C, R>): void {
    this.stalledReason = `cannot apply slot ${slot}: ${reason}`;
    out.events.push({ type: "stalled", cellKey: this.cellKey, node: this.node, index: slot, reason });
    this.dropPending("stalled", out);
    const p = this.proposer;
    if (p !== null) {
      if (p.established) {
        // Tell the followers what is committed so they stall at the same slot and report it too.
        for (const member of latestConfiguration(this.membership).members) {
          if (nodeIdEquals(member, this.node)) continue;
          this.sendHeartbeat(p, member, p.round + 1, out);
        }
      }
      this.proposer = null;
      this.role = Role.Follower;
    }
  }

  /** Retire once a configuration without this node governs every slot after `applied`. */
  private afterMembershipChange(out: Output<C, R>): void {
    if (this.retired || this.joining) return;
    const latest = latestConfiguration(this.membership);
    if (memberIndex(latest, this.node) >= 0 || this.applied < latest.fromSlot - 1) return;
    // A node added later than this state knows about is not removed: it is not minted yet.
    if (this.node.incarnation >= this.membership.nextIncarnation) return;
    this.retired = true;
    const p = this.proposer;
    if (p?.established) {
      this.flushDeferred(p, out);
      const successor = latest.members[0];
      if (successor !== undefined) {
        this.send(out.sendNow, {
          type: "campaign",
          cellKey: this.cellKey,
          from: this.node,
          to: successor,
          epoch: this.membership.epoch,
          ballot: p.ballot,
        });
      }
    }
    this.leaderHint = latest.members[0] ?? null;
    this.dropPending("retired", out);
    this.proposer = null;
    this.role = Role.Follower;
    this.catchUpFrom = null;
    out.events.push({
      type: "retired",
      cellKey: this.cellKey,
      node: this.node,
      epoch: latest.epoch,
      members: latest.members,
    });
  }

  // ------------------------------------------------------------------ rejection

  private nack(to: NodeId, ballot: Ballot, reason: "ballot" | "epoch"): PaxosMessage<C> {
    return {
      type: "nack",
      cellKey: this.cellKey,
      from: this.node,
      to: to,
      epoch: this.membership.epoch,
      ballot,
      promised: this.promised,
      reason,
      applied: this.applied,
    };
  }

  private onNack(m: PaxosMessage<C> & { type: "nack" }, nowMs: number, out: Output<C, R>): void {
    const p = this.proposer;
    if (p === null || m.ballot !== p.ballot) return;
    this.noteRound(m.promised);
    if (m.reason === "epoch") {
      // This node is behind on membership: step down and catch up from the peer that knows more.
      this.abandonProposer(nowMs, out, "not_leader");
      this.noteChosen(m.applied);
      this.requestCatchUpIfNeeded(m.from, nowMs, out);
      return;
    }
    if (m.promised > p.ballot) {
      const holder = memberByIncarnation(this.membership, ballotIncarnation(m.promised));
      this.abandonProposer(nowMs, out, p.established ? "lost_leadership" : "not_leader");
      if (holder !== null && !nodeIdEquals(holder, this.node)) this.leaderHint = holder;
    }
  }

  // ------------------------------------------------------------------ helpers

  private send(queue: PaxosMessage<C>[], message: PaxosMessage<C>): void {
    queue.push(message);
  }

  private logMap(): SlotLog<C> {
    if (this.log === null) this.log = new SlotLog();
    return this.log;
  }

  private dirty(out: Output<C, R>): NodeWrite<C> {
    // A learner persists nothing: its writes go nowhere.
    if (this.learner) return this.newWrite([]);
    return this.turnWrite ?? out.adopt(this, this.newWrite([]));
  }

  /** Keeps `entry` in the in-memory log and stores it with this turn's write. */
  private storeEntry(entry: LogEntry<C>, out: Output<C, R>): void {
    this.logMap().set(entry.slot, entry);
    if (this.learner) return;
    const write = this.turnWrite;
    // The common first entry of a turn: a literal array of one (an empty one grows a larger store).
    if (write === null) out.adopt(this, this.newWrite([entry]));
    else write.entries.push(entry);
  }

  private newWrite(entries: LogEntry<C>[]): NodeWrite<C> {
    return {
      cellKey: this.cellKey,
      node: this.node,
      promised: null,
      entries,
      snapshot: null,
      truncateThrough: 0,
    };
  }

  /** Recompute when tick() is next needed. A quiet cell has no deadline at all. */
  private updateWake(nowMs: number): void {
    let wake = Number.POSITIVE_INFINITY;
    const p = this.proposer;
    if (p !== null) {
      if (!p.established) {
        wake = this.lastPrepareMs(p) + prepareWaitMs(p);
      } else {
        wake = Math.min(wake, p.inflight.min(retransmitAtMs));
        wake = Math.min(wake, p.commitNoticeAtMs, p.fanout.releaseAtMs);
        if (p.round > 0 && this.heartbeatUnfinished(p)) wake = Math.min(wake, p.roundSentMs + roundWaitMs(p));
        if (p.inflight.size === 0 && p.nextSlot <= p.padThrough) wake = Math.min(wake, nowMs);
        // Requests held back for a slot in flight that left without committing (settled by catch-up).
        if (
          p.inflight.size === 0 &&
          this.pending !== null &&
          this.pending.length > 0 &&
          !p.blockedOnPrepare &&
          this.stalledReason === null &&
          p.nextSlot <= this.applied + limits.pipelineDepth
        ) {
          wake = Math.min(wake, nowMs);
        }
        if (p.blockedOnPrepare) wake = Math.min(wake, this.lastPrepareMs(p) + prepareWaitMs(p));
      }
    } else if (this.pending !== null && this.pending.length > 0) {
      wake = Math.max(this.backoffUntilMs, nowMs);
    }
    if (this.catchUpFrom !== null) wake = Math.min(wake, this.catchUpSentMs + limits.retransmitMs);
    this.wakeAtMs = wake;
  }

  private heartbeatUnfinished(p: ProposerState<C>): boolean {
    if (p.confirmedRound < p.round) return p.roundRetransmits < limits.retransmitsMax || p.reads.length > 0;
    if (p.roundRetransmits >= limits.retransmitsMax) return false;
    for (const configuration of this.membership.configurations) {
      for (const member of configuration.members) {
        if (nodeIdEquals(member, this.node)) continue;
        if ((p.followerApplied.get(member.incarnation) ?? 0) >= this.committed) continue;
        if (p.noticedThrough >= this.committed) continue;
        if (!this.env.isServerAlive(member.serverId)) continue;
        return true;
      }
    }
    for (const { node, lastSlot } of p.retiring) {
      if ((p.followerApplied.get(node.incarnation) ?? 0) < lastSlot && this.env.isServerAlive(node.serverId))
        return true;
    }
    return false;
  }
}

/**
 * Every slot the promises reported is proposed again: their entries are not needed any more (a
 * later promise brings its own), and a leader need not hold a log's worth per member for its term.
 */
function forgetReportedEntries(p: ProposerState<unknown>): void {
  for (const [incarnation, report] of p.reports) {
    if (report.entries !== null) p.reports.set(incarnation, { ...report, entries: null });
  }
}

/**
 * Forgets the removed nodes that applied their removal: each retires on its own once it has, and
 * needs no more notices.
 */
function forgetRetired(p: ProposerState<unknown>): void {
  let kept = 0;
  for (const entry of p.retiring) {
    if ((p.followerApplied.get(entry.node.incarnation) ?? 0) < entry.lastSlot) p.retiring[kept++] = entry;
  }
  p.retiring.length = kept;
}

/** Remembers the highest commit index a message of the leader's ballot carried to `to`. */
function noteTold(p: ProposerState<unknown>, to: NodeId, commit: number): void {
  if (p.toldCommit === null) p.toldCommit = new Map();
  if ((p.toldCommit.get(to.incarnation) ?? -1) < commit) p.toldCommit.set(to.incarnation, commit);
}

function retransmitAtMs(inflight: Inflight<unknown>): number {
  return inflight.retransmitAtMs;
}

/** Three smoothed round trips, within [retransmitMs, retransmitMsMax]. */
function retransmitAfterMs(p: { readonly roundTripMs: number }): number {
  return Math.min(limits.retransmitMsMax, Math.max(limits.retransmitMs, 3 * p.roundTripMs));
}

/**
 * The wait after the `retransmits`-th copy of prepares or of a heartbeat round: doubled after
 * each copy that went unanswered, up to retransmitMsMax (accepts double their own `waitMs`). With
 * a fixed wait, a proposer whose peers slowed down under load would send copies those peers must
 * also process, and give up after retransmitsMax of them within a few hundred milliseconds:
 * leadership lost to load, and elections on top of it.
 */
function backedOffMs(waitMs: number, retransmits: number): number {
  return Math.min(limits.retransmitMsMax, waitMs * 2 ** retransmits);
}

function prepareWaitMs(p: { readonly prepareRetransmits: number }): number {
  return backedOffMs(limits.retransmitMs, p.prepareRetransmits);
}

function roundWaitMs(p: { readonly roundTripMs: number; readonly roundRetransmits: number }): number {
  return backedOffMs(retransmitAfterMs(p), p.roundRetransmits);
}

function popcount(bits: number): number {
  let count = 0;
  while (bits !== 0) {
    bits &= bits - 1;
    count += 1;
  }
  return count;
}
