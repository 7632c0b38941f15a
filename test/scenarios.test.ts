/**
 * Scenario tests: each drives a simulated colony through one situation and checks every
 * checker afterwards (chosen values, replica states, linearizability of the history).
 */
import { describe, expect, it } from "vitest";
import { bytes, Scenario, text } from "../src/sim/scenario.ts";

const seven = ["s1", "s2", "s3", "s4", "s5", "s6", "s7"];

describe("scenarios", () => {
  it("a write commits on every member and a quiet cell sends nothing", () => {
    const s = new Scenario().cell("vol-1");
    expect(s.put("vol-1", "x", bytes("1")).output?.status).toBe("committed");
    expect(text(s.get("vol-1", "x"))).toBe("1");
    s.run(2000);
    expect(s.statuses("vol-1").every((n) => n.applied === s.statuses("vol-1")[0]?.applied && n.quiet)).toBe(true);
    expect(s.check()).toEqual([]);
  });

  it("leader crash mid-pipeline: writes in flight either commit or stay unknown, later writes succeed", () => {
    const s = new Scenario({ seed: 2 }).cell("vol-1");
    s.put("vol-1", "x", bytes("0"));
    const leader = s.leader("vol-1") as string;
    const inFlight = [1, 2, 3, 4, 5].map((i) => s.startPut("vol-1", "x", bytes(`p${i}`)));
    s.run(0.5).crash(leader);
    s.world.runUntil(() => inFlight.every((op) => op.returnMs !== null || op.failure !== null), 20_000);
    expect(inFlight.every((op) => op.output?.status === "committed" || op.failure === "outcome_unknown")).toBe(true);
    expect(s.put("vol-1", "x", bytes("after")).output?.status).toBe("committed");
    expect(s.leader("vol-1")).not.toBe(leader);
    expect(text(s.get("vol-1", "x"))).toBe("after");
    expect(s.check()).toEqual([]);
  });

  it("minority partition: the majority side elects a leader and commits; the minority cannot", () => {
    const s = new Scenario({ seed: 3 }).cell("vol-1");
    s.put("vol-1", "x", bytes("1"));
    const leader = s.leader("vol-1") as string;
    const minority = [leader, seven.find((id) => id !== leader) as string];
    const majority = seven.filter((id) => !minority.includes(id));
    s.partition(minority, majority);
    s.world.partition(minority, s.world.clients.map((c) => c.address));
    expect(s.put("vol-1", "x", bytes("2")).output?.status).toBe("committed");
    expect(majority).toContain(s.statuses("vol-1").find((n) => n.role === "leader" && majority.includes(n.serverId))?.serverId);
    s.heal().run(2000);
    expect(text(s.get("vol-1", "x"))).toBe("2");
    expect(s.check()).toEqual([]);
  });

  it("majority partition: with only 3 of 7 reachable, no write commits until the partition heals", () => {
    const s = new Scenario({ seed: 4 }).cell("vol-1");
    s.put("vol-1", "x", bytes("1"));
    s.partition(["s1", "s2", "s3"], ["s4", "s5", "s6", "s7"]);
    s.world.partition(["s4", "s5", "s6", "s7"], s.world.clients.map((c) => c.address));
    s.operationDeadlineMs = 3000;
    const blocked = s.put("vol-1", "x", bytes("2"));
    expect(blocked.output).toBeUndefined();
    s.heal();
    s.operationDeadlineMs = 15_000;
    s.run(15_000);
    expect(s.put("vol-1", "y", bytes("3")).output?.status).toBe("committed");
    expect(s.check()).toEqual([]);
  });

  it("duelling proposers: clients at different nodes force elections at once; one value per slot", () => {
    const s = new Scenario({ seed: 5 }).cell("vol-1");
    const clients = [s.newClient(), s.newClient(), s.newClient()];
    const ops = clients.flatMap((c, i) => [1, 2, 3].map((j) => s.world.transact(c, "vol-1", { conditions: [], reads: [], writes: [{ item: "n", op: "add", delta: BigInt(i * 10 + j) }] })));
    s.world.runUntil(() => ops.every((op) => op.returnMs !== null || op.failure !== null), 20_000);
    expect(ops.filter((op) => op.output?.status === "committed").length).toBe(9);
    expect(s.get("vol-1", "n")).toBe(1n + 2n + 3n + 11n + 12n + 13n + 21n + 22n + 23n);
    expect(s.check()).toEqual([]);
  });

  it("dirty reboot of all 7 nodes at once loses nothing acknowledged", () => {
    const s = new Scenario({ seed: 6 }).cell("vol-1");
    for (let i = 0; i < 20; i++) s.add("vol-1", "n", 1n);
    const pending = [s.startPut("vol-1", "x", bytes("racing"))];
    s.run(0.3).crash(...seven).run(500).restart(...seven);
    expect(s.add("vol-1", "n", 1n).output?.status).toBe("committed");
    expect(s.get("vol-1", "n")).toBe(21n);
    expect(pending[0]?.returnMs === null || pending[0]?.output?.status === "committed").toBe(true);
    expect(s.check()).toEqual([]);
  });

  it("membership change during a partition completes on the majority side and reaches the rest later", () => {
    const s = new Scenario({ seed: 7, servers: 9 }).cell("vol-1");
    s.put("vol-1", "x", bytes("1"));
    s.partition(["s7"], ["s1", "s2", "s3", "s4", "s5", "s6", "s8", "s9"]);
    const result = s.changeMembership("vol-1", { add: "s8", remove: { serverId: "s7", incarnation: 7 } });
    expect(typeof result === "object" && result.status).toBe("applied");
    expect(s.put("vol-1", "x", bytes("2")).output?.status).toBe("committed");
    s.heal().run(3000);
    const s8 = s.statuses("vol-1").find((n) => n.serverId === "s8");
    expect(s8?.members.map((m) => m.serverId).sort()).toEqual(["s1", "s2", "s3", "s4", "s5", "s6", "s8"]);
    expect(text(s.get("vol-1", "x"))).toBe("2");
    expect(s.check()).toEqual([]);
  });

  it("a cell moves off a server and back (ABA): the new incarnation ignores the old one's traffic", () => {
    const s = new Scenario({ seed: 8, servers: 9 }).cell("vol-1");
    s.put("vol-1", "x", bytes("1"));
    const away = s.changeMembership("vol-1", { add: "s8", remove: { serverId: "s1", incarnation: 1 } });
    expect(typeof away === "object" && away.status).toBe("applied");
    s.put("vol-1", "x", bytes("2"));
    s.run(1000);
    const back = s.changeMembership("vol-1", { add: "s1", remove: { serverId: "s8", incarnation: 8 } });
    expect(typeof back === "object" && back.status === "applied" && back.added).toEqual({ serverId: "s1", incarnation: 9 });
    s.put("vol-1", "x", bytes("3"));
    s.run(2000);
    const s1 = s.statuses("vol-1").find((n) => n.serverId === "s1");
    expect(s1?.node.incarnation).toBe(9);
    expect(s1?.applied).toBe(s.statuses("vol-1").find((n) => n.role === "leader")?.applied);
    expect(text(s.get("vol-1", "x"))).toBe("3");
    expect(s.check()).toEqual([]);
  });
});
