/**
 * A bare cluster of Paxos replicas of one cell with a trivial state machine, driven message by
 * message. The exhaustive explorer and the replica's unit tests use it; it has no server, no
 * timers and no storage latency: writes are durable at the end of each step, messages a node
 * sends to itself are delivered at once, and every other message waits in `network` until the
 * driver delivers or drops it.
 */
import { assert, formatNodeId, limits, type NodeId, nodeIdEquals, Prng } from "../core/index.ts";
import {
  BALLOT_NONE,
  type Ballot,
  type CampaignCause,
  initialMembership,
  type LogEntry,
  type LogValue,
  type MembershipChange,
  MembershipInterner,
  Output,
  type PaxosMessage,
  type PersistedNode,
  type PlantedBugs,
  Replica,
  type ReplicaEnvironment,
  type ReplicaObserver,
  type Snapshot,
  type StateMachine,
} from "../paxos/index.ts";

/** The state machine of the harness: a list of the commands applied, in order. */
export class ListMachine implements StateMachine<string, number> {
  items: string[] = [];
  unsupported(command: string): string | null {
    return command.startsWith("v2:") ? `unknown operation version in ${command}` : null;
  }
  apply(command: string): number {
    this.items.push(command);
    return this.items.length;
  }
  snapshot(): Uint8Array {
    return new TextEncoder().encode(JSON.stringify(this.items));
  }
  restore(snapshot: Uint8Array): void {
    this.items = JSON.parse(new TextDecoder().decode(snapshot)) as string[];
  }
  commandBytes(command: string): number {
    return command.length;
  }
}

interface Disk {
  promised: Ballot;
  snapshot: Snapshot;
  entries: Map<number, LogEntry<string>>;
}

export interface ClusterNode {
  readonly id: NodeId;
  replica: Replica<string, number>;
  machine: ListMachine;
  disk: Disk;
  up: boolean;
}

export interface ClusterEvent {
  readonly kind: "result" | "read" | "dropped";
  readonly node: NodeId;
  readonly tag: number;
  /** For reads: the state the read observed. */
  readonly items?: readonly string[];
}

export function describeValue(value: LogValue<string>): string {
  switch (value.kind) {
    case "noop":
      return "noop";
    case "commands":
      return `[${value.commands.join(",")}]`;
    case "reconfigure":
      return `cfg(+${value.change.add ?? "-"},-${value.change.remove === null ? "-" : formatNodeId(value.change.remove)})`;
  }
}

export interface ClusterOptions {
  readonly seed?: number;
  readonly bugs?: PlantedBugs;
  readonly alive?: (serverId: string) => boolean;
  /** ReplicaEnvironment.acceptSpareFollowers (limits.membersMax: every accept to every follower). */
  readonly acceptSpareFollowers?: number;
  /** ReplicaEnvironment.pipelineSingleRequests: single writes fill the pipeline at once. */
  readonly pipelineSingleRequests?: boolean;
}

export class PaxosCluster {
  readonly nodes: ClusterNode[] = [];
  network: PaxosMessage<string>[] = [];
  /** Servers whose messages to themselves (a leader's own vote) travel the network like others. */
  readonly slowSelf = new Set<string>();
  readonly events: ClusterEvent[] = [];
  /** Messages sent before their step's writes were durable (Output.sendNow), in order. */
  readonly sentBeforePersist: PaxosMessage<string>[] = [];
  /** Every snapshot a node stored, with whether its write began the node's stored state. */
  readonly snapshotWrites: { readonly server: string; readonly index: number; readonly founding: boolean }[] =
    [];
  /** Every campaign a node started, in order, with its cause. */
  readonly campaigns: { readonly node: string; readonly cause: CampaignCause }[] = [];
  /** slot -> description of the first value any leader saw chosen. */
  readonly chosen = new Map<number, string>();
  readonly violations: string[] = [];
  nowMs = 0;
  private readonly env: ReplicaEnvironment;
  private out = new Output<string, number>();

  private readonly options: ClusterOptions;

