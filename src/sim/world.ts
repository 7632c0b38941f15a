/**
 * SimWorld: a whole colony in one process, in simulated time, running the real server and client
 * code over simulated ports. Scenario tests drive it directly; `runSimulation` (run.ts) drives it
 * with a seeded random workload and fault schedule and then checks everything.
 */

import type { ClientRequest, ClientResponse } from "../cell/index.ts";
import {
  type Command,
  decodeClientMessage,
  encodeClientMessage,
  encodeCommand,
  type Transaction,
  type TxnResult,
} from "../cell/index.ts";
import { type CellResolver, type Consistency, PhysaliaClient, type ResumedSession } from "../client/index.ts";
import {
  type Address,
  assert,
  type CellKey,
  formatNodeId,
  hashBytes,
  limits,
  type NodeId,
  Prng,
  RunningHash,
  type ServerId,
  toHex,
} from "../core/index.ts";
import type {
  LogValue,
  MembershipChange,
  MembershipResult,
  PlantedBugs,
  ReplicaObserver,
} from "../paxos/index.ts";
import { Server, type ServerMessage, serverMessageCodec } from "../server/index.ts";
import { damagingCodec, type WireDamage } from "./corrupt-wire.ts";
import {
  EventQueue,
  type MessageCodec,
  SimClock,
  SimDisk,
  SimNetwork,
  SimScheduler,
  SimTransport,
} from "./kernel.ts";

export interface WorldOptions {
  readonly seed: number;
  readonly servers: number;
  readonly bugs?: PlantedBugs | null;
  /** Clock rates of servers are drawn from [1/maxRate, maxRate]; offsets from [0, maxOffsetMs]. */
  readonly clockRateMax?: number;
  readonly clockOffsetMsMax?: number;
  /** Servers evict quiet nodes untouched this long (default: production's limits.residentIdleMs). */
  readonly residentIdleMs?: number;
  /**
   * The share of delivered messages damaged on the wire (sim/corrupt-wire.ts), for servers and
   * clients alike; 0 by default. Damaged messages break what Paxos assumes of its peers: a run
   * with them checks that nothing throws, not its safety.
   */
  readonly wireDamageRate?: number;
  /**
   * Disks of different speeds: each server's writes take about a latency drawn for it from
   * 0.2 ms to this (log-uniform; default: every disk 0.2 ms, faster than any network hop). With
   * disks slower than the network, a message sent before its write is durable arrives before
   * the write ends, and a crash then loses what the message promised.
   */
  readonly diskLatencyMsMax?: number;
}

/** A simulated disk's write latency unless WorldOptions.diskLatencyMsMax says otherwise. */
const diskLatencyMsMin = 0.2;

/** One operation of the client history, as the linearizability checker sees it. */
export interface HistoryEntry {
  readonly id: number;
  readonly client: number;
  readonly cellKey: CellKey;
  readonly txn: Transaction;
  readonly consistency: Consistency | "write";
  readonly callMs: number;
  returnMs: number | null;
  output: TxnResult | undefined;
  /** Log index of the answer (writes: the slot the command applied at). */
  index: number | null;
  /** For writes: the session and sequence that identify the command in the log. */
  command: { session: number; seq: number } | null;
  /** How an operation ended without a result. */
  failure: string | null;
}

export interface ServerSlot {
  readonly id: ServerId;
  readonly disk: SimDisk<Command>;
  readonly clock: SimClock;
  scheduler: SimScheduler;
  transport: SimTransport<ServerMessage>;
  server: Server | null;
  readonly random: Prng;
}

export interface ClientSlot {
  readonly index: number;
  readonly address: Address;
  readonly client: PhysaliaClient;
  readonly scheduler: SimScheduler;
}

