import { describe, expect, it } from "vitest";
import type { NodeId } from "../core/index.ts";
import { limits } from "../core/index.ts";
import { PaxosCluster } from "../sim/paxos-cluster.ts";
import { ballotRound, makeBallot, ROUND_MAX } from "./ballot.ts";
import { Output } from "./output.ts";
import type { PaxosMessage } from "./types.ts";

function resultsFor(cluster: PaxosCluster, tag: number): number {
  return cluster.events.filter((e) => e.kind === "result" && e.tag === tag).length;
}

/** Deliver until the network is empty, without letting time pass; returns what was delivered. */
function deliverAll(cluster: PaxosCluster): PaxosMessage<string>[] {
  const delivered: PaxosMessage<string>[] = [];
  for (let i = 0; i < 10_000 && cluster.network.length > 0; i++) {
    delivered.push(cluster.network[0] as PaxosMessage<string>);
    cluster.deliver(0);
  }
  return delivered;
}

function acceptTargets(messages: readonly PaxosMessage<string>[]): string[] {
  return messages.filter((m) => m.type === "accept").map((m) => m.to.serverId);
}

/** Each gap between `times` is twice the one before, from retransmitMs * 2 ** first, up to retransmitMsMax. */
function expectDoublingGaps(times: readonly number[], first: number): void {
  for (let i = 1; i < times.length; i++) {
    const gap = (times[i] as number) - (times[i - 1] as number);
    expect(gap).toBe(Math.min(limits.retransmitMsMax, limits.retransmitMs * 2 ** (first + i - 1)));
  }
}

/** A 3-node cell led by a, which has just proposed y (at `start`, in `slot`). */
function leaderWritingY() {
  const c = new PaxosCluster("cell", ["a", "b", "c"]);
  c.propose("a", "x", 1);
  c.settle();
  const start = c.nowMs;
  c.propose("a", "y", 2);
  return { c, start, slot: c.node("a").replica.appliedIndex + 1 };
}

const sevenServers = ["a", "b", "c", "d", "e", "f", "g"];
/** Followers a leader of 7 sends each accept to at once: a majority with it, and the spares. */
const sentAtOnce = 3 + limits.acceptSpareFollowers;