  constructor(
    readonly cellKey: string,
    memberServers: readonly string[],
    options: ClusterOptions = {},
  ) {
    this.options = options;
    const observer: ReplicaObserver = {
      chosen: (_cell, slot, value) => {
        const description = describeValue(value as LogValue<string>);
        const previous = this.chosen.get(slot);
        if (previous === undefined) this.chosen.set(slot, description);
        else if (previous !== description) {
          this.violations.push(`slot ${slot} chosen twice: ${previous} and ${description}`);
        }
      },
      applied: (_cell, node, slot, value) => {
        const description = describeValue(value as LogValue<string>);
        const chosen = this.chosen.get(slot);
        if (chosen !== undefined && chosen !== description) {
          this.violations.push(
            `${formatNodeId(node)} applied ${description} at slot ${slot}, chosen ${chosen}`,
          );
        }
      },
    };
    const alive = options.alive ?? (() => true);
    this.env = {
      random: new Prng(options.seed ?? 1),
      isServerAlive: alive,
      observer,
      bugs: options.bugs ?? null,
      memberships: new MembershipInterner(),
      ...(options.acceptSpareFollowers === undefined
        ? {}
        : { acceptSpareFollowers: options.acceptSpareFollowers }),
      ...(options.pipelineSingleRequests === undefined
        ? {}
        : { pipelineSingleRequests: options.pipelineSingleRequests }),
    };
    if (memberServers.length === 0) return; // a clone fills itself in
    const members = memberServers.map((serverId, i) => ({ serverId, incarnation: i + 1 }));
    const membership = initialMembership(members);
    for (const id of members) {
      const machine = new ListMachine();
      const replica = Replica.create({ cellKey, node: id, machine, env: this.env }, membership, this.out);
      const disk: Disk = {
        promised: BALLOT_NONE,
        snapshot: { index: 0, membership, state: machine.snapshot() },
        entries: new Map(),
      };
      this.nodes.push({ id, replica, machine, disk, up: true });
    }
    this.finishStep();
  }

  /** An independent copy of the whole cluster: replicas, disks, network and checkers. */
  clone(): PaxosCluster {
    const copy = new PaxosCluster(this.cellKey, [], this.options);
    Object.assign(copy.env.random, this.env.random);
    copy.network = [...this.network];
    copy.nowMs = this.nowMs;
    for (const [slot, value] of this.chosen) copy.chosen.set(slot, value);
    copy.violations.push(...this.violations);
    copy.events.push(...this.events);
    copy.campaigns.push(...this.campaigns);
    for (const node of this.nodes) {
      const machine = new ListMachine();
      machine.items = [...node.machine.items];
      const replica = node.replica.clone(copy.env, machine);
      copy.nodes.push({
        id: node.id,
        replica,
        machine,
        disk: {
          promised: node.disk.promised,
          snapshot: node.disk.snapshot,
          entries: new Map(node.disk.entries),
        },
        up: node.up,
      });
    }
    return copy;
  }

  node(serverId: string): ClusterNode {
    const node = this.nodes.find((n) => n.id.serverId === serverId);
    assert(node !== undefined, `no node on ${serverId}`);
    return node;
  }

  /** Add a joining node (after a membership change minted its incarnation). */
  addJoiningNode(id: NodeId): ClusterNode {
    const machine = new ListMachine();
    const replica = Replica.join({ cellKey: this.cellKey, node: id, machine, env: this.env });
    const node: ClusterNode = {
      id,
      replica,
      machine,
      disk: {
        promised: BALLOT_NONE,
        snapshot: { index: 0, membership: replica.membershipState, state: machine.snapshot() },
        entries: new Map(),
      },
      up: true,
    };
    this.nodes.push(node);
    return node;
  }

  propose(serverId: string, command: string, tag: number, unresponsiveLeader = false): string {
    const node = this.node(serverId);
    const outcome = node.replica.propose(command, tag, this.nowMs, this.out, unresponsiveLeader);
    this.finishStep();
    return outcome.status;
  }

  proposeChange(serverId: string, change: MembershipChange, tag: number): string {
    const outcome = this.node(serverId).replica.proposeChange(change, tag, this.nowMs, this.out);
    this.finishStep();
    return outcome.status;
  }

  read(serverId: string, tag: number): string {
    const outcome = this.node(serverId).replica.read(tag, this.nowMs, this.out);
    this.finishStep();
    return outcome.status;
  }

  tick(serverId: string): void {
    const node = this.node(serverId);
    node.replica.tick(Math.max(this.nowMs, node.replica.wakeAtMs), this.out);
    this.finishStep();
  }

  advance(ms: number): void {
    this.nowMs += ms;
    for (const node of this.nodes) {
      if (node.up && node.replica.wakeAtMs <= this.nowMs) node.replica.tick(this.nowMs, this.out);
    }
    this.finishStep();
  }

  /** Deliver the network message at `index`. */
  deliver(index: number): void {
    const [message] = this.network.splice(index, 1);
    assert(message !== undefined, "no such message");
    this.route(message);
    this.finishStep();
  }