export class SimWorld {
  readonly seed: number;
  readonly random: Prng;
  readonly queue = new EventQueue();
  readonly trace = new RunningHash();
  readonly network: SimNetwork;
  readonly servers: ServerSlot[] = [];
  readonly clients: ClientSlot[] = [];
  /** cellKey -> current members (what the control plane knows). */
  readonly cells = new Map<CellKey, NodeId[]>();
  readonly history: HistoryEntry[] = [];
  readonly violations: string[] = [];
  /** cellKey -> slot -> canonical description of the chosen value. */
  private readonly chosen = new Map<CellKey, Map<number, string>>();
  private readonly bugs: PlantedBugs | null;
  private nextClientAddress = 1;
  private nextOperationId = 1;
  readonly observer: ReplicaObserver;
  /** Count of log values applied across all nodes (a progress measure). */
  appliedCount = 0;
  /** Counters of servers that crashed (their Server objects are gone), added at each crash. */
  private readonly crashedCounters = { nodesEvicted: 0, requestsRelayed: 0 };
  private readonly residentIdleMs: number;
  /** Messages damaged on the wire so far (with wireDamageRate). */
  readonly wireDamage: WireDamage = { damaged: 0, decoded: 0, misdirected: 0 };
  private readonly serverCodec: MessageCodec<ServerMessage>;
  private readonly clientCodec: MessageCodec<ClientRequest | ClientResponse>;

  constructor(options: WorldOptions) {
    this.seed = options.seed;
    this.random = new Prng(options.seed);
    this.bugs = options.bugs ?? null;
    this.residentIdleMs = options.residentIdleMs ?? limits.residentIdleMs;
    this.network = new SimNetwork(this.queue, this.random.fork(), this.trace, describeMessage);
    const damageRate = options.wireDamageRate ?? 0;
    // Forked only when used: runs without damage keep the streams (and traces) they always had.
    const damageRandom = damageRate > 0 ? this.random.fork() : null;
    this.serverCodec =
      damageRandom === null
        ? serverMessageCodec
        : damagingCodec(serverMessageCodec, damageRandom, damageRate, this.wireDamage);
    this.clientCodec =
      damageRandom === null
        ? clientMessageCodec
        : damagingCodec(clientMessageCodec, damageRandom, damageRate, this.wireDamage);
    this.observer = {
      chosen: (cellKey, slot, value) => this.onChosen(cellKey, slot, value as LogValue<Command>),
      applied: (cellKey, node, slot, value) =>
        this.onApplied(cellKey, node, slot, value as LogValue<Command>),
    };
    const rateMax = options.clockRateMax ?? 1;
    const offsetMax = options.clockOffsetMsMax ?? 0;
    const ids = Array.from({ length: options.servers }, (_, i) => `s${i + 1}`);
    for (const id of ids) {
      const random = this.random.fork();
      const rate = rateMax === 1 ? 1 : Math.exp((random.float() * 2 - 1) * Math.log(rateMax));
      const clock = new SimClock(this.queue, random.float() * offsetMax, rate);
      const disk = new SimDisk<Command>(this.queue, random.fork());
      const scheduler = new SimScheduler(this.queue, clock);
      const transport = new SimTransport<ServerMessage>(id, this.network, this.serverCodec);
      const slot: ServerSlot = { id, disk, clock, scheduler, transport, server: null, random };
      this.servers.push(slot);
    }
    // Drawn from a stream of its own, so that runs with fast disks keep the traces they had.
    const latencyMax = options.diskLatencyMsMax ?? 0;
    if (latencyMax > diskLatencyMsMin) {
      const latencies = this.random.fork();
      for (const slot of this.servers)
        slot.disk.writeLatencyMs = diskLatencyMsMin * (latencyMax / diskLatencyMsMin) ** latencies.float();
    }
    for (const slot of this.servers) this.boot(slot);
  }

  get nowMs(): number {
    return this.queue.nowMs;
  }

  serverIds(): ServerId[] {
    return this.servers.map((s) => s.id);
  }

  slot(id: ServerId): ServerSlot {
    const slot = this.servers.find((s) => s.id === id);
    assert(slot !== undefined, `no server ${id}`);
    return slot;
  }

  server(id: ServerId): Server {
    const server = this.slot(id).server;
    assert(server !== null, `server ${id} is down`);
    return server;
  }

  isUp(id: ServerId): boolean {
    return this.slot(id).server !== null;
  }

