/**
 * A server hosts nodes of many cells. It routes messages to them, runs their Ready output with
 * ONE storage batch per turn for all cells (group commit) and sends what depends on durable
 * state only after that batch is durable, keeps a timer wheel that only holds cells with armed
 * timers, runs the per-server-pair failure detector, keeps forwarding pointers for cells that
 * moved away, and bounds every queue (a full queue answers `overloaded`).
 *
 * It is written against ports (storage, transport, scheduler) and never touches node:* itself:
 * the simulator runs this very code.
 */

import type { ClientRequest, ClientResponse, RequestBody, ResponseBody } from "../cell/index.ts";
import {
  CellMachine,
  type Command,
  type CommandResult,
  commandBytes,
  type Transaction,
  transactionBytes,
  validateCommand,
  validateTransaction,
} from "../cell/index.ts";
import {
  type Address,
  type CellKey,
  cellKeyProblem,
  DurationHistogram,
  Fifo,
  formatNodeId,
  limits,
  type NodeId,
  type Prng,
  type Scheduler,
  type ServerId,
  type TimerHandle,
} from "../core/index.ts";
import {
  type CampaignCause,
  campaignCauses,
  initialMembership,
  MembershipInterner,
  type NodeWrite,
  Output,
  type PaxosMessage,
  type PlantedBugs,
  Replica,
  type ReplicaEnvironment,
  type ReplicaObserver,
  type ReplicaStatus,
  type RequestOutcome,
} from "../paxos/index.ts";
import type { ForwardingPointer, StorageBatch, StoragePort } from "../storage/index.ts";
import type { TransportPort } from "../transport/index.ts";
import { FailureDetector } from "./failure-detector.ts";
import { TimerWheel, type WheelItem } from "./timer-wheel.ts";

/** Everything that travels between servers, and between clients and servers. */
export type ServerMessage =
  | { readonly kind: "paxos"; readonly message: PaxosMessage<Command> }
  /** Failure-detector heartbeat: one per peer per interval, no per-cell data. */
  | { readonly kind: "heartbeat" }
  | ClientRequest
  | ClientResponse;

export interface ServerOptions {
  readonly serverId: ServerId;
  /** Servers this one exchanges failure-detector heartbeats with. */
  readonly peers: readonly ServerId[];
  readonly storage: StoragePort<Command>;
  readonly transport: TransportPort<ServerMessage>;
  readonly scheduler: Scheduler;
  readonly random: Prng;
  readonly observer?: ReplicaObserver | null;
  readonly bugs?: PlantedBugs | null;
  /** Told when the server stops itself because it cannot go on safely (its disk failed). */
  readonly onFatal?: (reason: string) => void;
  /** Told once per cell whose stored node fails its checksum (it is then rebuilt as a learner). */
  readonly onFault?: (cellKey: CellKey, detail: string) => void;
  /** Evict quiet nodes untouched this long (default limits.residentIdleMs; the simulator shortens it). */
  readonly residentIdleMs?: number;
  /** Bytes of held requests (default limits.serverClientRequestBytesMax; tests lower it). */
  readonly requestBytesMax?: number;
  /**
   * Whether it takes membership changes from clients (the control plane's repairs and moves;
   * default false). Anyone holding the colony key can send requests, and a change may remove a
   * cell's members: the server process takes none until a control plane sends them.
   */
  readonly membershipChanges?: boolean;
}

interface HostedNode extends WheelItem {
  readonly cellKey: CellKey;
  readonly replica: Replica<Command, CommandResult>;
  readonly machine: CellMachine;
  /** Server clock time of the last turn that touched the node (for eviction). */
  activeAtMs: number;
  /** Whether the node is in `touched` (its turn's end is still to come). */
  touched: boolean;
  /**
   * When a proposer at work on another server last reached it: an accept or heartbeat of a
   * leader, or a prepare of a candidate.
   */
  proposerHeardMs: number;
  /** When a leader on another server last reached it: an accept or a heartbeat. */
  leaderHeardMs: number;
}

type PendingRequest =
  | {
      readonly kind: "command" | "change";
      readonly client: Address;
      readonly id: number;
      readonly cellKey: CellKey;
      readonly sinceMs: number;
      /** What it holds, as encoded (counted in Server.requestBytes). */
      readonly bytes: number;
    }
  | {
      readonly kind: "read";
      readonly client: Address;
      readonly id: number;
      readonly cellKey: CellKey;
      readonly sinceMs: number;
      readonly bytes: number;
      readonly txn: Transaction;
    };

/** A request relayed to its cell's leader for a client that cannot reach it (Server.relay). */
interface Relay {
  readonly client: Address;
  readonly id: number;
  readonly cellKey: CellKey;
  /** The server it went to: only that server's answer is passed back. */
  readonly leader: ServerId;
  readonly sinceMs: number;
}

/**
 * What the server's nodes send, by kind: the replication protocol's message types, with a
 * heartbeat of round 0 (a commit notice, PROTOCOL.md section 5) counted apart from the rounds
 * that confirm leadership.
 */
export const paxosSendKinds = [
  "prepare",
  "promise",
  "accept",
  "accepted",
  "nack",
  "commit_notice",
  "heartbeat",
  "heartbeat_ack",
  "catchup_request",
  "catchup",
  "campaign",
] as const;
export type PaxosSendKind = (typeof paxosSendKinds)[number];

export function paxosSendKind(message: PaxosMessage<unknown>): PaxosSendKind {
  return message.type === "heartbeat" && message.round === 0 ? "commit_notice" : message.type;
}

export interface ServerCounters {
  turns: number;
  storageBatches: number;
  messagesIn: number;
  /** Messages sent: to nodes of other servers and of this one, and answers to clients. */
  messagesOut: number;
  /** The node-to-node part of messagesOut, by kind. */
  paxosOut: Record<PaxosSendKind, number>;
  requestsOverloaded: number;
  /**
   * Requests that said their cell's leader was unresponsive, made at a node that had just heard
   * from a leader or a candidate: it relayed or redirected them instead of campaigning.
   */
  takeoversDeclined: number;
  /**
   * Of those, the requests this server relayed to the leader its client could not reach, and the
   * answers it passed back; relays the leader never answered were forgotten after
   * limits.serverRelayExpiryMs.
   */
  requestsRelayed: number;
  relayAnswers: number;
  relaysExpired: number;
  /** Campaigns this server's nodes started, by why they started them. */
  campaigns: Record<CampaignCause, number>;
  /** Campaigns this server's nodes won: each is a new leader (a new ballot) for its cell. */
  leadershipsWon: number;
  messagesDropped: number;
  timerFirings: number;
  replicaTicks: number;
  /** Quiet nodes dropped from memory (they stay hosted on disk). */
  nodesEvicted: number;
  /** Cells whose stored node failed its checksum on this server (since it started). */
  faultyNodes: number;
}

/**
 * Bounds of the timer lateness histogram, in milliseconds. A server whose timers run a second
 * late is overloaded (its turns or collections hold the event loop), and its peers' failure
 * detectors suspect it at suspectAfterMs. The server's own timers are measured, at no cost:
 * Node's event-loop delay monitor samples with a timer of its own, which cost an idle process
 * 0.5% of a core on the development machine (every 20 ms), half the idle target.
 */