describe("replica", () => {
  it("a peer's ballot of the last round leaves a node unable to outbid it, not throwing", () => {
    const c = new PaxosCluster("cell", ["a", "b", "c"]);
    c.propose("a", "x", 1);
    c.settle();
    const a = c.node("a").replica;
    const b = c.node("b").replica;
    // A peer (a bug, another build) asks b to take over with a ballot of the highest round.
    c.network.push({
      type: "campaign",
      cellKey: "cell",
      from: a.node,
      to: b.node,
      epoch: b.epoch,
      ballot: makeBallot(ROUND_MAX, a.node.incarnation),
    });
    expect(() => c.settle()).not.toThrow();
    expect(b.isLeader).toBe(false);
    // A request at b asks for an election it cannot hold: it is refused or waits, without a throw.
    expect(() => c.propose("b", "y", 2, true)).not.toThrow();
    expect(() => c.settle()).not.toThrow();
    expect(c.violations).toEqual([]);
  });

  it("an acceptor refuses an accept of a ballot below its promise, also one of the same round", () => {
    const c = new PaxosCluster("cell", ["a", "b", "c"]);
    c.propose("a", "x", 1);
    c.settle();
    const a = c.node("a").replica;
    const b = c.node("b").replica;
    // b promises a ballot of a higher round and incarnation 5 (a candidate's prepare).
    const round = ballotRound(b.status().promised) + 1;
    const promised = makeBallot(round, 5);
    b.step(
      {
        type: "prepare",
        cellKey: "cell",
        from: a.node,
        to: b.node,
        epoch: b.epoch,
        ballot: promised,
        fromSlot: 1,
      },
      c.nowMs,
      new Output<string, number>(),
    );
    expect(b.status().promised).toBe(promised);
    // Of the same round from a lower incarnation, and of a lower round from a higher one: both below.
    const below = [makeBallot(round, 4), makeBallot(round - 1, 9)];
    for (const ballot of below) {
      const out = new Output<string, number>();
      const slot = b.appliedIndex + 1;
      b.step(
        {
          type: "accept",
          cellKey: "cell",
          from: a.node,
          to: b.node,
          epoch: b.epoch,
          ballot,
          slot,
          commit: b.appliedIndex,
          value: { kind: "commands", stampMs: 0, stampBallot: ballot, commands: ["late"] },
        } as unknown as PaxosMessage<string>,
        c.nowMs,
        out,
      );
      const answers = [...out.sendNow, ...out.sendAfterPersist];
      expect(answers.map((m) => m.type)).toEqual(["nack"]);
      expect(out.writes.flatMap((w) => w.entries)).toEqual([]);
    }
  });

  it("a first request elects the node that received it and commits on every member", () => {
    const c = new PaxosCluster("cell", ["a", "b", "c"]);
    expect(c.network.length).toBe(0); // a new cell is quiet
    expect(c.propose("a", "x", 1)).toBe("queued");
    c.settle();
    expect(resultsFor(c, 1)).toBe(1);
    expect(c.node("a").replica.isLeader).toBe(true);
    for (const n of c.nodes) expect(n.machine.items).toEqual(["x"]);
    expect(c.violations).toEqual([]);
    for (const n of c.nodes) expect(n.replica.wakeAtMs).toBe(Number.POSITIVE_INFINITY);
  });

  it("followers redirect to a live leader", () => {
    const c = new PaxosCluster("cell", ["a", "b", "c"]);
    c.propose("a", "x", 1);
    c.settle();
    expect(c.propose("b", "y", 2)).toBe("redirect");
    expect(c.propose("b", "y", 2, true)).toBe("queued");
    c.settle();
    expect(c.node("b").replica.isLeader).toBe(true);
    for (const n of c.nodes) expect(n.machine.items).toEqual(["x", "y"]);
  });

  it("holds requests while a slot is in flight, then proposes them as one batch; a full batch goes at once", () => {
    const { c, slot: first } = leaderWritingY(); // y is in flight at `first`
    const acceptedSlots = () =>
      new Set(c.network.flatMap((m) => (m.type === "accept" && m.from.serverId === "a" ? [m.slot] : [])));
    c.network = c.network.filter((m) => m.type !== "accept"); // keep y in flight
    for (let i = 0; i < 3; i++) expect(c.propose("a", `h${i}`, 10 + i)).toBe("queued");
    expect(acceptedSlots()).toEqual(new Set()); // held: no slot beyond `first`
    // A full batch does not wait: it takes the next slot at once, even with `first` unanswered.
    for (let i = 3; i < limits.batchCommandsMax; i++) c.propose("a", `h${i}`, 10 + i);
    expect(acceptedSlots()).toEqual(new Set([first + 1]));
    c.settle();
    for (let i = 0; i < limits.batchCommandsMax; i++) expect(resultsFor(c, 10 + i)).toBe(1);
    // Once `first` committed, the leader is idle again: the next request is proposed at once.
    const next = c.node("a").replica.appliedIndex + 1;
    c.propose("a", "alone", 99);
    expect(acceptedSlots()).toEqual(new Set([next]));
    c.settle();
    expect(resultsFor(c, 99)).toBe(1);
    expect(c.violations).toEqual([]);
  });

  it("says why each campaign started", () => {
    const suspected = new Set<string>();
    const c = new PaxosCluster("cell", ["a", "b", "c"], { alive: (server) => !suspected.has(server) });
    c.propose("a", "x", 1);
    c.settle();
    expect(c.campaigns).toEqual([{ node: "a", cause: "no_leader" }]);
    // A client's word that the live leader a is unresponsive.
    expect(c.propose("b", "y", 2, true)).toBe("queued");
    c.settle();
    expect(c.campaigns.at(-1)).toEqual({ node: "b", cause: "takeover" });
    // The failure detector suspects b's server: c campaigns without any client's word.
    suspected.add("b");
    expect(c.propose("c", "z", 3)).toBe("queued");
    c.settle();
    expect(c.campaigns.at(-1)).toEqual({ node: "c", cause: "leader_suspected" });
    // The leader c hands leadership to a.
    const leader = c.node("c").replica;
    c.network.push({
      type: "campaign",
      cellKey: "cell",
      from: c.node("c").id,
      to: c.node("a").id,
      epoch: leader.membershipState.epoch,
      ballot: leader.status().promised,
    } as PaxosMessage<string>);
    c.deliver(c.network.length - 1);
    expect(c.campaigns.at(-1)).toEqual({ node: "a", cause: "transfer" });
    c.settle();
    expect(c.node("a").replica.isLeader).toBe(true);
    // Without a majority b's campaign fails; a request that reaches b during the backoff that
    // follows waits for it to end.
    suspected.clear();
    c.crash("a");
    c.crash("c");
    expect(c.propose("b", "w", 4, true)).toBe("queued");
    expect(c.campaigns.at(-1)).toEqual({ node: "b", cause: "takeover" });
    const dropped = () => c.events.some((e) => e.kind === "dropped" && e.tag === 4);
    for (let i = 0; i < 1000 && !dropped(); i++) c.advance(10);
    expect(dropped()).toBe(true);
    const before = c.campaigns.length;
    expect(c.propose("b", "v", 5, true)).toBe("queued");
    expect(c.campaigns.length).toBe(before);
    c.advance(limits.electionBackoffMsMin * 2 + 1);
    expect(c.campaigns.slice(before)).toEqual([{ node: "b", cause: "after_backoff" }]);
    expect(c.violations).toEqual([]);
  });

  it("pipelines and batches many commands", () => {
    const c = new PaxosCluster("cell", ["a", "b", "c", "d", "e", "f", "g"]);
    for (let i = 0; i < 100; i++) c.propose("a", `w${i}`, i);
    c.settle();
    for (const n of c.nodes) expect(n.machine.items.length).toBe(100);
    expect(c.node("a").replica.appliedIndex).toBeLessThan(100);
    expect(c.checkAppliedPrefixes()).toBeNull();
  });

  it("linearizable reads go through a confirmed read index", () => {
    const c = new PaxosCluster("cell", ["a", "b", "c"]);
    c.propose("a", "x", 1);
    c.settle();
    c.read("a", 2);
    expect(c.events.some((e) => e.kind === "read")).toBe(false);
    c.settle();
    const read = c.events.find((e) => e.kind === "read");
    expect(read?.items).toEqual(["x"]);
  });

  it("a restarted node keeps its promises and catches up", () => {
    const c = new PaxosCluster("cell", ["a", "b", "c"]);
    c.propose("a", "x", 1);
    c.settle();
    c.crash("c");
    for (let i = 0; i < 80; i++) c.propose("a", `w${i}`, 10 + i);
    c.settle();
    c.restart("c");
    c.propose("a", "last", 999);
    c.settle();
    c.advance(100);
    c.settle();
    expect(c.node("c").machine.items).toEqual(c.node("a").machine.items);
    expect(c.violations).toEqual([]);
  });

  it("a catch-up naming slots far past what a node applied changes nothing and throws nothing", () => {
    const c = new PaxosCluster("cell", ["a", "b", "c"]);
    c.propose("a", "x", 1);
    c.settle();
    const applied = c.node("c").replica.appliedIndex;
    const value = { kind: "noop", stampMs: 0 } as const;
    const forged = {
      type: "catchup",
      cellKey: "cell",
      from: { serverId: "b", incarnation: 2 },
      to: { serverId: "c", incarnation: 3 },
      epoch: 1,
      // Beyond the log window's largest ring.
      entries: [{ slot: applied + 2 ** 21, ballot: 0, value }],
      snapshot: null,
      applied: 2 ** 53 - 1,
    } as unknown as PaxosMessage<string>;
    // A snapshot past any slot a cell reaches, of a real state and membership.
    const snapshot = {
      index: 2 ** 53 - 1,
      membership: c.node("a").replica.membershipState,
      state: c.node("a").machine.snapshot(),
    };
    c.network.push(forged, { ...forged, entries: [], snapshot } as PaxosMessage<string>);
    expect(() => c.settle()).not.toThrow();
    expect(c.node("c").replica.appliedIndex).toBe(applied);
    c.propose("a", "y", 2);
    c.settle();
    for (const n of c.nodes) expect(n.machine.items).toEqual(["x", "y"]);
    expect(c.violations).toEqual([]);
  });

  it("a snapshot that compacts a node's log does not begin its stored state", () => {
    const c = new PaxosCluster("cell", ["a", "b", "c"]);
    for (let i = 0; i < limits.snapshotIntervalEntries + 2; i++) {
      c.propose("a", `w${i}`, i);
      c.settle();
    }
    const compactions = c.snapshotWrites.filter((w) => w.index > 0);
    expect(compactions.map((w) => w.server).sort()).toEqual(["a", "b", "c"]);
    expect(compactions.some((w) => w.founding)).toBe(false);
    expect(c.snapshotWrites.filter((w) => w.founding).map((w) => w.index)).toEqual([0, 0, 0]);
  });

  it("membership change adds a node that catches up by snapshot and then votes", () => {
    const c = new PaxosCluster("cell", ["a", "b", "c"]);
    for (let i = 0; i < 70; i++) c.propose("a", `w${i}`, i);
    c.settle();
    c.proposeChange("a", { add: "d", remove: null }, 500);
    c.settle();
    const d = c.addJoiningNode({ serverId: "d", incarnation: 4 });
    c.propose("a", "after", 501);
    c.settle();
    c.advance(60);
    c.settle();
    expect(d.replica.status().members.length).toBe(4);
    // Only the first snapshot of each node begins its stored state (it alone may replace a
    // damaged record): the founders' at 0 and the joiner's.
    const founding = c.snapshotWrites.filter((w) => w.founding);
    expect(founding.map((w) => w.server)).toEqual(["a", "b", "c", "d"]);
    expect(founding.filter((w) => w.server !== "d").every((w) => w.index === 0)).toBe(true);
    expect(founding.find((w) => w.server === "d")?.index).toBeGreaterThan(0);
    expect(d.machine.items).toEqual(c.node("a").machine.items);
    // Now remove a: leadership moves on, a retires.
    c.proposeChange("a", { add: null, remove: { serverId: "a", incarnation: 1 } }, 502);
    c.settle();
    c.advance(60);
    c.settle();
    expect(c.node("a").replica.isRetired).toBe(true);
    expect(c.propose("b", "post", 503, true)).not.toBe("retired");
    c.settle();
    c.advance(60);
    c.settle();
    expect(c.node("d").machine.items.at(-1)).toBe("post");
    expect(c.violations).toEqual([]);
  });

  it("a leader tells every node it removed, however many it removed in one leadership", () => {
    const c = new PaxosCluster("cell", ["a", "b", "c"]);
    c.propose("a", "x", 1);
    c.settle();
    let tag = 10;
    const removed: string[] = [];
    // The cell moves one node at a time: add a node, then remove the oldest follower while its
    // server is down, so that it can only learn of its removal from the leader's notice later.
    const removals = limits.membersMax + 2;
    for (let i = 0; i < removals; i++) {
      const name = `n${i}`;
      c.proposeChange("a", { add: name, remove: null }, tag++);
      c.settle();
      const added = c
        .node("a")
        .replica.status()
        .members.find((m) => m.serverId === name);
      expect(added, name).toBeDefined();
      c.addJoiningNode(added as NodeId);
      c.propose("a", `w${i}`, tag++);
      c.settle();
      c.advance(60);
      c.settle();
      const victim = c
        .node("a")
        .replica.status()
        .members.find((m) => m.serverId !== "a") as NodeId;
      c.crash(victim.serverId);
      c.proposeChange("a", { add: null, remove: victim }, tag++);
      c.settle();
      for (let j = 0; j < limits.pipelineDepth + 1; j++) c.propose("a", `p${i}.${j}`, tag++);
      c.settle();
      c.restart(victim.serverId);
      c.propose("a", `r${i}`, tag++);
      c.settle();
      c.advance(60);
      c.settle();
      removed.push(victim.serverId);
      expect(c.node(victim.serverId).replica.isRetired, `${victim.serverId}, removal ${i + 1}`).toBe(true);
    }
    expect(c.node("a").replica.isLeader).toBe(true);
    expect(removed).toHaveLength(removals);
    expect(c.violations).toEqual([]);
  });

  it("a leader keeps no votes, acknowledgements or promises of nodes that are not members", () => {
    const c = new PaxosCluster("cell", ["a", "b", "c"]);
    c.propose("a", "x", 1);
    c.settle();
    const leader = c.node("a").replica;
    const ballot = leader.status().promised;
    const stranger = { serverId: "zz", incarnation: 99 };
    const from = (type: string, fields: object) =>
      ({
        type,
        cellKey: "cell",
        from: stranger,
        to: c.node("a").id,
        epoch: 1,
        ballot,
        ...fields,
      }) as PaxosMessage<string>;
    c.network.push(from("heartbeat_ack", { ok: true, round: 7, applied: 1 }));
    c.network.push(from("promise", { base: 0, coveredThrough: Number.POSITIVE_INFINITY, entries: [] }));
    c.network.push(from("accepted", { slot: 1, applied: 1 }));
    c.settle();
    const fingerprint = leader.fingerprint(String);
    expect(fingerprint).not.toMatch(/ A99:/);
    expect(fingerprint).not.toMatch(/ R99:/);
    expect(leader.isLeader).toBe(true);
    c.propose("a", "y", 2);
    c.settle();
    for (const n of c.nodes) expect(n.machine.items).toEqual(["x", "y"]);
    expect(c.violations).toEqual([]);
  });

  it("a new leader re-proposes what its promises reported, then keeps none of their entries", () => {
    const c = new PaxosCluster("cell", ["a", "b", "c"]);
    c.propose("a", "x", 1);
    c.settle();
    // y reaches b's log only: a's slot stays in flight when a goes down.
    c.propose("a", "y", 2);
    const toB = c.network.findIndex((m) => m.type === "accept" && m.to.serverId === "b");
    expect(toB).toBeGreaterThanOrEqual(0);
    c.deliver(toB);
    c.network = c.network.filter((m) => m.from.serverId !== "a" && m.to.serverId !== "a");
    c.crash("a");
    // c campaigns; b's promise reports y, which c proposes again before anything new.
    expect(c.propose("c", "z", 3, true)).toBe("queued");
    c.settle();
    expect(c.node("c").replica.isLeader).toBe(true);
    expect(c.node("c").machine.items).toEqual(["x", "y", "z"]);
    const reports = c
      .node("c")
      .replica.fingerprint(String)
      .split(" ")
      .filter((part) => part.startsWith("R"));
    expect(reports.length).toBeGreaterThanOrEqual(2);
    for (const report of reports) expect(report.endsWith(":"), report).toBe(true);
    expect(c.violations).toEqual([]);
  });

  it("an unknown operation version stalls every node at the same slot without divergence", () => {
    const c = new PaxosCluster("cell", ["a", "b", "c"]);
    c.propose("a", "x", 1);
    c.settle();
    c.propose("a", "v2:y", 2);
    c.propose("a", "z", 3);
    c.settle();
    for (const n of c.nodes) {
      expect(n.machine.items).toEqual(["x"]);
      expect(n.replica.status().stalled).toContain("unknown operation version");
    }
    expect(c.propose("a", "w", 4)).toBe("stalled");
  });

  it("a candidate's ballot is stored before any message under it leaves, so a restart never mints it again", () => {
    const c = new PaxosCluster("cell", ["a", "b", "c"]);
    c.propose("a", "x", 1);
    // No prepare leaves before its step's writes are durable, retransmissions included.
    c.network = c.network.filter((m) => m.type !== "prepare" || m.to.serverId === "a");
    for (let i = 0; i < 3; i++) c.advance(limits.retransmitMs * 2 ** i);
    const prepares = c.network.filter((m) => m.type === "prepare");
    expect(prepares.length).toBeGreaterThan(0);
    expect(c.sentBeforePersist.filter((m) => m.type === "prepare")).toEqual([]);
    const first = prepares[0]?.type === "prepare" ? prepares[0].ballot : 0;
    expect(c.node("a").disk.promised).toBe(first);
    // Killed before any peer answered, it comes back with that ballot stored and moves past it.
    c.crash("a");
    c.network = [];
    c.restart("a");
    c.propose("a", "y", 2, true);
    const again = c.network.find((m) => m.type === "prepare");
    expect(again?.type === "prepare" && again.ballot > first).toBe(true);
    c.settle();
    expect(c.violations).toEqual([]);
  });

  it("a leader that learns its in-flight slot was chosen by another ballot steps down, so no follower applies its losing value", () => {
    type M = PaxosMessage<string>;
    const c = new PaxosCluster("cell", ["a", "b", "c", "d", "e"], {
      acceptSpareFollowers: limits.membersMax,
    });
    const pump = (allow: (m: M) => boolean): void => {
      for (let i = 0; i < 10_000; i++) {
        const at = c.network.findIndex(allow);
        if (at < 0) return;
        c.deliver(at);
      }
    };
    const drop = (gone: (m: M) => boolean): void => {
      c.network = c.network.filter((m) => !gone(m));
    };
    const among = (servers: string[]) => (m: M) =>
      servers.includes(m.from.serverId) && servers.includes(m.to.serverId);
    // e chooses x1 at slot 1; only d hears the commit notice.
    c.propose("e", "x1", 1);
    pump(() => true);
    c.advance(limits.commitNoticeDelayMs);
    pump((m) => m.to.serverId === "d");
    drop(() => true);
    // a takes over with b and c, and d (whose promise makes a ask it for slot 1; that is lost).
    c.propose("a", "v", 2, true);
    drop((m) => m.to.serverId === "e");
    pump((m) => m.type === "prepare" && ["b", "c"].includes(m.to.serverId));
    pump((m) => m.type === "promise" && ["b", "c"].includes(m.from.serverId));
    pump((m) => m.type === "prepare" && m.to.serverId === "d");
    pump((m) => m.type === "promise" && m.from.serverId === "d");
    drop((m) => m.type === "catchup_request");
    drop((m) => m.type === "accept" && ["d", "e"].includes(m.to.serverId));
    pump(
      (m) =>
        (m.type === "accept" || m.type === "accepted") &&
        m.slot === 1 &&
        !["d", "e"].includes(m.to.serverId) &&
        m.from.serverId !== "d",
    );
    // a proposes v at slot 2: only b stores it. a and b are then cut off.
    pump((m) => m.type === "accept" && m.slot === 2 && m.to.serverId === "b");
    drop((m) => m.from.serverId === "a" || m.to.serverId === "a");
    // d takes over among c, d and e and chooses w at slot 2.
    c.propose("d", "w", 3, true);
    drop((m) => ["a", "b"].includes(m.to.serverId));
    pump(among(["c", "d", "e"]));
    drop((m) => ["a", "b"].includes(m.to.serverId));
    // a's catch-up request is retransmitted to d, which answers with the chosen entries.
    c.advance(limits.retransmitMs);
    drop(
      (m) =>
        !(m.type === "catchup_request" && m.from.serverId === "a") &&
        (["a", "b"].includes(m.to.serverId) || m.from.serverId === "a"),
    );
    pump(among(["c", "d", "e"]));
    pump((m) => m.type === "catchup_request" && m.from.serverId === "a");
    pump((m) => m.type === "catchup" && m.to.serverId === "a");
    expect(c.node("a").machine.items).toEqual(["x1", "w"]);
    // a no longer leads under its ballot: nothing of it tells b that slot 2 (where b holds v) is
    // committed.
    expect(c.node("a").replica.isLeader).toBe(false);
    drop((m) => ["a", "b"].includes(m.to.serverId) || m.from.serverId === "a");
    c.propose("a", "z", 4);
    pump((m) => m.to.serverId === "b");
    expect(c.node("b").machine.items).not.toContain("v");
    expect(c.violations).toEqual([]);
    expect(c.checkAppliedPrefixes()).toBeNull();
  });

  it("a leader that learns its in-flight slots by catch-up settles them and steps down", () => {
    const c = new PaxosCluster("cell", ["a", "b", "c"]);
    c.propose("a", "x", 1);
    c.settle();
    c.propose("a", "y", 2);
    const accept = c.network.find((m) => m.type === "accept" && m.to.serverId === "b");
    if (accept?.type !== "accept") throw new Error("expected an accept to b in flight");
    // b answers with a catch-up segment saying the slot is chosen, before any vote arrives.
    c.network = [
      {
        type: "catchup",
        cellKey: "cell",
        from: c.node("b").id,
        to: c.node("a").id,
        epoch: accept.epoch,
        entries: [{ slot: accept.slot, ballot: accept.ballot, value: accept.value }],
        snapshot: null,
        applied: accept.slot,
      },
    ];
    c.deliver(0);
    expect(c.node("a").replica.appliedIndex).toBe(accept.slot);
    // The request's fate is for its retry to learn: it is dropped, not left hanging.
    expect(c.events.filter((e) => e.kind === "dropped" && e.tag === 2)).toHaveLength(1);
    // The slot was chosen without its votes, maybe under a higher ballot with another value: a
    // steps down, and its held accepts (for c) are dropped with its ballot.
    expect(c.node("a").replica.isLeader).toBe(false);
    c.advance(limits.acceptDeferMs);
    expect(c.network.filter((m) => m.type === "accept")).toEqual([]);
    c.settle();
    for (let i = 0; i <= limits.retransmitsMax; i++) c.advance(limits.retransmitMs);
    expect(c.network.filter((m) => m.type === "accept")).toEqual([]);
    // The next request elects it again under a new ballot.
    c.propose("a", "z", 3, true);
    c.settle();
    expect(resultsFor(c, 3)).toBe(1);
    for (const n of c.nodes.slice(1)) expect(n.machine.items).toEqual(["x", "y", "z"]);
    expect(c.violations).toEqual([]);
  });

  it("a leader waits twice as long for each copy of an unanswered accept, and gives up after retransmitsMax", () => {
    const { c, start, slot } = leaderWritingY();
    // Nothing reaches the followers from now on; note when accepts of the slot leave a.
    const sentAt: number[] = [];
    for (let t = 0; t < 10_000 && c.node("a").replica.isLeader; t += 5) {
      for (const m of c.network) if (m.type === "accept" && m.slot === slot) sentAt.push(c.nowMs - start);
      c.network = [];
      c.advance(5);
    }
    expect(c.node("a").replica.isLeader).toBe(false);
    // The first copy leaves after retransmitMs (no round trip measured yet), then each waits twice
    // as long as the one before, up to retransmitMsMax.
    const copies = [...new Set(sentAt)].filter((t) => t >= limits.retransmitMs);
    expect(copies).toHaveLength(limits.retransmitsMax);
    expect(copies[0]).toBe(limits.retransmitMs);
    expectDoublingGaps(copies, 1);
  });

  it("a candidate waits twice as long for each copy of its unanswered prepares", () => {
    const c = new PaxosCluster("cell", ["a", "b", "c"]);
    c.propose("a", "x", 1);
    const sentAt: number[] = [];
    for (let t = 0; t < 10_000 && sentAt.length <= limits.retransmitsMax; t += 5) {
      if (c.network.some((m) => m.type === "prepare")) sentAt.push(t);
      c.network = [];
      c.advance(5);
    }
    expect(sentAt).toHaveLength(limits.retransmitsMax + 1);
    expectDoublingGaps(sentAt, 0);
  });

  it("after a copy, a later slot's first copy waits as long as the last one did", () => {
    const { c, start, slot: first } = leaderWritingY();
    const firstCopyAt: Map<number, number> = new Map();
    for (let t = 0; t < 2_000; t += 5) {
      // After slot `first` was copied once: a full batch, which does not wait for that slot.
      if (t === limits.retransmitMs + 10)
        for (let i = 0; i < limits.batchCommandsMax; i++) c.propose("a", `z${i}`, 3 + i);
      for (const m of c.network) {
        if (m.type !== "accept" || firstCopyAt.has(m.slot)) continue;
        const sinceProposal = c.nowMs - start - (m.slot === first ? 0 : limits.retransmitMs + 10);
        // Skip each slot's own first sends (to the majority at once, and the deferred ones).
        if (sinceProposal > limits.acceptDeferMs) firstCopyAt.set(m.slot, sinceProposal);
      }
      c.network = [];
      c.advance(5);
    }
    expect(firstCopyAt.get(first)).toBe(limits.retransmitMs);
    // The later slot starts from the doubled wait of the first slot's copy, not from retransmitMs.
    expect(firstCopyAt.get(first + 1)).toBe(2 * limits.retransmitMs);
  });

  it("a leader sends each accept at once only to the followers its majority needs, the others a moment later", () => {
    const c = new PaxosCluster("cell", sevenServers);
    c.propose("a", "x", 1);
    c.settle();
    c.propose("a", "y", 2);
    // Followers in turn from the leader's place.
    expect(acceptTargets(c.network)).toEqual(sevenServers.slice(1, 1 + sentAtOnce));
    const first = deliverAll(c);
    expect(resultsFor(c, 2)).toBe(1); // committed without the others
    c.propose("a", "z", 3);
    first.push(...deliverAll(c));
    expect(resultsFor(c, 3)).toBe(1);
    expect(c.node("g").machine.items).toEqual(["x"]);
    expect(first.filter((m) => m.to.serverId === "g")).toEqual([]);
    c.advance(limits.acceptDeferMs);
    const deferred = sevenServers.slice(1 + sentAtOnce);
    expect(acceptTargets(c.network)).toEqual([...deferred, ...deferred]); // both slots
    const later = deliverAll(c);
    // Their accepts carry the commit index only up to their own slot: no catch-up follows. Both
    // slots were committed when they left, so no vote is asked for or sent.
    expect(later.filter((m) => m.type === "catchup_request")).toEqual([]);
    expect(later.filter((m) => m.type === "accepted")).toEqual([]);
    for (const n of c.nodes) expect(n.machine.items).toEqual(["x", "y", "z"]);
    c.settle();
    for (const n of c.nodes) expect(n.replica.wakeAtMs).toBe(Number.POSITIVE_INFINITY);
    expect(c.violations).toEqual([]);
  });

  it("a commit waits only the deferral, not a retransmission, when the followers sent to at once are silent", () => {
    const c = new PaxosCluster("cell", sevenServers);
    c.propose("a", "x", 1);
    c.settle();
    c.propose("a", "y", 2);
    c.network = c.network.filter((m) => m.type !== "accept"); // lost, or their servers are slow
    deliverAll(c);
    expect(resultsFor(c, 2)).toBe(0);
    c.advance(limits.acceptDeferMs);
    const late = deliverAll(c);
    expect(limits.acceptDeferMs).toBeLessThan(limits.retransmitMs);
    expect(resultsFor(c, 2)).toBe(1);
    // Held accepts of a slot not yet committed ask for votes, and the deferred followers' make it.
    const votes = late.filter((m) => m.type === "accepted" && m.to.serverId === "a");
    expect(votes.length).toBeGreaterThanOrEqual(3);
    expect(c.violations).toEqual([]);
  });

  it("a suspected follower is not among those sent to at once, and still gets its accepts", () => {
    const c = new PaxosCluster("cell", sevenServers, { alive: (serverId) => serverId !== "b" });
    c.propose("a", "x", 1);
    c.settle();
    c.propose("a", "y", 2);
    expect(acceptTargets(c.network)).toEqual(sevenServers.slice(2, 2 + sentAtOnce));
    c.settle();
    for (const n of c.nodes) expect(n.machine.items).toEqual(["x", "y"]);
  });

  it("deferred accepts go out before a heartbeat tells their followers a commit index", () => {
    const c = new PaxosCluster("cell", sevenServers);
    c.propose("a", "x", 1);
    c.settle();
    c.propose("a", "y", 2);
    deliverAll(c);
    expect(c.read("a", 3)).toBe("queued"); // a linearizable read starts a heartbeat round
    const toG = c.network.filter((m) => m.to.serverId === "g").map((m) => m.type);
    expect(toG).toEqual(["accept", "heartbeat"]);
    const rest = deliverAll(c);
    expect(rest.filter((m) => m.type === "catchup_request")).toEqual([]);
    expect(c.node("g").machine.items).toEqual(["x", "y"]);
  });

  it("a deferred follower learns a commit from its held accept, without a separate commit notice", () => {
    const c = new PaxosCluster("cell", sevenServers);
    c.propose("a", "x", 1);
    c.settle();
    c.propose("a", "y", 2);
    deliverAll(c);
    expect(resultsFor(c, 2)).toBe(1);
    expect(limits.commitNoticeDelayMs).toBeLessThan(limits.acceptDeferMs);
    c.advance(limits.commitNoticeDelayMs); // the commit notices are due; the deferral is not
    const byTarget = (serverId: string) =>
      c.network.filter((m) => m.to.serverId === serverId).map((m) => m.type);
    const atOnce = sevenServers.slice(1, 1 + sentAtOnce);
    const deferred = sevenServers.slice(1 + sentAtOnce);
    for (const id of atOnce) expect(byTarget(id)).toEqual(["heartbeat"]);
    for (const id of deferred) expect(byTarget(id)).toEqual(["accept"]);
    const notices = deliverAll(c);
    expect(notices.filter((m) => m.type === "catchup_request")).toEqual([]);
    // The held accept reports its slot committed: it asks for no vote, and gets none.
    expect(notices.filter((m) => m.type === "accepted")).toEqual([]);
    for (const n of c.nodes) expect(n.machine.items).toEqual(["x", "y"]);
    c.settle();
    for (const n of c.nodes) expect(n.replica.wakeAtMs).toBe(Number.POSITIVE_INFINITY);
    expect(c.violations).toEqual([]);
  });

  it("a leader holds at most deferredSlotsMax slots for the followers it defers", () => {
    const c = new PaxosCluster("cell", sevenServers);
    c.propose("a", "w0", 0);
    c.settle();
    const delivered: PaxosMessage<string>[] = [];
    for (let i = 1; i <= limits.deferredSlotsMax + 1; i++) {
      c.propose("a", `w${i}`, i);
      delivered.push(...deliverAll(c));
      expect(resultsFor(c, i)).toBe(1);
    }
    // No time passed: the bound alone sent them.
    expect(acceptTargets(delivered).filter((id) => id === "g").length).toBe(limits.deferredSlotsMax);
    expect(delivered.filter((m) => m.type === "catchup_request")).toEqual([]);
    c.settle();
    expect(c.node("g").machine.items.length).toBe(limits.deferredSlotsMax + 2);
    expect(c.checkAppliedPrefixes()).toBeNull();
  });
  it("a follower that had not voted when its slot committed is no longer sent to at once", () => {
    const c = new PaxosCluster("cell", sevenServers);
    c.propose("a", "x", 1);
    c.settle();
    c.propose("a", "y", 2);
    // b is slow: its accept is still on the way when the slot commits with the deferred votes.
    const toB = c.network.findIndex((m) => m.type === "accept" && m.to.serverId === "b");
    const held = c.network.splice(toB, 1);
    deliverAll(c);
    c.advance(limits.acceptDeferMs);
    deliverAll(c);
    expect(resultsFor(c, 2)).toBe(1);
    c.network.push(...held);
    deliverAll(c);
    c.propose("a", "z", 3);
    const atOnce = acceptTargets(c.network);
    expect(atOnce).not.toContain("b");
    expect(atOnce).toEqual(sevenServers.slice(2, 2 + sentAtOnce));
    c.settle();
    for (const n of c.nodes) expect(n.machine.items).toEqual(["x", "y", "z"]);
    expect(c.violations).toEqual([]);
  });
  it("a leader whose own vote comes late sends each accept at once to one more follower", () => {
    const c = new PaxosCluster("cell", sevenServers);
    c.propose("a", "x", 1);
    c.settle();
    c.slowSelf.add("a"); // a's own write is slow: its vote to itself waits in the network
    c.propose("a", "y", 2);
    const ownVote = c.network.findIndex(
      (m) => m.type === "accepted" && m.to.serverId === "a" && m.from.serverId === "a",
    );
    const held = c.network.splice(ownVote, 1);
    deliverAll(c);
    expect(resultsFor(c, 2)).toBe(0);
    c.advance(limits.acceptDeferMs);
    deliverAll(c);
    expect(resultsFor(c, 2)).toBe(1); // committed by followers alone
    c.network.push(...held);
    deliverAll(c);
    c.propose("a", "z", 3);
    expect(acceptTargets(c.network)).toEqual(sevenServers.slice(1, 2 + sentAtOnce));
    c.slowSelf.clear();
    c.settle();
    // Its vote in time again: back to a majority with it.
    c.propose("a", "w", 4);
    expect(acceptTargets(c.network)).toEqual(sevenServers.slice(1, 1 + sentAtOnce));
    c.settle();
    for (const n of c.nodes) expect(n.machine.items).toEqual(["x", "y", "z", "w"]);
    expect(c.violations).toEqual([]);
  });
});