  private boot(slot: ServerSlot): void {
    slot.scheduler = new SimScheduler(this.queue, slot.clock);
    slot.transport = new SimTransport<ServerMessage>(slot.id, this.network, this.serverCodec);
    slot.server = new Server({
      serverId: slot.id,
      peers: this.serverIds(),
      // The simulator's control client moves and repairs cells through change requests.
      membershipChanges: true,
      storage: slot.disk,
      transport: slot.transport,
      scheduler: slot.scheduler,
      random: slot.random.fork(),
      observer: this.observer,
      bugs: this.bugs,
      residentIdleMs: this.residentIdleMs,
    });
  }

  /** Quiet nodes evicted from memory (and later loaded again) over the whole run. */
  get nodesEvicted(): number {
    return this.counterSum("nodesEvicted");
  }

  /** Requests the servers relayed to a leader their client could not reach, crashed ones included. */
  get requestsRelayed(): number {
    return this.counterSum("requestsRelayed");
  }

  /** A server counter summed over every server, running or crashed. */
  private counterSum(name: keyof SimWorld["crashedCounters"]): number {
    let sum = this.crashedCounters[name];
    for (const slot of this.servers) sum += slot.server?.counters[name] ?? 0;
    return sum;
  }

  // ------------------------------------------------------------------ faults

  /** kill -9: the process stops at once; the write in flight is lost or torn. */
  crash(id: ServerId, tearProbability = 0.5): void {
    const slot = this.slot(id);
    if (slot.server === null) return;
    this.trace.addString(`crash ${id}`);
    for (const name of ["nodesEvicted", "requestsRelayed"] as const)
      this.crashedCounters[name] += slot.server.counters[name];
    slot.server.stop();
    slot.server = null;
    slot.scheduler.kill();
    slot.transport.close();
    slot.disk.crash(tearProbability);
  }

  restart(id: ServerId): void {
    const slot = this.slot(id);
    if (slot.server !== null) return;
    this.trace.addString(`restart ${id}`);
    this.boot(slot);
  }

  /** Cut every link between the two groups, in both directions. */
  partition(groupA: readonly ServerId[], groupB: readonly ServerId[]): void {
    for (const a of groupA) {
      for (const b of groupB) {
        this.network.block(a, b);
        this.network.block(b, a);
      }
    }
  }

  /** Cut the links from `from` to `to` only (an asymmetric partition). */
  partitionOneWay(from: readonly ServerId[], to: readonly ServerId[]): void {
    for (const a of from) for (const b of to) this.network.block(a, b);
  }

  /** Isolate a server from every other server (clients still reach it unless `fromClients`). */
  isolate(id: ServerId, fromClients = false): void {
    const others = this.serverIds().filter((s) => s !== id);
    this.partition([id], others);
    if (fromClients)
      this.partition(
        [id],
        this.clients.map((c) => c.address),
      );
  }

  heal(): void {
    this.trace.addString("heal");
    this.network.heal();
  }

  // ------------------------------------------------------------------ cells and control plane

  /** Create a cell on the given servers (default: `size` servers drawn from the seed). */
  createCell(cellKey: CellKey, size = 7, on?: readonly ServerId[]): NodeId[] {
    const servers = on ?? this.random.shuffle(this.serverIds()).slice(0, Math.min(size, this.servers.length));
    const members = servers.map((serverId, i) => ({ serverId, incarnation: i + 1 }));
    this.cells.set(cellKey, members);
    for (const member of members) {
      const server = this.slot(member.serverId).server;
      if (server !== null) server.createCell(cellKey, members);
    }
    return members;
  }

  readonly resolver: CellResolver = {
    members: (cellKey) => this.cells.get(cellKey)?.map((m) => m.serverId) ?? null,
  };

