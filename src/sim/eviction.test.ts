/**
 * Nodes evicted from memory and loaded again must not answer from further back than they had
 * applied: a quiet cell whose nodes are all evicted has no leader to tell them what was chosen
 * after their latest snapshot.
 */
import { describe, expect, it } from "vitest";
import { limits } from "../core/index.ts";
import { type HistoryEntry, SimWorld } from "./world.ts";

const put = (n: number) => ({
  conditions: [],
  reads: [],
  writes: [{ item: "v", op: "put" as const, value: BigInt(n) }],
});
const readV = { conditions: [], reads: ["v"], writes: [] };

describe("a quiet cell whose nodes were all evicted", () => {
  it("answers eventual reads on every node with what it had applied, past its last periodic snapshot", () => {
    const world = new SimWorld({ seed: 7, servers: 7, residentIdleMs: 1_000 });
    const servers = world.serverIds();
    world.createCell("vol-1", 7, servers);
    world.run(10);
    // More writes than a snapshot interval and fewer than two: the last ones are past it.
    const writes = limits.snapshotIntervalEntries + 6;
    const writer = world.addClient();
    let done = 0;
    const next = (): void => {
      if (done === writes) return;
      world.transact(writer, "vol-1", put(done + 1), (entry) => {
        expect(entry.failure).toBeNull();
        done += 1;
        next();
      });
    };
    next();
    expect(world.runUntil(() => done === writes, 60_000)).toBe(true);
    // Quiet long enough for every node to be evicted (sweeps run at each heartbeat tick).
    world.run(10_000);
    for (const id of servers) expect(world.server(id).status().residentNodes, id).toBe(0);

    // One reader per server, each preferring its own: an eventual read loads that server's node.
    const answers: HistoryEntry[] = [];
    for (const id of servers) {
      const reader = world.addClient({ distance: (serverId) => (serverId === id ? 0 : 1) });
      world.read(reader, "vol-1", readV, "eventual", (entry) => answers.push(entry));
    }
    expect(world.runUntil(() => answers.length === servers.length, 30_000)).toBe(true);
    for (const entry of answers) {
      expect(entry.failure).toBeNull();
      expect(entry.index).toBeGreaterThanOrEqual(writes);
      expect(entry.output).toMatchObject({ reads: [{ item: "v", value: BigInt(writes) }] });
    }
    expect(world.violations).toEqual([]);
  });
});