  /** Deliver the first message in flight of `type` from one server to another (and matching `where`). */
  deliverWhere(
    type: PaxosMessage<string>["type"] | "any",
    from: string,
    to: string,
    where: (m: PaxosMessage<string>) => boolean = () => true,
  ): void {
    const index = this.network.findIndex(
      (m) =>
        (type === "any" || m.type === type) && m.from.serverId === from && m.to.serverId === to && where(m),
    );
    assert(index >= 0, `no ${type} from ${from} to ${to} in flight`);
    this.deliver(index);
  }

  drop(index: number): void {
    this.network.splice(index, 1);
  }

  /** Deliver everything in order until the network is empty or `limit` messages went. */
  settle(limit = 10_000): number {
    let delivered = 0;
    for (let rounds = 0; rounds < 100; rounds++) {
      while (this.network.length > 0 && delivered < limit) {
        this.deliver(0);
        delivered += 1;
      }
      // Short protocol delays (the leader's commit notice, its deferred accepts) are part of
      // settling; retransmission timeouts are not. Time moves to the next wake-up exactly, so a
      // step never carries a node past a timeout that was not yet due.
      const shortMs = Math.max(limits.commitNoticeDelayMs, limits.acceptDeferMs);
      let nextWakeMs = Number.POSITIVE_INFINITY;
      for (const n of this.nodes) if (n.up) nextWakeMs = Math.min(nextWakeMs, n.replica.wakeAtMs);
      if (nextWakeMs > this.nowMs + shortMs || delivered >= limit) break;
      this.advance(Math.max(0, nextWakeMs - this.nowMs));
    }
    return delivered;
  }

  crash(serverId: string): void {
    const node = this.node(serverId);
    node.up = false;
    this.network = this.network.filter((m) => !nodeIdEquals(m.to, node.id));
  }

  restart(serverId: string): void {
    const node = this.node(serverId);
    const machine = new ListMachine();
    const persisted: PersistedNode<string> = {
      node: node.id,
      promised: node.disk.promised,
      snapshot: node.disk.snapshot,
      entries: [...node.disk.entries.values()],
    };
    node.machine = machine;
    node.replica = Replica.restore(
      { cellKey: this.cellKey, node: node.id, machine, env: this.env },
      persisted,
    );
    node.up = true;
  }

  private route(message: PaxosMessage<string>): void {
    const target = this.nodes.find((n) => nodeIdEquals(n.id, message.to));
    if (target === undefined || !target.up) return;
    target.replica.step(message, this.nowMs, this.out);
  }