  /**
   * Change a cell's membership through its nodes, as the control plane does, then host the added
   * node. Calls back with the membership result (or an error text).
   */
  changeMembership(
    cellKey: CellKey,
    change: MembershipChange,
    done?: (result: MembershipResult | string) => void,
  ): void {
    const control = this.controlClient();
    control.client.request(cellKey, { type: "change", change }, (outcome) => {
      if (!outcome.ok) {
        done?.(outcome.error.message);
        return;
      }
      const body = outcome.value;
      if (body.type !== "membership") {
        done?.(`unexpected answer ${body.type}`);
        return;
      }
      const result = body.result;
      if (result.status === "applied") {
        const members = (this.cells.get(cellKey) ?? []).filter(
          (m) => change.remove === null || formatNodeId(m) !== formatNodeId(change.remove),
        );
        // A server the colony lacks can be added only by a damaged message (wireDamageRate): the
        // control plane knows no such server, and leaves it out.
        const added = result.added;
        const host = added === null ? undefined : this.servers.find((slot) => slot.id === added.serverId);
        if (added !== null && host !== undefined) {
          members.push(added);
          host.server?.hostJoiningNode(cellKey, added.incarnation);
        }
        this.cells.set(cellKey, members);
      }
      done?.(result);
    });
  }

  private control: ClientSlot | null = null;

  private controlClient(): ClientSlot {
    if (this.control === null) this.control = this.addClient();
    return this.control;
  }

  // ------------------------------------------------------------------ clients and history

  addClient(
    options: {
      clockRate?: number;
      requestTimeoutMs?: number;
      distance?: (serverId: ServerId) => number;
      sessions?: readonly ResumedSession[];
    } = {},
  ): ClientSlot {
    const index = this.nextClientAddress++;
    const address = `c${index}`;
    const clock = new SimClock(this.queue, 0, options.clockRate ?? 1);
    const scheduler = new SimScheduler(this.queue, clock);
    const transport = new SimTransport<ClientRequest | ClientResponse>(
      address,
      this.network,
      this.clientCodec,
    );
    const random = this.random.fork();
    const client = new PhysaliaClient({
      address,
      transport,
      scheduler,
      random,
      resolver: this.resolver,
      ...(options.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: options.requestTimeoutMs }),
      ...(options.distance === undefined ? {} : { distance: options.distance }),
      ...(options.sessions === undefined ? {} : { sessions: options.sessions }),
    });
    const slot: ClientSlot = { index, address, client, scheduler };
    this.clients.push(slot);
    return slot;
  }

  private record(
    client: ClientSlot,
    cellKey: CellKey,
    txn: Transaction,
    consistency: HistoryEntry["consistency"],
  ): HistoryEntry {
    const entry: HistoryEntry = {
      id: this.nextOperationId++,
      client: client.index,
      cellKey,
      txn,
      consistency,
      callMs: this.queue.nowMs,
      returnMs: null,
      output: undefined,
      index: null,
      command: null,
      failure: null,
    };
    this.history.push(entry);
    return entry;
  }

  /** Issue a transaction and record it in the history. Calls back when it ends. */
  transact(
    client: ClientSlot,
    cellKey: CellKey,
    txn: Transaction,
    done?: (entry: HistoryEntry) => void,
  ): HistoryEntry {
    const entry = this.record(client, cellKey, txn, "write");
    client.client.command(cellKey, { type: "txn", txn }, (outcome) => {
      if (outcome.ok && outcome.value.kind === "txn") {
        entry.returnMs = this.queue.nowMs;
        entry.output = outcome.value.result;
        entry.index = outcome.index;
        if (outcome.session !== undefined)
          entry.command = { session: outcome.session.id, seq: outcome.session.seq };
      } else {
        entry.failure = outcome.ok ? outcome.value.kind : outcome.error.code;
      }
      done?.(entry);
    });
    return entry;
  }

  read(
    client: ClientSlot,
    cellKey: CellKey,
    txn: Transaction,
    consistency: Consistency,
    done?: (entry: HistoryEntry) => void,
  ): HistoryEntry {
    const entry = this.record(client, cellKey, txn, consistency);
    client.client.read(cellKey, txn, consistency, (outcome) => {
      if (outcome.ok) {
        entry.returnMs = this.queue.nowMs;
        entry.output = outcome.value;
        entry.index = outcome.index;
      } else {
        entry.failure = outcome.error.code;
      }
      done?.(entry);
    });
    return entry;
  }

  // ------------------------------------------------------------------ running

  /** Run simulated time forward by `ms` (bounded by an event budget). */
  run(ms: number, eventsMax = 50_000_000): void {
    this.queue.runUntil(this.queue.nowMs + ms, eventsMax);
  }

  /** Run until `predicate` holds or `ms` passed; returns whether it holds. */
  runUntil(predicate: () => boolean, ms: number, eventsMax = 50_000_000): boolean {
    if (predicate()) return true;
    this.queue.runUntil(this.queue.nowMs + ms, eventsMax, predicate);
    return predicate();
  }

  // ------------------------------------------------------------------ checkers

  private onChosen(cellKey: CellKey, slot: number, value: LogValue<Command>): void {
    let slots = this.chosen.get(cellKey);
    if (slots === undefined) {
      slots = new Map();
      this.chosen.set(cellKey, slots);
    }
    const description = describeValue(value);
    const previous = slots.get(slot);
    if (previous === undefined) slots.set(slot, description);
    else if (previous !== description) {
      this.violations.push(
        `cell ${cellKey} slot ${slot}: two values chosen (${previous} and ${description})`,
      );
    }
  }

  private onApplied(cellKey: CellKey, node: NodeId, slot: number, value: LogValue<Command>): void {
    this.appliedCount += 1;
    const chosen = this.chosen.get(cellKey)?.get(slot);
    const description = describeValue(value);
    if (chosen === undefined) {
      this.violations.push(
        `cell ${cellKey}: ${formatNodeId(node)} applied slot ${slot} that no leader saw chosen`,
      );
    } else if (chosen !== description) {
      this.violations.push(
        `cell ${cellKey}: ${formatNodeId(node)} applied ${description} at slot ${slot}, chosen was ${chosen}`,
      );
    }
  }

  /** The chosen log of a cell (slot -> description), for the lost-write checker. */
  chosenLog(cellKey: CellKey): ReadonlyMap<number, string> {
    return this.chosen.get(cellKey) ?? new Map();
  }

  /** Nodes of a cell that applied the same index must hold byte-identical state. */
  checkReplicaStates(cellKey: CellKey): string | null {
    const byIndex = new Map<number, { node: string; state: string }>();
    for (const slot of this.servers) {
      const digest = slot.server?.cellDigest(cellKey);
      if (digest === null || digest === undefined) continue;
      const state = toHex(digest.snapshot);
      const seen = byIndex.get(digest.applied);
      if (seen === undefined) byIndex.set(digest.applied, { node: slot.id, state });
      else if (seen.state !== state) {
        return `cell ${cellKey}: ${seen.node} and ${slot.id} both applied ${digest.applied} but hold different state`;
      }
    }
    return null;
  }
}