export const timerLatenessBucketsMs: readonly number[] = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500];

export interface ServerStatus {
  readonly serverId: ServerId;
  readonly residentNodes: number;
  readonly leaders: number;
  readonly armedTimers: number;
  readonly pendingRequests: number;
  /** Bytes of the commands and read transactions those requests hold, as encoded. */
  readonly pendingRequestBytes: number;
  readonly forwardingPointers: number;
  /** Cells stalled on an entry this build cannot apply: the first statusCellsListedMax of them. */
  readonly stalledCells: readonly CellKey[];
  /** All the stalled cells this server keeps (at most stalledCellsMax, the latest). */
  readonly stalledCount: number;
  /**
   * Cells whose stored node failed its checksum (their nodes are learners or not yet rebuilt): the
   * first statusCellsListedMax of them.
   */
  readonly faultyCells: readonly CellKey[];
  /** All the faulty cells this server keeps (at most faultyCellsMax, the latest). */
  readonly faultyCount: number;
  readonly suspectedPeers: readonly ServerId[];
  readonly counters: Readonly<ServerCounters>;
  /**
   * How late the server's timers ran (its heartbeat tick and its nodes' timer wheel), by
   * timerLatenessBucketsMs: the delay its event loop adds to everything due.
   */
  readonly timerLateness: { readonly counts: readonly number[]; readonly sumMs: number };
}

const forwardingPointersMax = 100_000;
/** Distinct node ids shared between cells (there are few servers and small incarnations). */
const internedNodeIdsMax = 1_000_000;
/** Stalled and faulty cells kept; past these the oldest noted is forgotten. */
const stalledCellsMax = 100_000;
const faultyCellsMax = 100_000;
/** Stalled and faulty cells a status lists by key (it counts them all). */
export const statusCellsListedMax = 1_000;

export class Server {
  readonly serverId: ServerId;
  private readonly storage: StoragePort<Command>;
  private readonly transport: TransportPort<ServerMessage>;
  private readonly scheduler: Scheduler;
  private readonly peers: readonly ServerId[];
  /** This server and its peers: the only senders of replica messages and heartbeats. */
  private readonly servers: ReadonlySet<ServerId>;
  private readonly membershipChanges: boolean;
  private readonly env: ReplicaEnvironment;
  private readonly detector: FailureDetector;
  private readonly wheel: TimerWheel<HostedNode>;
  private readonly nodes = new Map<CellKey, HostedNode>();
  private readonly pointers = new Map<CellKey, ForwardingPointer>();
  private readonly stalled = new Set<CellKey>();
  /** Cells whose stored node failed its checksum, with the storage's description. */
  private readonly faulty = new Map<CellKey, string>();
  private readonly nodeIds = new Map<string, NodeId>();
  private readonly out = new Output<Command, CommandResult>();
  private readonly requests = new Map<number, PendingRequest>();
  private nextTag = 1;
  /** Requests relayed to a cell's leader, by the id they carry there (their client's is kept). */
  private readonly relays = new Map<number, Relay>();
  /**
   * Ids of relayed requests start at a random point of 2^44 on every start: a leader's late
   * answer to a relay made before a restart (its transport may still hold it) must not match a
   * new relay of the same cell.
   */
  private nextRelayId: number;
  private readonly inbox = new Fifo<{ from: Address; message: ServerMessage }>();
  private turnScheduled = false;
  private readonly timerLateness = new DurationHistogram(timerLatenessBucketsMs);
  /**
   * The longest lateness of the server's own timers in the current window of
   * limits.ownLatenessMemoryMs and in the one before (silenceAllowanceMs).
   */
  private readonly ownLateness = { windowStartMs: 0, currentMaxMs: 0, previousMaxMs: 0 };
  /** Nodes this turn touched, each once (HostedNode.touched). */
  private readonly touched: HostedNode[] = [];
  private wheelTimer: TimerHandle | null = null;
  private wheelTimerAtMs = Number.POSITIVE_INFINITY;
  private heartbeatTimer: TimerHandle | null = null;
  // Group commit: what waits for the batch after the one in flight.
  private batchInFlight = false;
  private nextWrites: NodeWrite<Command>[] = [];
  private nextRemoved: { cellKey: CellKey; incarnation: number }[] = [];
  private nextPointers: ForwardingPointer[] = [];
  private nextAfterPersist: PaxosMessage<Command>[] = [];
  /** whenDurable callbacks: answered with the batch after the one in flight. */
  private nextDurable: ((error: string | null) => void)[] = [];
  /** whenDurable callbacks of the batch in flight. */
  private durableInFlight: ((error: string | null) => void)[] = [];
  private stopped = false;
  private readonly onFatal: ((reason: string) => void) | null;
  private readonly onFault: ((cellKey: CellKey, detail: string) => void) | null;
  private readonly residentIdleMs: number;
  private readonly requestBytesMax: number;
  /** Sum of the held requests' bytes. */
  private requestBytes = 0;
  /**
   * Quiet nodes the eviction sweep found with entries applied past their latest snapshot: this
   * turn stores a snapshot of each, and a later sweep evicts them (at most a sweep's worth).
   */
  private readonly snapshotsBeforeEviction = new Set<HostedNode>();
  /** Where the eviction sweep goes on; a live iterator over `nodes` (it tolerates deletions). */
  private sweep: Iterator<HostedNode> | null = null;
  readonly counters: ServerCounters = {
    turns: 0,
    storageBatches: 0,
    messagesIn: 0,
    messagesOut: 0,
    paxosOut: Object.fromEntries(paxosSendKinds.map((kind) => [kind, 0])) as Record<PaxosSendKind, number>,
    requestsOverloaded: 0,
    takeoversDeclined: 0,
    requestsRelayed: 0,
    relayAnswers: 0,
    relaysExpired: 0,
    campaigns: Object.fromEntries(campaignCauses.map((cause) => [cause, 0])) as Record<CampaignCause, number>,
    leadershipsWon: 0,
    messagesDropped: 0,
    timerFirings: 0,
    replicaTicks: 0,
    nodesEvicted: 0,
    faultyNodes: 0,
  };