  /** Execute the Output: persist, deliver self-messages at once, queue the rest. */
  private finishStep(): void {
    for (let guard = 0; guard < 10_000; guard++) {
      const out = this.out;
      if (out.isEmpty()) return;
      for (const write of out.writes) {
        const node = this.nodes.find((n) => nodeIdEquals(n.id, write.node));
        if (node === undefined) continue;
        if (write.promised !== null) node.disk.promised = write.promised;
        if (write.snapshot !== null) {
          node.disk.snapshot = write.snapshot;
          const founding = write.founding === true;
          this.snapshotWrites.push({ server: write.node.serverId, index: write.snapshot.index, founding });
        }
        for (const slot of [...node.disk.entries.keys()])
          if (slot <= write.truncateThrough) node.disk.entries.delete(slot);
        for (const entry of write.entries) node.disk.entries.set(entry.slot, entry);
      }
      const local: PaxosMessage<string>[] = [];
      for (const m of out.sendNow) this.sentBeforePersist.push(m);
      // A ballot is stored before anything is sent under it: a candidate that crashed first
      // would otherwise mint it again after its restart.
      for (const m of [...out.sendNow, ...out.sendAfterPersist]) {
        if (m.type !== "prepare") continue;
        const sender = this.nodes.find((n) => nodeIdEquals(n.id, m.from));
        if (sender !== undefined && sender.disk.promised < m.ballot)
          this.violations.push(`${messageKey(m)} left before its ballot was stored`);
      }
      // An acceptor's promise and vote leave only once what they promise is durable: a promise
      // forgotten in a crash, or a vote for an entry the node no longer holds, lets a slot be
      // chosen twice.
      for (const m of out.sendNow) {
        if (m.type === "promise" || m.type === "accepted")
          this.violations.push(`${messageKey(m)} was sent before the turn's writes were durable`);
      }
      for (const m of out.sendAfterPersist) {
        if (m.type !== "promise" && m.type !== "accepted") continue;
        const sender = this.nodes.find((n) => nodeIdEquals(n.id, m.from));
        if (sender === undefined) continue;
        if (sender.disk.promised < m.ballot) {
          this.violations.push(`${messageKey(m)} left before its ballot was stored`);
        } else if (m.type === "accepted") {
          // A vote for a slot the node knows chosen needs no entry (replica.ts, onAccept): the
          // chosen value is what any later leader re-proposes.
          const stored = sender.disk.entries.get(m.slot);
          const folded = sender.disk.snapshot.index >= m.slot;
          const chosen = sender.replica.status().committed >= m.slot;
          if (!folded && !chosen && (stored === undefined || stored.ballot !== m.ballot))
            this.violations.push(`${messageKey(m)} left without its entry stored`);
        }
      }
      for (const m of [...out.sendNow, ...out.sendAfterPersist]) {
        if (nodeIdEquals(m.from, m.to) && !this.slowSelf.has(m.from.serverId)) local.push(m);
        else this.network.push(m);
      }
      for (const r of out.results)
        this.events.push({ kind: "result", node: this.leaderOf(r.tag), tag: r.tag });
      for (const r of out.reads) {
        const reader = this.nodes.find((n) => n.replica.isLeader) ?? this.nodes[0];
        this.events.push({
          kind: "read",
          node: (reader as ClusterNode).id,
          tag: r.tag,
          items: [...(reader as ClusterNode).machine.items],
        });
      }
      for (const d of out.dropped)
        this.events.push({ kind: "dropped", node: d.leader ?? this.nodes[0]!.id, tag: d.tag });
      for (const e of out.events)
        if (e.type === "campaign") this.campaigns.push({ node: e.node.serverId, cause: e.cause });
      out.reset();
      for (const m of local) this.route(m);
    }
    throw new Error("a step did not settle");
  }

  private leaderOf(_tag: number): NodeId {
    return (this.nodes.find((n) => n.replica.isLeader) ?? (this.nodes[0] as ClusterNode)).id;
  }

  /** Every node's applied list must be a prefix of the longest one. */
  checkAppliedPrefixes(): string | null {
    let longest: string[] = [];
    for (const node of this.nodes)
      if (node.machine.items.length > longest.length) longest = node.machine.items;
    for (const node of this.nodes) {
      const items = node.machine.items;
      for (let i = 0; i < items.length; i++) {
        if (items[i] !== longest[i]) {
          return `${formatNodeId(node.id)} applied ${items[i]} at position ${i}, another node applied ${longest[i]}`;
        }
      }
    }
    return null;
  }

  fingerprint(): string {
    const nodes = this.nodes.map(
      (n) => `${n.up ? "U" : "D"}${n.replica.fingerprint(describeValue)}|${n.machine.items.join(",")}`,
    );
    const network = this.network.map((m) => messageKey(m)).sort();
    return `${nodes.join("\n")}\n#${network.join(";")}`;
  }
}

export function messageKey(m: PaxosMessage<string>): string {
  const head = `${m.type}:${formatNodeId(m.from)}>${formatNodeId(m.to)}:e${m.epoch}`;
  switch (m.type) {
    case "prepare":
      return `${head}:${m.ballot}:${m.fromSlot}`;
    case "promise":
      return `${head}:${m.ballot}:${m.base}:${m.coveredThrough}:${m.applied}:${m.entries.map((e) => `${e.slot}/${e.ballot}/${describeValue(e.value)}`).join(",")}`;
    case "accept":
      return `${head}:${m.ballot}:${m.slot}:${describeValue(m.value)}:${m.commit}`;
    case "accepted":
      return `${head}:${m.ballot}:${m.slot}:${m.applied}`;
    case "nack":
      return `${head}:${m.ballot}:${m.promised}:${m.reason}:${m.applied}`;
    case "heartbeat":
      return `${head}:${m.ballot}:${m.commit}:${m.round}`;
    case "heartbeat_ack":
      return `${head}:${m.ballot}:${m.round}:${m.applied}:${m.ok}`;
    case "catchup_request":
      return `${head}:${m.fromSlot}:${m.needSnapshot}`;
    case "catchup":
      return `${head}:${m.applied}:${m.snapshot?.index ?? "-"}:${m.entries.map((e) => `${e.slot}/${describeValue(e.value)}`).join(",")}`;
    case "campaign":
      return `${head}:${m.ballot}`;
  }
}