/** A canonical description of a log value (stable across runs). */
export function describeValue(value: LogValue<Command>): string {
  switch (value.kind) {
    case "noop":
      return "noop";
    case "reconfigure":
      return `reconfigure(+${value.change.add ?? "-"},-${value.change.remove === null ? "-" : formatNodeId(value.change.remove)})`;
    case "commands":
      return `[${value.commands.map((c) => `${c.session}.${c.seq}:${commandDigest(c)}`).join(",")}]`;
  }
}

/** Hash of the command's canonical encoding; commands that cannot be encoded are described structurally. */
function commandDigest(command: Command): string {
  try {
    return hashBytes(encodeCommand(command));
  } catch {
    return `unencodable:${JSON.stringify(command, (_k, v) => (typeof v === "bigint" ? `${v}n` : v instanceof Uint8Array ? toHex(v) : v))}`;
  }
}

/** Clients speak the client protocol's codec; servers read it as part of theirs. */
const clientMessageCodec = Object.freeze({ encode: encodeClientMessage, decode: decodeClientMessage });

function describeMessage(message: unknown): string {
  const m = message as ServerMessage;
  switch (m.kind) {
    case "paxos":
      return `${m.message.type}/${m.message.cellKey}/${"slot" in m.message ? m.message.slot : ""}`;
    case "heartbeat":
      return "hb";
    case "request":
      return `rq${m.id}/${m.cellKey}/${m.body.type}`;
    case "response":
      return `rs${m.id}/${m.body.type}`;
  }
}
