/**
 * Network partitions between real server processes (run by test/colony-faults.test.ts inside a
 * private network namespace, `runInPrivateNetwork`): 9 servers on their own loopback addresses,
 * 8 cells, 8 clients writing and reading all the while (4 connecting from 127.0.0.1, 4 from
 * 127.0.0.2), and five cuts in turn, each held for `holdMs` and then lifted:
 *
 * 1. a cell's leader cut off from every other server, both ways (its clients still reach it);
 * 2. a cell's leader unheard: its packets to the other servers dropped, theirs still arriving;
 * 3. a cell's leader deaf: the other servers' packets to it dropped, its own still arriving;
 * 4. the servers split 4 | 5, a cell's leader on the side of 4;
 * 5. the clients of 127.0.0.2 cut off from a cell's leader, both ways (the servers and the other
 *    clients still reach it): their requests go around it, relayed by its followers.
 *
 * Then every cut is lifted and it measures how long until no server suspects a peer and every
 * cell takes a write again. Prints one JSON line (ScenarioResult) last; the test judges it.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { PhysaliaClient } from "../../src/index.ts";
import { localTopology } from "./colony.ts";
import { checkHistory, leaderServerOf, ProcessColony, runWorkload } from "./fault-colony.ts";
import { LabFirewall, labHost } from "./netlab.ts";

export interface ScenarioOptions {
  /** How long each cut is held. */
  readonly holdMs: number;
}

export interface PhaseResult {
  readonly name: string;
  /** The server whose cell's leadership the cut was aimed at. */
  readonly victim: string;
  /** The suspicions in the colony near the end of the cut ("s1>s9": s1 suspects s9). */
  readonly suspicionsDuring: string[];
  /** Writes acknowledged while the cut held, over all cells. */
  readonly writesDuring: number;
  /** Writes to the cell whose leader the cut was aimed at, acknowledged while it held. */
  readonly cellWritesDuring: number;
  /** The cell's leader as its nodes named it at the end of the cut (null: none named in 2 s). */
  readonly leaderAtEnd: string | null;
  /** Writes of the clients a cut of clients cut off, to the cell, acknowledged while it held. */
  readonly cutClientsCellWritesDuring: number;
  /** Requests the servers relayed to a leader while the cut held (physalia_requests_relayed_total). */
  readonly relayedDuring: number;
}

export interface ScenarioResult {
  readonly phases: PhaseResult[];
  /** From lifting the last cut until no server suspected a peer (null: not within 15 s). */
  readonly unsuspectedAfterMs: number | null;
  /** Per cell, from lifting the last cut until a write to it was acknowledged (null: not within 10 s). */
  readonly writeAfterMs: Record<string, number | null>;
  readonly operations: number;
  readonly acknowledgedWrites: number;
  readonly fewestWritesInACell: number;
  readonly failed: number;
  /** Per cell: "ok" or what the checker found. */
  readonly cells: Record<string, string>;
  readonly unexpectedExits: string[];
}

/** The phase that cuts clients, not servers, from a leader. */
export const clientsCutPhase = "clients cut off from a leader";
/** Where the clients that phase cuts off connect from; the others connect from 127.0.0.1. */
const cutClientsHost = "127.0.0.2";
const clientsCount = 8;
/** The clients connecting from cutClientsHost, by their index in the workload. */
const cutClients = Array.from({ length: clientsCount / 2 }, (_, i) => clientsCount / 2 + i);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** The colony running now, for the exit handler. */
let running: ProcessColony | null = null;
const cells = Array.from({ length: 8 }, (_, i) => `vol-${i}`);

/**
 * Every suspicion in the colony now, as "s1>s9" (s1 suspects s9), from each server's /status; a
 * server that does not answer within 5 s (a busy one, its first answer costs compiling) adds
 * "s1?" instead.
 */
async function suspicions(colony: ProcessColony): Promise<string[]> {
  const lists = await Promise.all(
    colony.topology.servers.map(async (s) => {
      try {
        const { suspectedPeers } = await colony.status(s.id, 5000);
        return suspectedPeers.map((peer) => `${s.id}>${peer}`);
      } catch {
        return [`${s.id}?`];
      }
    }),
  );
  return lists.flat();
}

/** Requests relayed so far by every server (a server that does not answer in 5 s counts 0). */
async function relayed(colony: ProcessColony): Promise<number> {
  const counts = await Promise.all(
    colony.ids.map((id) => colony.metric(id, "physalia_requests_relayed_total", 5000).catch(() => 0)),
  );
  return counts.reduce((a, b) => a + b, 0);
}

