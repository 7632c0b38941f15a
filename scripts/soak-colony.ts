/**
 * A long soak of real server processes under randomized faults: for each seed, a fresh colony of
 * 9 server processes (lmdb, journals, TCP on 127.0.0.1), closed-loop SDK clients on a few cells,
 * and a schedule of faults drawn from the seed:
 *   - kill -9 of a random server, restarted after a while;
 *   - kill -9 of a majority of one cell's members at once, restarted after a while;
 *   - kill -9 of the server leading a cell, restarted after a while;
 *   - SIGSTOP of a random server (frozen with its sockets open, as one cut off or stalled), or of
 *     a cell's leader (which wakes up believing it still leads), resumed with SIGCONT after a while;
 *   - with `--partitions`, network partitions too, lifted after a while: a random server cut off
 *     from the others both ways, a cell's leader unheard (its packets to the others dropped) or
 *     deaf (theirs to it dropped), the servers split in two groups, and the clients of one of two
 *     addresses (half connect from 127.0.0.1, half from 127.0.0.2) cut off from a cell's leader,
 *     whose followers relay their requests to it. The soak then runs in a
 *     private network namespace of its own, servers on their own loopback addresses, the cuts
 *     made by nftables rules there (test/support/netlab.ts; needs root, installs nftables from
 *     Debian's archive when missing).
 * Faults overlap. At the end every server runs again, the clients stop, every cell is read once
 * more, and each cell's history is judged by the simulator's linearizability checker and cell
 * model: every acknowledged write must be seen, every read must fit one order of the writes.
 *
 *   npm run soak:colony -- [--seeds N] [--from SEED] [--seconds S] [--clients N] [--cells N] [--partitions]
 *
 * Prints one line per seed and ends with "N passed, N failed"; exits 1 if any seed failed, and
 * keeps that seed's data directory (servers' lmdb and journals) for inspection. Every process it
 * starts is stopped by pid, also on SIGINT and SIGTERM.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Prng } from "../src/core/index.ts";
import { placeCell } from "../src/discovery/index.ts";
import type { PhysaliaClient } from "../src/index.ts";
import { localTopology } from "../test/support/colony.ts";
import {
  checkHistory,
  KilledWhileStarting,
  leaderServerOf,
  ProcessColony,
  runWorkload,
} from "../test/support/fault-colony.ts";
import {
  type Cut,
  ensureNftables,
  LabFirewall,
  labEnvironmentVariable,
  labHost,
  partitionsUnavailable,
  privateNetworkCommand,
} from "../test/support/netlab.ts";
import { wholeNumberOption } from "./argv.ts";

const option = (name: string, fallback: number) => wholeNumberOption(name, fallback, 1);

const seeds = option("seeds", 10);
const from = option("from", 1);
const seconds = option("seconds", 60);
const clientsCount = option("clients", 8);
/** Where the clients connect from with --partitions (the even ones from the first). */
const clientHosts = ["127.0.0.1", "127.0.0.2"] as const;
const cellsCount = option("cells", 8);
const partitions = process.argv.includes("--partitions");

// Partitions need a network of the soak's own: run again inside a private network namespace.
if (partitions && process.env[labEnvironmentVariable] !== "1") {
  const unavailable = partitionsUnavailable();
  if (unavailable !== null) {
    console.error(`--partitions cannot run here: ${unavailable}`);
    process.exit(2);
  }
  ensureNftables((line) => console.error(line));
  const { command, args, env } = privateNetworkCommand([...process.execArgv, ...process.argv.slice(1)]);
  const run = spawnSync(command, args, { stdio: "inherit", env });
  process.exit(run.status ?? 1);
}
const firewall = partitions ? new LabFirewall() : null;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let current: { colony: ProcessColony; clients: PhysaliaClient[] } | null = null;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    console.error(`\n${signal}: stopping the servers this soak started`);
    const colony = current?.colony;
    const stop = colony === undefined ? Promise.resolve() : colony.stopAll();
    void stop.finally(() => process.exit(130));
  });
}

