import { describe, expect, it } from "vitest";
import { limits } from "../core/index.ts";
import { PaxosCluster } from "../sim/paxos-cluster.ts";

function resultsFor(cluster: PaxosCluster, tag: number): number {
  return cluster.events.filter((e) => e.kind === "result" && e.tag === tag).length;
}

describe("replica", () => {
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

  it("a leader that learns its in-flight slots by catch-up settles them and keeps leading", () => {
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
    // Nothing stale stays in flight: time passing makes no retransmissions and a leader still.
    for (let i = 0; i <= limits.retransmitsMax; i++) c.advance(limits.retransmitMs);
    expect(c.network.filter((m) => m.type === "accept")).toEqual([]);
    expect(c.node("a").replica.isLeader).toBe(true);
    c.propose("a", "z", 3);
    c.settle();
    expect(resultsFor(c, 3)).toBe(1);
    for (const n of c.nodes.slice(1)) expect(n.machine.items).toEqual(["x", "y", "z"]);
    expect(c.violations).toEqual([]);
  });
});