  constructor(options: ServerOptions) {
    this.serverId = options.serverId;
    this.storage = options.storage;
    this.transport = options.transport;
    this.scheduler = options.scheduler;
    this.peers = options.peers.filter((peer) => peer !== options.serverId);
    this.servers = new Set([options.serverId, ...this.peers]);
    this.membershipChanges = options.membershipChanges ?? false;
    this.onFatal = options.onFatal ?? null;
    this.onFault = options.onFault ?? null;
    this.residentIdleMs = options.residentIdleMs ?? limits.residentIdleMs;
    this.requestBytesMax = options.requestBytesMax ?? limits.serverClientRequestBytesMax;
    this.nextRelayId = 1 + options.random.nextUint32() * 4096 + options.random.below(4096);
    const now = this.scheduler.nowMs();
    this.detector = new FailureDetector(this.serverId, now);
    this.wheel = new TimerWheel(limits.timerWheelSlotMs, limits.timerWheelSlots, now);
    this.env = {
      random: options.random,
      isServerAlive: (serverId) => {
        const now = this.scheduler.nowMs();
        return this.detector.isAlive(serverId, now - this.silenceAllowanceMs(now));
      },
      observer: options.observer ?? null,
      bugs: options.bugs ?? null,
      memberships: new MembershipInterner(),
    };
    // In expiry order, which expirePointers relies on; past the bound, the latest are kept.
    const stored = this.storage.pointers(this.scheduler.nowMs());
    stored.sort((a, b) => a.expiresAtMs - b.expiresAtMs);
    for (const pointer of stored.slice(Math.max(0, stored.length - forwardingPointersMax)))
      this.pointers.set(pointer.cellKey, pointer);
    this.transport.onMessage((from, message) => this.receive(from, message));
    this.scheduleHeartbeats();
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  /** Stop all timers; the server no longer reacts. (A crash in the simulator, shutdown in production.) */
  stop(): void {
    if (!this.stopped) {
      const waiting = [...this.durableInFlight, ...this.nextDurable];
      this.durableInFlight = [];
      this.nextDurable = [];
      for (const callback of waiting) callback("the server stopped before the change was durable");
    }
    this.stopped = true;
    if (this.wheelTimer !== null) this.scheduler.clearTimer(this.wheelTimer);
    if (this.heartbeatTimer !== null) this.scheduler.clearTimer(this.heartbeatTimer);
    this.wheelTimer = null;
    this.heartbeatTimer = null;
  }

  /** The storage failed: nothing more may be acknowledged. Stops serving and tells onFatal, once. */
  private fail(reason: string): void {
    if (this.stopped) return;
    this.stop();
    this.onFatal?.(reason);
  }

  // ------------------------------------------------------------------ control-plane entry points

  /** Create this server's founding node of a new cell (a no-op if this server is not a member). */
  createCell(cellKey: CellKey, members: readonly NodeId[]): void {
    const interned = members.map((m) => this.intern(m));
    const self = interned.find((m) => m.serverId === this.serverId);
    // A cell this server hosts already (resident or only on disk, even damaged) is never created
    // again: a fresh node under a stored identity would forget what that identity promised.
    if (self === undefined || this.resident(cellKey) !== null || this.faulty.has(cellKey)) return;
    const machine = new CellMachine();
    const replica = Replica.create(
      { cellKey, node: self, machine, env: this.env },
      initialMembership(interned),
      this.out,
    );
    this.adopt(cellKey, replica, machine);
    this.scheduleTurn();
  }

  /**
   * Calls back once everything the server was asked to do before this call is durable (with null),
   * or with the reason it will not be (the disk refused a batch, or the server stopped). The
   * admin port answers a cell's creation only then.
   */
  whenDurable(callback: (error: string | null) => void): void {
    if (this.stopped) {
      callback("the server is stopped");
      return;
    }
    this.nextDurable.push(callback);
    this.scheduleTurn();
  }

  /** Host a node added to a cell by a membership change; it catches up from its peers. */
  hostJoiningNode(cellKey: CellKey, incarnation: number): void {
    const node: NodeId = { serverId: this.serverId, incarnation };
    const existing = this.resident(cellKey);
    if (existing !== null && existing.replica.node.incarnation >= incarnation) return;
    if (existing !== null) this.evict(existing);
    const machine = new CellMachine();
    const replica = Replica.join({ cellKey, node, machine, env: this.env });
    this.adopt(cellKey, replica, machine);
    this.pointers.delete(cellKey);
    this.out.writes.push({
      cellKey,
      node,
      promised: null,
      entries: [],
      snapshot: { index: 0, membership: replica.membershipState, state: machine.snapshot() },
      truncateThrough: 0,
    });
    this.scheduleTurn();
  }

  /** Hand a command straight to the cell's node, bypassing validation (tests of unknown versions). */
  proposeUnchecked(cellKey: CellKey, command: Command, leaderUnresponsive = false): RequestOutcome | null {
    const node = this.resident(cellKey);
    if (node === null) return null;
    const outcome = node.replica.propose(command, 0, this.scheduler.nowMs(), this.out, leaderUnresponsive);
    this.touch(node);
    this.scheduleTurn();
    return outcome;
  }

  transferLeadership(cellKey: CellKey, target: NodeId): boolean {
    const node = this.resident(cellKey);
    if (node === null) return false;
    const ok = node.replica.transferLeadership(target, this.out);
    this.scheduleTurn();
    return ok;
  }

  // ------------------------------------------------------------------ queries

  cellStatus(cellKey: CellKey): ReplicaStatus | null {
    return this.nodes.get(cellKey)?.replica.status() ?? null;
  }

  /** State digest of the cell's node, for checkers. */
  cellDigest(cellKey: CellKey): { applied: number; snapshot: Uint8Array } | null {
    const node = this.nodes.get(cellKey);
    if (node === undefined) return null;
    return { applied: node.replica.appliedIndex, snapshot: node.machine.snapshot() };
  }

  residentCells(): CellKey[] {
    return [...this.nodes.keys()];
  }

  isAlive(serverId: ServerId): boolean {
    return this.detector.isAlive(serverId, this.scheduler.nowMs());
  }

  /**
   * The transport found nothing listening at a peer's address (its process is gone): the
   * failure detector suspects it until it is heard from again, so the cells it led elect a new
   * leader at their next request instead of after suspectAfterMs.
   */
  peerRefused(serverId: ServerId): void {
    this.detector.refused(serverId);
  }

  status(): ServerStatus {
    let leaders = 0;
    for (const node of this.nodes.values()) if (node.replica.isLeader) leaders += 1;
    return {
      serverId: this.serverId,
      residentNodes: this.nodes.size,
      leaders,
      armedTimers: this.wheel.size,
      pendingRequests: this.requests.size,
      pendingRequestBytes: this.requestBytes,
      forwardingPointers: this.pointers.size,
      stalledCells: firstKeys(this.stalled.keys(), statusCellsListedMax),
      stalledCount: this.stalled.size,
      faultyCells: firstKeys(this.faulty.keys(), statusCellsListedMax),
      faultyCount: this.faulty.size,
      suspectedPeers: this.detector.suspected(this.peers, this.scheduler.nowMs()),
      timerLateness: this.timerLateness.snapshot(),
      counters: {
        ...this.counters,
        paxosOut: { ...this.counters.paxosOut },
        campaigns: { ...this.counters.campaigns },
      },
    };
  }

  // ------------------------------------------------------------------ the turn

  private receive(from: Address, message: ServerMessage): void {
    if (this.stopped) return;
    this.counters.messagesIn += 1;
    if (message.kind === "heartbeat") {
      // Only the failure detector needs it: no turn for it (an idle server wakes for little else).
      // From a server of the colony only: a client's would make the detector think a peer alive.
      if (this.isServer(from)) this.detector.heard(from, this.scheduler.nowMs());
      else this.counters.messagesDropped += 1;
      return;
    }
    if (this.inbox.length >= limits.serverInboxMax) {
      if (message.kind === "request") {
        this.counters.requestsOverloaded += 1;
        this.respond(from, message.id, message.cellKey, {
          type: "error",
          code: "overloaded",
          message: `server ${this.serverId} has ${this.inbox.length} messages waiting; retry after a backoff`,
        });
        this.transport.flush();
      } else {
        this.counters.messagesDropped += 1;
      }
      return;
    }
    this.inbox.push({ from, message });
    this.scheduleTurn();
  }

  private scheduleTurn(): void {
    if (this.turnScheduled || this.stopped) return;
    this.turnScheduled = true;
    this.scheduler.defer(() => this.turn());
  }

  private turn(): void {
    this.turnScheduled = false;
    if (this.stopped) return;
    this.counters.turns += 1;
    const now = this.scheduler.nowMs();
    // Messages a node sends to itself are delivered within the turn; bound the loop anyway.
    const budget = { left: limits.serverInboxMax * 2 };
    this.drainInbox(now, budget);
    for (const node of this.wheel.takeDue(now)) {
      this.counters.replicaTicks += 1;
      node.replica.tick(now, this.out);
      this.touch(node);
    }
    if (this.snapshotsBeforeEviction.size > 0) {
      for (const node of this.snapshotsBeforeEviction) {
        if (this.nodes.get(node.cellKey) === node) node.replica.snapshotApplied(this.out);
      }
      this.snapshotsBeforeEviction.clear();
    }
    this.collectLocal();
    this.drainInbox(now, budget);
    this.finishTurn(now);
    if (this.inbox.length > 0) this.scheduleTurn();
  }

  /** Dispatch inbox messages (and the self-addressed ones they produce) within the budget. */
  private drainInbox(now: number, budget: { left: number }): void {
    while (budget.left > 0) {
      if (this.inbox.length === 0) this.collectLocal();
      const next = this.inbox.shift();
      if (next === undefined) return;
      budget.left -= 1;
      this.dispatch(next.from, next.message, now);
    }
  }

  /** Move this turn's self-addressed sendNow messages into the inbox. */
  private collectLocal(): void {
    const sendNow = this.out.sendNow;
    let kept = 0;
    for (const message of sendNow) {
      if (message.to.serverId === this.serverId)
        this.inbox.push({ from: this.serverId, message: { kind: "paxos", message } });
      else sendNow[kept++] = message;
    }
    sendNow.length = kept;
  }

  private finishTurn(now: number): void {
    const out = this.out;
    for (const message of out.sendNow) this.sendPaxos(message);
    for (const result of out.results) {
      const request = this.takeRequest(result.tag);
      if (request === null) continue;
      const outcome = result.outcome;
      const body: ResponseBody =
        outcome.kind === "command"
          ? { type: "result", result: outcome.result, index: result.index }
          : { type: "membership", result: outcome.result, index: result.index };
      this.respond(request.client, request.id, request.cellKey, body);
    }
    for (const read of out.reads) {
      const request = this.takeRequest(read.tag);
      if (request === null || request.kind !== "read") continue;
      const node = this.nodes.get(request.cellKey);
      if (node === undefined) continue;
      this.respond(request.client, request.id, request.cellKey, {
        type: "read",
        result: node.machine.evaluateRead(request.txn),
        index: node.replica.appliedIndex,
      });
    }
    for (const dropped of out.dropped) {
      const request = this.takeRequest(dropped.tag);
      if (request === null) continue;
      this.respond(request.client, request.id, request.cellKey, {
        type: "redirect",
        leader: dropped.leader,
        members: null,
        epoch: null,
        reason: dropped.reason,
      });
    }
    for (const event of out.events) {
      switch (event.type) {
        case "retired":
          this.retire(event.cellKey, event.epoch, event.members, now);
          break;
        case "stalled":
          this.noteStalled(event.cellKey);
          break;
        case "campaign":
          this.counters.campaigns[event.cause] += 1;
          break;
        case "leader":
          this.counters.leadershipsWon += 1;
          break;
        case "membership":
          break;
      }
    }
    for (const write of out.writes) this.nextWrites.push(write);
    for (const message of out.sendAfterPersist) this.nextAfterPersist.push(message);
    // What may go now goes before the batch starts: a storage batch may hold the event loop for
    // its flush, and a leader's accepts should reach the followers while its own write is made
    // durable, not after. Only sendAfterPersist waits for the batch.
    this.transport.flush();
    if (!this.batchInFlight && this.batchWaiting()) this.startBatch();
    out.reset();
    for (const node of this.touched) {
      node.touched = false;
      node.activeAtMs = now;
      this.wheel.schedule(node, node.replica.wakeAtMs);
    }
    this.touched.length = 0;
    this.armWheelTimer();
    this.transport.flush();
  }

  private startBatch(): void {
    const durable = this.nextDurable;
    this.nextDurable = [];
    if (this.nextWrites.length === 0 && this.nextRemoved.length === 0 && this.nextPointers.length === 0) {
      // Nothing to make durable: what waited may go now.
      const messages = this.nextAfterPersist;
      this.nextAfterPersist = [];
      this.releaseAfterPersist(messages);
      for (const callback of durable) callback(null);
      return;
    }
    const batch: StorageBatch<Command> = {
      writes: this.nextWrites,
      removed: this.nextRemoved,
      pointers: this.nextPointers,
    };
    const afterPersist = this.nextAfterPersist;
    this.nextWrites = [];
    this.nextRemoved = [];
    this.nextPointers = [];
    this.nextAfterPersist = [];
    this.batchInFlight = true;
    this.durableInFlight = durable;
    this.counters.storageBatches += 1;
    this.storage.write(batch, (error) => {
      if (this.stopped) return;
      this.batchInFlight = false;
      if (error !== null) {
        // The disk refused a write: nothing in this batch may be acknowledged. Stop serving.
        const reason = `a storage batch could not be made durable: ${error.message}`;
        for (const callback of this.durableInFlight) callback(reason);
        this.durableInFlight = [];
        this.fail(reason);
        return;
      }
      const answered = this.durableInFlight;
      this.durableInFlight = [];
      for (const callback of answered) callback(null);
      this.releaseAfterPersist(afterPersist);
      if (this.batchWaiting()) this.startBatch();
      this.transport.flush();
    });
  }

  private batchWaiting(): boolean {
    return (
      this.nextDurable.length > 0 ||
      this.nextWrites.length > 0 ||
      this.nextAfterPersist.length > 0 ||
      this.nextRemoved.length > 0 ||
      this.nextPointers.length > 0
    );
  }

  private releaseAfterPersist(messages: readonly PaxosMessage<Command>[]): void {
    let local = false;
    for (const message of messages) {
      if (message.to.serverId === this.serverId) {
        this.inbox.push({ from: this.serverId, message: { kind: "paxos", message } });
        local = true;
      } else {
        this.sendPaxos(message);
      }
    }
    if (local) this.scheduleTurn();
    this.transport.flush();
  }

  private sendPaxos(message: PaxosMessage<Command>): void {
    this.counters.messagesOut += 1;
    this.counters.paxosOut[paxosSendKind(message)] += 1;
    if (message.to.serverId === this.serverId) {
      this.inbox.push({ from: this.serverId, message: { kind: "paxos", message } });
      this.scheduleTurn();
      return;
    }
    this.transport.send(message.to.serverId, { kind: "paxos", message });
  }

  private armWheelTimer(): void {
    const deadline = this.wheel.nextDeadlineMs();
    if (deadline === this.wheelTimerAtMs) return;
    if (this.wheelTimer !== null) this.scheduler.clearTimer(this.wheelTimer);
    this.wheelTimer = null;
    this.wheelTimerAtMs = deadline;
    if (deadline === Number.POSITIVE_INFINITY || this.stopped) return;
    this.wheelTimer = this.setTimedTimer(Math.max(0, deadline - this.scheduler.nowMs()), () => {
      this.wheelTimer = null;
      this.wheelTimerAtMs = Number.POSITIVE_INFINITY;
      this.counters.timerFirings += 1;
      this.scheduleTurn();
    });
  }

  /**
   * A timer of the server whose lateness goes into timerLateness when it runs (one that fires a
   * little early counts as on time).
   */
  private setTimedTimer(delayMs: number, callback: () => void): TimerHandle {
    const dueMs = this.scheduler.nowMs() + delayMs;
    return this.scheduler.setTimer(delayMs, () => {
      const now = this.scheduler.nowMs();
      const lateMs = Math.max(0, now - dueMs);
      this.timerLateness.record(lateMs);
      this.rollOwnLateness(now);
      if (lateMs > this.ownLateness.currentMaxMs) this.ownLateness.currentMaxMs = lateMs;
      callback();
    });
  }

  /**
   * How much longer than usual a silence must last here before it counts: a peer's before its
   * cells' nodes take its server for gone, a proposer's before a client's word that it is
   * unresponsive is taken. It is how late this server's own timers ran lately (up to
   * leaderSilenceMs): a server whose event loop was held that long read its sockets that much
   * later, and under a load that holds its loop, its peers' loops are held too, so their
   * heartbeats and accepts leave late. Silence then means a slow peer, not a gone one, and an
   * election would add to the load (docs/BENCHMARK-LOG.md, "16,384 writers"). A peer whose address
   * refuses connections is gone and is suspected at once, whatever the allowance.
   */
  private silenceAllowanceMs(now: number): number {
    this.rollOwnLateness(now);
    const { currentMaxMs, previousMaxMs } = this.ownLateness;
    return Math.min(limits.leaderSilenceMs, Math.max(currentMaxMs, previousMaxMs));
  }

  private rollOwnLateness(now: number): void {
    const lateness = this.ownLateness;
    const elapsed = now - lateness.windowStartMs;
    if (elapsed < limits.ownLatenessMemoryMs) return;
    lateness.previousMaxMs = elapsed < 2 * limits.ownLatenessMemoryMs ? lateness.currentMaxMs : 0;
    lateness.currentMaxMs = 0;
    lateness.windowStartMs = now;
  }

  private scheduleHeartbeats(): void {
    // A server without peers (a colony of one) still ticks: the tick also expires pointers and
    // requests and evicts quiet nodes.
    if (this.stopped) return;
    // Ticks fall on multiples of the interval of the server's clock (wall time on Node.js), the
    // same instants on every server: peers' heartbeats then arrive together, and an idle server
    // wakes about once per interval to hear them all instead of once per peer.
    // A timer may fire a little before the instant it aimed at: the next tick is then the one
    // after, not one a moment away.
    const interval = limits.heartbeatIntervalMs;
    let delay = interval - (this.scheduler.nowMs() % interval);
    if (delay < interval / 2) delay += interval;
    this.heartbeatTimer = this.setTimedTimer(delay, () => {
      for (const peer of this.peers) this.transport.send(peer, { kind: "heartbeat" });
      this.transport.flush();
      this.expirePointers();
      this.expireRequests();
      this.expireRelays();
      this.evictIdle(this.scheduler.nowMs());
      this.scheduleHeartbeats();
    });
  }

  // ------------------------------------------------------------------ dispatch

  private isServer(address: Address): boolean {
    return this.servers.has(address);
  }

  /** Why this server does not take a (well-shaped) change request, or null. */
  private changeProblem(body: RequestBody): string | null {
    if (body.type !== "change") return null;
    if (!this.membershipChanges)
      return `server ${this.serverId} takes no membership changes from clients (they are the control plane's)`;
    const added = body.change.add;
    if (added !== null && !this.servers.has(added))
      return `a membership change may add a node only on a server of the colony, not on ${JSON.stringify(added)}`;
    return null;
  }

  private dispatch(from: Address, message: ServerMessage, now: number): void {
    switch (message.kind) {
      case "heartbeat":
        // Taken in receive(), without a turn.
        return;
      case "paxos": {
        const paxos = message.message;
        // A node's messages come from its own server, one of the colony's: one from elsewhere (a
        // client, which holds the colony key too) or that claims another sender is dropped
        // before it can reach a replica.
        if (paxos.from.serverId !== from || paxos.to.serverId !== this.serverId || !this.isServer(from)) {
          this.counters.messagesDropped += 1;
          return;
        }
        if (from !== this.serverId) this.detector.heard(from, now);
        let node = this.resident(paxos.cellKey);
        if (node === null && this.faulty.has(paxos.cellKey)) node = this.rebuild(paxos.cellKey, paxos.to);
        if (node === null || node.replica.node.incarnation !== paxos.to.incarnation) {
          // Addressed to a node this server does not host (any more): an old incarnation, or a
          // cell that moved away. Dropping is always safe.
          this.counters.messagesDropped += 1;
          return;
        }
        if (from !== this.serverId && isProposerAtWork(paxos.type)) {
          node.proposerHeardMs = now;
          if (paxos.type !== "prepare") node.leaderHeardMs = now;
        }
        node.replica.step(paxos, now, this.out);
        this.touch(node);
        return;
      }
      case "request":
        this.onRequest(from, message, now);
        return;
      case "response":
        this.onRelayAnswer(from, message);
        return;
    }
  }

  private onRequest(client: Address, request: ClientRequest, now: number): void {
    const { cellKey, id, body } = request;
    const keyProblem = cellKeyProblem(cellKey);
    if (keyProblem !== null) {
      this.respond(client, id, cellKey, { type: "error", code: "invalid", message: keyProblem });
      return;
    }
    const shapeProblem = requestShapeProblem(body) ?? this.changeProblem(body);
    if (shapeProblem !== null) {
      this.respond(client, id, cellKey, { type: "error", code: "invalid", message: shapeProblem });
      return;
    }
    const node = this.resident(cellKey);
    if (node === null) {
      const fault = this.faulty.get(cellKey);
      if (fault !== undefined) {
        this.respond(client, id, cellKey, {
          type: "error",
          code: "faulty",
          message: `the node of cell ${cellKey} on server ${this.serverId} lost its stored state (${fault}); ask another node`,
        });
        return;
      }
      this.respondNoNode(client, id, cellKey);
      return;
    }
    if (body.type === "describe") {
      // The node's hint names whoever it last followed, a candidate or a server gone since
      // included: a describe names a leader only while one is heard from (or this node leads).
      const status = node.replica.status();
      const current =
        status.role === "leader" ||
        now - node.leaderHeardMs < limits.leaderSilenceMs + this.silenceAllowanceMs(now);
      this.respond(client, id, cellKey, {
        type: "status",
        status: current ? status : { ...status, leader: null },
      });
      return;
    }
    if (body.type === "read" && body.consistency === "eventual") {
      const problem = this.readProblem(body.txn);
      if (problem !== null) {
        this.respond(client, id, cellKey, { type: "error", code: "invalid", message: problem });
        return;
      }
      const status = node.replica.status();
      if (status.stalled !== null) {
        this.respond(client, id, cellKey, { type: "error", code: "stalled", message: status.stalled });
      } else if (
        status.role === "joining" ||
        (status.role === "learner" && status.applied === 0) ||
        node.replica.appliedIndex < body.watermark
      ) {
        this.respond(client, id, cellKey, {
          type: "error",
          code: "behind",
          message: `node ${formatNodeId(node.replica.node)} has applied ${node.replica.appliedIndex}, the session has seen ${body.watermark}`,
        });
      } else {
        this.respond(client, id, cellKey, {
          type: "read",
          result: node.machine.evaluateRead(body.txn),
          index: node.replica.appliedIndex,
        });
      }
      return;
    }
    if (this.requests.size >= limits.serverClientRequestsMax) {
      this.counters.requestsOverloaded += 1;
      this.respond(client, id, cellKey, {
        type: "error",
        code: "overloaded",
        message: `server ${this.serverId} holds ${this.requests.size} requests; retry after a backoff`,
      });
      return;
    }
    const tag = this.nextTag++;
    let outcome: RequestOutcome;
    switch (body.type) {
      case "command": {
        const problem = validateCommand(body.command);
        if (problem !== null) {
          this.respond(client, id, cellKey, { type: "error", code: "invalid", message: problem.message });
          return;
        }
        const takeover = this.takeoverAllowed(node, body, now);
        if (body.leaderUnresponsive && !takeover && this.relay(node, client, request, now)) return;
        const bytes = commandBytes(body.command);
        if (!this.mayHold(client, id, cellKey, bytes)) return;
        this.hold(tag, { kind: "command", client, id, cellKey, sinceMs: now, bytes });
        outcome = node.replica.propose(body.command, tag, now, this.out, takeover);
        break;
      }
      case "read": {
        const problem = this.readProblem(body.txn);
        if (problem !== null) {
          this.respond(client, id, cellKey, { type: "error", code: "invalid", message: problem });
          return;
        }
        const takeover = this.takeoverAllowed(node, body, now);
        if (body.leaderUnresponsive && !takeover && this.relay(node, client, request, now)) return;
        const bytes = transactionBytes(body.txn);
        if (!this.mayHold(client, id, cellKey, bytes)) return;
        this.hold(tag, { kind: "read", client, id, cellKey, sinceMs: now, bytes, txn: body.txn });
        outcome = node.replica.read(tag, now, this.out, takeover);
        break;
      }
      case "change":
        this.hold(tag, { kind: "change", client, id, cellKey, sinceMs: now, bytes: 0 });
        outcome = node.replica.proposeChange(body.change, tag, now, this.out);
        break;
    }
    this.touch(node);
    this.onOutcome(tag, outcome);
  }

  /**
   * Whether a request's claim that the leader is unresponsive may make this node campaign: only
   * if no proposer has reached the node for limits.leaderSilenceMs. A client's attempt times out
   * at a leader that is slow under load as well as at one that is gone; a leader whose accepts
   * and heartbeats still arrive is the first, and an election would only add to the load (the
   * node redirects to it instead). So is a candidate whose prepares arrive: a second campaign
   * would only preempt it, and the two would duel (the node redirects to the candidate it
   * promised). A proposer that is gone falls silent, and its server's connections close, so the
   * failure detector stops vouching for it before long either way.
   */
  private takeoverAllowed(node: HostedNode, body: RequestBody, now: number): boolean {
    if (!("leaderUnresponsive" in body) || !body.leaderUnresponsive) return false;
    if (now - node.proposerHeardMs >= limits.leaderSilenceMs + this.silenceAllowanceMs(now)) return true;
    this.counters.takeoversDeclined += 1;
    return false;
  }

  /**
   * Relays a request whose client says the cell's leader is unresponsive, made at a node that
   * still hears that leader (takeoverAllowed declined it): the leader is alive and reaches this
   * node, only not the client. Its server gets the request from this one, unmarked, so it is
   * never relayed twice, and answers this server, which passes the answer back under the
   * client's id. The command keeps its session and sequence number, so a copy that arrives
   * again by another path is answered from the session, not applied twice. False when the
   * request is the node's to handle after all: this node is not a follower (it leads, campaigns,
   * learns or joins), knows no leader on another server, thinks that server gone, has not heard
   * the cell's proposer for limits.relayProposerHeardMs (a leader cut off from it too: the node
   * redirects until the silence lets it take over), or holds limits.serverRelaysMax relays.
   */
  private relay(node: HostedNode, client: Address, request: ClientRequest, now: number): boolean {
    // (A status is made only for requests that call a leader unresponsive, which are few.)
    const { role, leader } = node.replica.status();
    if (role !== "follower" || leader === null || leader.serverId === this.serverId) return false;
    if (
      now - node.proposerHeardMs > limits.relayProposerHeardMs ||
      this.relays.size >= limits.serverRelaysMax
    )
      return false;
    if (!this.detector.isAlive(leader.serverId, now - this.silenceAllowanceMs(now))) return false;
    const body = request.body;
    if (!("leaderUnresponsive" in body)) return false; // eventual reads, changes, describes
    const relayId = this.nextRelayId++;
    this.relays.set(relayId, {
      client,
      id: request.id,
      cellKey: request.cellKey,
      leader: leader.serverId,
      sinceMs: now,
    });
    this.counters.requestsRelayed += 1;
    this.counters.messagesOut += 1;
    this.transport.send(leader.serverId, {
      kind: "request",
      id: relayId,
      cellKey: request.cellKey,
      body: { ...body, leaderUnresponsive: false },
    });
    return true;
  }

  /** A leader's answer to a relayed request: passed back to its client under the client's id. */
  private onRelayAnswer(from: Address, response: ClientResponse): void {
    const relay = this.relays.get(response.id);
    if (relay === undefined || relay.cellKey !== response.cellKey || relay.leader !== from) {
      this.counters.messagesDropped += 1; // servers answer requests; they take only their relays' answers
      return;
    }
    this.relays.delete(response.id);
    this.counters.relayAnswers += 1;
    this.respond(relay.client, relay.id, relay.cellKey, response.body, relay.leader);
  }

  private readProblem(txn: Transaction): string | null {
    const problem = validateTransaction(txn);
    if (problem !== null) return problem.message;
    if (txn.writes.length > 0) return "a read may not write: send writes as a transaction";
    return null;
  }

  private onOutcome(tag: number, outcome: RequestOutcome): void {
    if (outcome.status === "queued") return;
    const request = this.takeRequest(tag);
    if (request === null) return;
    const { client, id, cellKey } = request;
    switch (outcome.status) {
      case "redirect":
        this.respond(client, id, cellKey, {
          type: "redirect",
          leader: outcome.leader,
          members: null,
          epoch: null,
          reason: "not_leader",
        });
        break;
      case "overloaded":
        this.counters.requestsOverloaded += 1;
        this.respond(client, id, cellKey, {
          type: "error",
          code: "overloaded",
          message: `cell ${cellKey} has a full request queue; retry after a backoff`,
        });
        break;
      case "stalled":
        this.respond(client, id, cellKey, { type: "error", code: "stalled", message: outcome.reason });
        break;
      case "retired":
        this.respondNoNode(client, id, cellKey);
        break;
    }
  }

  private respondNoNode(client: Address, id: number, cellKey: CellKey): void {
    const pointer = this.pointers.get(cellKey);
    if (pointer !== undefined) {
      this.respond(client, id, cellKey, {
        type: "redirect",
        leader: null,
        members: pointer.members,
        epoch: pointer.epoch,
        reason: "moved",
      });
      return;
    }
    this.respond(client, id, cellKey, {
      type: "error",
      code: "unknown_cell",
      message: `server ${this.serverId} hosts no node of cell ${cellKey}`,
    });
  }

  /**
   * Whether the held requests have room for `bytes` more; if not, the client is told the server
   * is overloaded (a request larger than the whole bound is refused as invalid: it never fits).
   */
  private mayHold(client: Address, id: number, cellKey: CellKey, bytes: number): boolean {
    if (this.requestBytes + bytes <= this.requestBytesMax) return true;
    if (bytes > this.requestBytesMax) {
      this.respond(client, id, cellKey, {
        type: "error",
        code: "invalid",
        message: `the request holds ${bytes} bytes, more than server ${this.serverId} holds for all requests (${this.requestBytesMax}); split it`,
      });
      return false;
    }
    this.counters.requestsOverloaded += 1;
    this.respond(client, id, cellKey, {
      type: "error",
      code: "overloaded",
      message: `server ${this.serverId} holds ${this.requestBytes} bytes of requests; retry after a backoff`,
    });
    return false;
  }

  private hold(tag: number, request: PendingRequest): void {
    this.requests.set(tag, request);
    this.requestBytes += request.bytes;
  }

  private takeRequest(tag: number): PendingRequest | null {
    const request = this.requests.get(tag);
    if (request === undefined) return null;
    this.requests.delete(tag);
    this.requestBytes -= request.bytes;
    return request;
  }

  /** Answers a client's request; `relayedFrom` names the leader's server of a relayed answer. */
  private respond(
    client: Address,
    id: number,
    cellKey: CellKey,
    body: ResponseBody,
    relayedFrom?: ServerId,
  ): void {
    this.counters.messagesOut += 1;
    this.transport.send(
      client,
      relayedFrom === undefined
        ? { kind: "response", id, cellKey, body }
        : { kind: "response", id, cellKey, body, relayedFrom },
    );
  }

  // ------------------------------------------------------------------ residency

  /** One shared object per node id: resident cells would otherwise each hold copies. */
  private intern(node: NodeId): NodeId {
    const key = `${node.serverId}#${node.incarnation}`;
    const known = this.nodeIds.get(key);
    if (known !== undefined) return known;
    const copy: NodeId = { serverId: node.serverId, incarnation: node.incarnation };
    if (this.nodeIds.size < internedNodeIdsMax) this.nodeIds.set(key, copy);
    return copy;
  }

  /** The cell's node, loading it from storage the first time the cell is touched. */
  private resident(cellKey: CellKey): HostedNode | null {
    const node = this.nodes.get(cellKey);
    if (node !== undefined) return node;
    let loaded: ReturnType<typeof this.storage.load>;
    try {
      loaded = this.storage.load(cellKey);
    } catch (error) {
      // The storage cannot say what the node promised (a failed checkpoint, a closed
      // environment): nothing more may be acknowledged. Stop serving, as a failed batch does.
      this.fail(`the storage could not load cell ${cellKey}: ${(error as Error).message}`);
      return null;
    }
    if (loaded.status === "corrupt") {
      // A cell that moved away from this server (its forwarding pointer lists other servers only)
      // left the damaged record its learner stood for: the pointer answers for the cell, not a
      // fault. A cell still hosted here under a newer incarnation is faulty as before.
      if (!this.movedAway(cellKey)) this.noteFaulty(cellKey, loaded.detail);
      return null;
    }
    if (loaded.status !== "found") return null;
    const machine = new CellMachine();
    const replica = Replica.restore({ cellKey, node: loaded.node.node, machine, env: this.env }, loaded.node);
    return this.adopt(cellKey, replica, machine);
  }

  private adopt(
    cellKey: CellKey,
    replica: Replica<Command, CommandResult>,
    machine: CellMachine,
  ): HostedNode {
    const node: HostedNode = {
      cellKey,
      replica,
      machine,
      wheelSlot: -1,
      activeAtMs: this.scheduler.nowMs(),
      touched: false,
      proposerHeardMs: Number.NEGATIVE_INFINITY,
      leaderHeardMs: Number.NEGATIVE_INFINITY,
    };
    this.nodes.set(cellKey, node);
    this.touch(node);
    return node;
  }

  /**
   * Evict nodes that have been quiet and untouched for residentIdleMs, looking at a bounded
   * number per call. A node is evicted only when nothing of it is in flight: no armed timer, no
   * request waiting for it, and no storage batch pending at all (its durable state is complete),
   * so loading it again is exactly a restart of that one node.
   */
  private evictIdle(now: number): void {
    if (this.stopped || this.nodes.size === 0 || this.batchInFlight || this.batchWaiting()) return;
    let waiting: Set<CellKey> | null = null;
    if (this.requests.size > 0) {
      waiting = new Set();
      for (const request of this.requests.values()) waiting.add(request.cellKey);
    }
    const cutoff = now - this.residentIdleMs;
    for (let looked = 0; looked < limits.residentSweepNodesPerInterval; looked++) {
      this.sweep ??= this.nodes.values();
      const next = this.sweep.next();
      if (next.done === true) {
        this.sweep = null;
        return;
      }
      const node = next.value;
      if (
        node.activeAtMs > cutoff ||
        node.wheelSlot !== -1 ||
        node.replica.wakeAtMs !== Number.POSITIVE_INFINITY ||
        waiting?.has(node.cellKey) === true
      ) {
        continue;
      }
      if (node.replica.appliedPastSnapshot) {
        // Stored first, in a turn, and evicted at a later sweep once durable (Replica.snapshotApplied).
        this.snapshotsBeforeEviction.add(node);
        this.scheduleTurn();
        continue;
      }
      this.counters.nodesEvicted += 1;
      this.evict(node);
    }
  }

  /**
   * The cell's stored node failed its checksum. It must not act on what is stored; it is rebuilt
   * as a non-voting learner (Replica.learn) as soon as a peer's message names its identity, and
   * clients are told it is faulty until then. The control plane replaces it.
   */
  private noteFaulty(cellKey: CellKey, detail: string): void {
    if (!this.faulty.has(cellKey)) {
      this.counters.faultyNodes += 1;
      this.onFault?.(cellKey, detail);
    }
    this.faulty.delete(cellKey);
    this.faulty.set(cellKey, detail);
    forgetOldestPast(this.faulty, faultyCellsMax);
  }

  /** The cell's node cannot apply its next entry (an operation this build does not know). */
  private noteStalled(cellKey: CellKey): void {
    this.stalled.delete(cellKey);
    this.stalled.add(cellKey);
    forgetOldestPast(this.stalled, stalledCellsMax);
  }

  /** A learner for a faulty node, under the identity a peer's message gives it. */
  private rebuild(cellKey: CellKey, node: NodeId): HostedNode {
    const machine = new CellMachine();
    const replica = Replica.learn({ cellKey, node: this.intern(node), machine, env: this.env });
    return this.adopt(cellKey, replica, machine);
  }

  private evict(node: HostedNode): void {
    this.wheel.cancel(node);
    if (node.touched) {
      node.touched = false;
      this.touched.splice(this.touched.indexOf(node), 1);
    }
    this.nodes.delete(node.cellKey);
  }

  /** Note that this turn touched `node`: its wheel deadline is set again when the turn ends. */
  private touch(node: HostedNode): void {
    if (node.touched) return;
    node.touched = true;
    this.touched.push(node);
  }

  private retire(cellKey: CellKey, epoch: number, members: readonly NodeId[], now: number): void {
    const node = this.nodes.get(cellKey);
    if (node === undefined) return;
    this.evict(node);
    const pointer: ForwardingPointer = {
      cellKey,
      epoch,
      members,
      expiresAtMs: now + limits.forwardingPointerMs,
    };
    this.pointers.delete(cellKey);
    this.pointers.set(cellKey, pointer);
    forgetOldestPast(this.pointers, forwardingPointersMax);
    // A cell that moved away is no longer this server's: late messages of its peers are dropped
    // rather than build a learner again, and clients get the forwarding pointer, not "faulty" or
    // "stalled". (A learner retired under an old incarnation while the cell lists a newer one of
    // this server, after a stale peer's message rebuilt it so, leaves the cell faulty here.)
    const movedAway = this.movedAway(cellKey);
    if (movedAway) {
      this.faulty.delete(cellKey);
      this.stalled.delete(cellKey);
    }
    // A learner stands for a damaged record (rebuilt from it, persisting nothing), whose
    // incarnation it cannot prove: its removal deletes that record only once the cell has moved
    // to other servers, where no incarnation of this server is a member any more. Otherwise the
    // record stays, and loads as corrupt.
    if (!node.replica.isLearner || movedAway)
      this.nextRemoved.push({ cellKey, incarnation: node.replica.node.incarnation });
    this.nextPointers.push(pointer);
  }

  /** This server retired the cell, and the members its forwarding pointer names are all elsewhere. */
  private movedAway(cellKey: CellKey): boolean {
    const pointer = this.pointers.get(cellKey);
    return pointer !== undefined && !pointer.members.some((m) => m.serverId === this.serverId);
  }

  /** Forget requests their cell never answered (tags are issued in order, so the oldest come first). */
  private expireRequests(): void {
    const cutoff = this.scheduler.nowMs() - limits.serverRequestExpiryMs;
    for (const [tag, request] of this.requests) {
      if (request.sinceMs > cutoff) break;
      this.takeRequest(tag);
    }
  }

  private expireRelays(): void {
    const cutoff = this.scheduler.nowMs() - limits.serverRelayExpiryMs;
    for (const [relayId, relay] of this.relays) {
      if (relay.sinceMs > cutoff) break; // insertion order is age order
      this.relays.delete(relayId);
      this.counters.relaysExpired += 1;
    }
  }

  private expirePointers(): void {
    const now = this.scheduler.nowMs();
    for (const [cellKey, pointer] of this.pointers) {
      if (pointer.expiresAtMs > now) break; // insertion order is expiry order
      this.pointers.delete(cellKey);
    }
  }
}

const requestTypes = new Set(["command", "read", "change", "describe"]);

/** What is structurally wrong with a request body that did not come from our own client, or null. */
function requestShapeProblem(body: unknown): string | null {
  if (typeof body !== "object" || body === null) return "a request needs a body object";
  const type = (body as { type?: unknown }).type;
  if (typeof type !== "string" || !requestTypes.has(type)) {
    return `unknown request type ${JSON.stringify(type)}; expected one of ${[...requestTypes].join(", ")}`;
  }
  if (type === "read") {
    const read = body as { consistency?: unknown; txn?: unknown; watermark?: unknown };
    if (read.consistency !== "linearizable" && read.consistency !== "eventual") {
      return `read consistency must be "linearizable" or "eventual", got ${JSON.stringify(read.consistency)}`;
    }
    if (typeof read.txn !== "object" || read.txn === null) return "a read needs a transaction";
    if (read.consistency === "eventual" && (typeof read.watermark !== "number" || !(read.watermark >= 0))) {
      return "an eventual read needs a watermark (a log index, 0 or more)";
    }
  }
  if (
    type === "command" &&
    (typeof (body as { command?: unknown }).command !== "object" ||
      (body as { command?: unknown }).command === null)
  ) {
    return "a command request needs a command";
  }
  if (type === "change") {
    const change = (body as { change?: unknown }).change as
      | { add?: unknown; remove?: unknown }
      | null
      | undefined;
    if (typeof change !== "object" || change === null) return "a change request needs a membership change";
    if (change.add !== null && (typeof change.add !== "string" || change.add.length === 0)) {
      return "a membership change's add must be a server id or null";
    }
    const remove = change.remove as { serverId?: unknown; incarnation?: unknown } | null;
    if (
      remove !== null &&
      (typeof remove !== "object" ||
        typeof remove.serverId !== "string" ||
        !Number.isSafeInteger(remove.incarnation))
    ) {
      return "a membership change's remove must be a node id {serverId, incarnation} or null";
    }
  }
  return null;
}

/** A message only a proposer at work sends: a leader's accepts and heartbeats, a candidate's prepares. */
function isProposerAtWork(type: PaxosMessage<Command>["type"]): boolean {
  return type === "accept" || type === "heartbeat" || type === "prepare";
}

/** Forgets the first-inserted keys of `collection` past `max` of them (latest-kept bounds). */
function forgetOldestPast(collection: Map<CellKey, unknown> | Set<CellKey>, max: number): void {
  for (const key of collection.keys()) {
    if (collection.size <= max) return;
    collection.delete(key);
  }
}

/** At most `max` of the keys, in their order. */
function firstKeys(keys: Iterable<CellKey>, max: number): CellKey[] {
  const listed: CellKey[] = [];
  for (const key of keys) {
    if (listed.length >= max) break;
    listed.push(key);
  }
  return listed;
}