// Whatever ends this process (an error nothing caught included) stops the servers it started.
process.on("exit", () => current?.colony.killAllNow());

/** One seed's run; returns the problems found (none: it passed). */
async function soak(seed: number): Promise<string[]> {
  const random = new Prng(seed);
  const dir = mkdtempSync(join(tmpdir(), `physalia-soak-${seed}-`));
  const topology = await localTopology(9, 7, "soak", partitions ? labHost : undefined);
  const hostOf = (id: string) => topology.servers.find((s) => s.id === id)?.host as string;
  const colony = new ProcessColony(dir, topology);
  const clients: PhysaliaClient[] = [];
  current = { colony, clients };
  const cells = Array.from({ length: cellsCount }, (_, i) => `soak-${i}`);
  const counts = {
    kills: 0,
    majorityKills: 0,
    leaderKills: 0,
    pauses: 0,
    leaderPauses: 0,
    isolations: 0,
    leadersUnheard: 0,
    leadersDeaf: 0,
    splits: 0,
    clientsCut: 0,
  };
  const problems: string[] = [];
  try {
    // With partitions, half the clients connect from a second address, which a cut can single out.
    await colony.startWithClients(cells, clients, clientsCount, (i) =>
      partitions && i % 2 === 1 ? clientHosts[1] : undefined,
    );
    const workload = runWorkload(clients, cells, seed);

    // Faults end (every server restarted or resumed) before the clients stop. A recovery that
    // fails (a server that exits by itself or does not come up) fails the seed.
    const recoveries: Promise<void>[] = [];
    const later = (ms: number, action: () => Promise<void> | void) =>
      recoveries.push(
        sleep(ms)
          .then(action)
          .catch((error: Error) => {
            problems.push(error.message);
          }),
      );
    const restart = async (id: string) => {
      if (colony.isRunning(id)) return;
      colony.start(id);
      try {
        await colony.healthy(id);
      } catch (error) {
        // Killed again while it started: that kill's own recovery starts it again.
        if (!(error instanceof KilledWhileStarting)) throw error;
      }
    };
    const leaderOf = (cellKey: string) => leaderServerOf(clients[0] as PhysaliaClient, cellKey, 1000);
    const deadline = performance.now() + seconds * 1000;
    while (performance.now() < deadline) {
      await sleep(300 + random.below(1500));
      const running = colony.ids.filter((id) => colony.isRunning(id) && !colony.isPaused(id));
      if (running.length === 0) continue;
      const downMs = 200 + random.below(2800);
      if (firewall !== null && random.chance(0.4)) {
        // A partition, lifted after downMs; partitions overlap with each other and with the rest.
        const kind = random.below(5);
        let cuts: Cut[] = [];
        if (kind === 3) {
          const shuffled = random.shuffle([...colony.ids]);
          const cut = 1 + random.below(shuffled.length - 1);
          counts.splits += 1;
          cuts = firewall.split(shuffled.slice(0, cut).map(hostOf), shuffled.slice(cut).map(hostOf));
        } else {
          const victim =
            kind === 0
              ? (colony.ids[random.below(colony.ids.length)] as string)
              : await leaderOf(cells[random.below(cells.length)] as string);
          if (victim === null) continue;
          const others = colony.ids.filter((id) => id !== victim).map(hostOf);
          if (kind === 0) {
            counts.isolations += 1;
            cuts = firewall.split([hostOf(victim)], others);
          } else if (kind === 1) {
            counts.leadersUnheard += 1;
            cuts = [firewall.cut([hostOf(victim)], others)];
          } else if (kind === 4) {
            // The clients of one address cut off from the leader; the servers and the other
            // clients still reach it.
            counts.clientsCut += 1;
            cuts = firewall.split([clientHosts[random.below(2)] as string], [hostOf(victim)]);
          } else {
            counts.leadersDeaf += 1;
            cuts = [firewall.cut(others, [hostOf(victim)])];
          }
        }
        later(downMs, () => firewall.restore(cuts));
        continue;
      }
      const pick = random.below(100);
      if (pick >= 30 && pick < 45) {
        const cellKey = cells[random.below(cells.length)] as string;
        const members = placeCell(cellKey, topology.servers, topology.cellSize);
        const start = random.below(members.length);
        const majority = [0, 1, 2, 3].map((k) => members[(start + k) % members.length] as string);
        counts.majorityKills += 1;
        await Promise.all(majority.map((id) => colony.kill(id)));
        later(downMs, async () => {
          await Promise.all(majority.map((id) => restart(id)));
        });
        continue;
      }
      // One server killed or frozen: a random one, or the leader of a random cell.
      const kill = pick < 60;
      const ofLeader = (pick >= 45 && pick < 60) || pick >= 80;
      const victim = ofLeader
        ? await leaderOf(cells[random.below(cells.length)] as string)
        : (running[random.below(running.length)] as string);
      if (victim === null || !colony.isRunning(victim) || colony.isPaused(victim)) continue;
      counts[kill ? (ofLeader ? "leaderKills" : "kills") : ofLeader ? "leaderPauses" : "pauses"] += 1;
      if (kill) {
        await colony.kill(victim);
        later(downMs, () => restart(victim));
      } else {
        colony.pause(victim);
        later(downMs, () => colony.resume(victim));
      }
    }
    await Promise.all(recoveries);
    firewall?.heal();
    for (const id of colony.ids) {
      colony.resume(id);
      await restart(id);
    }
    await sleep(2000);
    const history = await workload.stop();
    problems.push(...colony.unexpectedExits);
    const verdict = checkHistory(history, cells);
    for (const [cellKey, result] of verdict.cells)
      if (result !== "ok") problems.push(`cell ${cellKey}: ${result}`);
    if (verdict.acknowledgedWrites === 0) problems.push("no write was acknowledged");
    const fewest = Math.min(...verdict.acknowledgedWritesByCell.values());
    for (const [cellKey, writes] of verdict.acknowledgedWritesByCell)
      if (writes === 0) problems.push(`cell ${cellKey}: no write was acknowledged`);
    console.log(
      `seed ${seed}: ${problems.length === 0 ? "ok" : "FAILED"}; ${verdict.operations} operations, ` +
        `${verdict.acknowledgedWrites} acknowledged writes (${fewest} in the cell with fewest), ${verdict.reads} reads, ${verdict.failed} failed; ` +
        `faults: ${counts.kills} kills, ${counts.majorityKills} majority kills, ${counts.leaderKills} leader kills, ` +
        `${counts.pauses} pauses, ${counts.leaderPauses} leader pauses` +
        (firewall === null
          ? ""
          : `; partitions: ${counts.isolations} isolations, ${counts.leadersUnheard} leaders unheard, ` +
            `${counts.leadersDeaf} leaders deaf, ${counts.splits} splits, ${counts.clientsCut} clients cut from a leader`),
    );
  } catch (error) {
    problems.push(`the run failed: ${(error as Error).message}`);
    console.log(`seed ${seed}: FAILED; ${(error as Error).message}`);
  } finally {
    firewall?.heal();
    await Promise.all(clients.map((c) => c.close()));
    await colony.stopAll();
    current = null;
    if (problems.length === 0) rmSync(dir, { recursive: true, force: true });
    else console.log(`  data kept in ${dir}\n  ${problems.join("\n  ")}`);
  }
  return problems;
}

let failed = 0;
for (let i = 0; i < seeds; i++) {
  const seed = from + i;
  if ((await soak(seed)).length > 0) {
    failed += 1;
    // The seed draws the same faults again; their timing, and so the run, differ.
    console.log(`  run the seed again: npm run soak:colony -- --seeds 1 --from ${seed} --seconds ${seconds}`);
  }
}
console.log(`${seeds - failed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