export async function runScenario(options: ScenarioOptions): Promise<ScenarioResult> {
  const firewall = new LabFirewall();
  const dir = mkdtempSync(join(tmpdir(), "physalia-partitions-"));
  const topology = await localTopology(9, 7, "lab", labHost);
  const colony = new ProcessColony(dir, topology);
  running = colony;
  const clients: PhysaliaClient[] = [];
  const hostOf = (id: string) => topology.servers.find((s) => s.id === id)?.host as string;
  const othersOf = (id: string) => colony.ids.filter((other) => other !== id).map(hostOf);
  try {
    await colony.startWithClients(cells, clients, clientsCount, (i) =>
      cutClients.includes(i) ? cutClientsHost : undefined,
    );
    const workload = runWorkload(clients, cells, 7);
    const observer = clients[0] as PhysaliaClient;
    await sleep(2000);

    const phases: PhaseResult[] = [];
    let healedAt = 0;
    const phase = async (name: string, cellKey: string, cut: (victim: string) => void) => {
      const victim = await leaderServerOf(observer, cellKey, 10_000);
      if (victim === null) throw new Error(`no node of ${cellKey} named a leader in 10 s`);
      const writesBefore = workload.acknowledgedWrites();
      const cellWritesBefore = workload.acknowledgedWrites(cellKey);
      const cutClientsWritesBefore = workload.acknowledgedWrites(cellKey, cutClients);
      const relayedBefore = await relayed(colony);
      const cutAt = performance.now();
      cut(victim);
      // Past the failure detector's suspicion time (1.2 s), every server on either side of the
      // cut suspects those on the other.
      await sleep(Math.min(2000, options.holdMs / 2));
      // (The lab reads /status from 127.0.0.1: not through a cut of the clients.)
      const suspicionsDuring = name === clientsCutPhase ? [] : await suspicions(colony);
      await sleep(Math.max(0, cutAt + options.holdMs - performance.now()));
      // Still cut: who leads the cell now, as its nodes tell a client.
      const leaderAtEnd = await leaderServerOf(observer, cellKey, 2000);
      phases.push({
        name,
        victim,
        suspicionsDuring,
        writesDuring: workload.acknowledgedWrites() - writesBefore,
        cellWritesDuring: workload.acknowledgedWrites(cellKey) - cellWritesBefore,
        leaderAtEnd,
        cutClientsCellWritesDuring:
          name === clientsCutPhase
            ? workload.acknowledgedWrites(cellKey, cutClients) - cutClientsWritesBefore
            : 0,
        relayedDuring: (await relayed(colony)) - relayedBefore,
      });
      firewall.heal();
      healedAt = performance.now();
      await sleep(1500);
    };
    await phase("leader cut off both ways", "vol-1", (v) => firewall.split([hostOf(v)], othersOf(v)));
    await phase("leader unheard", "vol-2", (v) => firewall.cut([hostOf(v)], othersOf(v)));
    await phase("leader deaf", "vol-3", (v) => firewall.cut(othersOf(v), [hostOf(v)]));
    await phase("split 4 | 5, a leader with the 4", "vol-4", (v) => {
      const rest = colony.ids.filter((id) => id !== v);
      firewall.split([v, ...rest.slice(0, 3)].map(hostOf), rest.slice(3).map(hostOf));
    });
    // The clients of 127.0.0.2 time out at the leader and send the cell's requests to its other
    // nodes, which still hear the leader (the clients of 127.0.0.1 keep it at work) and relay
    // them to it.
    await phase(clientsCutPhase, "vol-5", (v) => firewall.split([cutClientsHost], [hostOf(v)]));

    // The last cut was lifted at healedAt: how long until the colony is whole again.
    let unsuspectedAfterMs: number | null = null;
    while (performance.now() - healedAt < 15_000) {
      if ((await suspicions(colony)).length === 0) {
        unsuspectedAfterMs = Math.round(performance.now() - healedAt);
        break;
      }
      await sleep(100);
    }
    const writeAfterMs: Record<string, number | null> = {};
    await Promise.all(
      cells.map(async (cellKey) => {
        writeAfterMs[cellKey] = await workload.nextAcknowledgedWrite(cellKey, healedAt, 10_000);
      }),
    );
    const history = await workload.stop();
    const verdict = checkHistory(history, cells);
    return {
      phases,
      unsuspectedAfterMs,
      writeAfterMs,
      operations: verdict.operations,
      acknowledgedWrites: verdict.acknowledgedWrites,
      fewestWritesInACell: Math.min(...verdict.acknowledgedWritesByCell.values()),
      failed: verdict.failed,
      cells: Object.fromEntries(verdict.cells),
      unexpectedExits: [...colony.unexpectedExits],
    };
  } finally {
    firewall.heal();
    await Promise.all(clients.map((c) => c.close()));
    await colony.stopAll();
    running = null;
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  // However this process ends (an error, or SIGTERM from a test that gave up), its servers end.
  process.on("exit", () => running?.killAllNow());
  process.on("SIGTERM", () => process.exit(143));
  const options = JSON.parse(process.argv[2] ?? "{}") as Partial<ScenarioOptions>;
  const result = await runScenario({ holdMs: options.holdMs ?? 4000 });
  console.log(JSON.stringify(result));
}
