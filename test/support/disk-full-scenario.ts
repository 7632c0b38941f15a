/**
 * A server whose disk fills up, run in a private mount namespace (`unshare --mount`, by
 * test/disk-full.test.ts): s1's data directory is a small tmpfs mounted in that namespace only,
 * filled by a ballast file until a little is left, so that s1's storage runs out while its peers'
 * does not. The mount, its ballast and everything in it vanish with the namespace's last process.
 *
 * 1. 7 servers, cells of 7 (every cell has a node on s1); one client puts 4,000-byte values until
 *    s1 stops by itself, and keeps the value of every put it saw acknowledged.
 * 2. s1 started again with the disk still full: it must refuse to start, saying the disk is full.
 * 3. The ballast removed and s1 started again: it replays its journal and answers.
 * 4. Three other servers killed: every cell's majority now needs s1, so each acknowledged value
 *    is read back (linearizably) through a majority that includes s1. That checks s1 came back
 *    with its nodes, promises and votes in working order and that no acknowledged value was lost;
 *    the values themselves may come from the leader's copy rather than s1's.
 *
 * Usage: node --import tsx test/support/disk-full-scenario.ts DIR [--planted-loss]
 * Prints one JSON object (DiskFullResult) as its last line. `--planted-loss` empties s1's data
 * directory before step 3, a storage that loses what it acknowledged, which step 4 must catch.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { PhysaliaClient } from "../../src/index.ts";
import { freeBytes } from "../../src/storage/index.ts";
import { localTopology } from "./colony.ts";
import { ProcessColony } from "./fault-colony.ts";

export interface DiskFullResult {
  /** Puts acknowledged while s1's disk filled up. */
  readonly acknowledged: number;
  /** How s1 ended: its exit as ProcessColony saw it, and its last log line. */
  readonly s1Exit: string | null;
  readonly s1LastLog: string;
  /** s1's warnings that its disk was nearly full, logged before it stopped. */
  readonly s1Warnings: readonly string[];
  /** s1 started again on the full disk: its exit code and what it printed. */
  readonly fullRestartExit: number | null;
  readonly fullRestartOutput: string;
  /** s1 started again once the ballast was gone: ms until /healthz answered. */
  readonly restartHealthyMs: number;
  /** Acknowledged values read back, with s2, s3 and s4 killed, and those that were not. */
  readonly readBack: number;
  readonly missing: readonly string[];
  /** Servers that exited by themselves, other than s1 when its disk filled. */
  readonly otherExits: readonly string[];
}

const dir = process.argv[2];
if (dir === undefined) throw new Error("usage: disk-full-scenario.ts DIR [--planted-loss]");
const plantedLoss = process.argv.includes("--planted-loss");
const cells = Array.from({ length: 24 }, (_, i) => `disk-${i}`);
const itemsPerCell = 12; // 12 values of 4,000 bytes stay within a cell's 64 KiB
const fillMs = 60_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function valueNumbered(sequence: number): Uint8Array {
  const value = new Uint8Array(4000).fill(0x61 + (sequence % 26));
  new DataView(value.buffer).setUint32(0, sequence);
  return value;
}

const topology = await localTopology(7);
const colony = new ProcessColony(dir, topology);
const s1Data = join(dir, "s1");
mkdirSync(s1Data, { recursive: true });
execFileSync("mount", ["-t", "tmpfs", "-o", "size=48m", "tmpfs", s1Data]);
const clients: PhysaliaClient[] = [];
try {
  await colony.startWithClients(cells, clients, 1);
  const client = clients[0] as PhysaliaClient;
  const ballast = join(s1Data, "ballast");
  writeFileSync(ballast, Buffer.alloc(Math.max(0, (freeBytes(s1Data) ?? 0) - 256 * 1024)));

  // 1. Puts until s1 stops by itself. A put whose outcome is unknown leaves its item unchecked.
  const acknowledged = new Map<string, Uint8Array>();
  const unsure = new Set<string>();
  let sequence = 0;
  const s1Stopped = () => colony.unexpectedExits.some((exit) => exit.startsWith("server s1 "));
  const deadline = performance.now() + fillMs;
  await Promise.all(
    cells.map(async (cellKey) => {
      const cell = client.cell(cellKey);
      for (let round = 0; !s1Stopped() && performance.now() < deadline; round++) {
        const item = `item-${round % itemsPerCell}`;
        const key = `${cellKey}/${item}`;
        const value = valueNumbered(sequence++);
        try {
          await cell.put(item, value);
          acknowledged.set(key, value);
        } catch {
          unsure.add(key);
        }
      }
    }),
  );
  const s1Exit = colony.unexpectedExits.find((exit) => exit.startsWith("server s1 ")) ?? null;
  const s1Log = readFileSync(colony.logFile("s1"), "utf8").trim().split("\n");
  const s1LastLog = s1Log.at(-1) ?? "";
  const s1Warnings = s1Log.filter((line) => line.includes("the disk is nearly full")).slice(0, 5);
  for (const key of unsure) acknowledged.delete(key);
  // s1 is gone: forget its process so that it can be started again.
  await colony.kill("s1");

  // 2. Started again on the full disk.
  const config = join(dir, "s1.json");
  const full = (() => {
    try {
      const output = execFileSync(
        process.execPath,
        ["--import", "tsx", "src/cli/main.ts", "server", "--config", config],
        {
          cwd: join(import.meta.dirname, "..", ".."),
          encoding: "utf8",
          stdio: ["ignore", "pipe", "pipe"],
          timeout: 30_000,
        },
      );
      return { exit: 0, output };
    } catch (error) {
      const e = error as { status: number | null; stdout?: string; stderr?: string };
      return { exit: e.status, output: `${e.stdout ?? ""}${e.stderr ?? ""}` };
    }
  })();

  // 3. Space freed, started again.
  rmSync(ballast);
  // Everything s1 stored goes, as with a disk replaced under a server that is not rebuilt. (A
  // journal file deleted alone is refused at start, journal.test.ts; this loss is not.)
  if (plantedLoss)
    for (const name of readdirSync(s1Data)) rmSync(join(s1Data, name), { recursive: true, force: true });
  colony.start("s1");
  const restartHealthyMs = Math.round(await colony.healthy("s1", 30_000));

  // 4. Without s2, s3 and s4, every cell's majority includes s1.
  for (const id of ["s2", "s3", "s4"]) await colony.kill(id);
  const missing: string[] = [];
  let readBack = 0;
  await Promise.all(
    cells.map(async (cellKey) => {
      const cell = client.cell(cellKey);
      // A cell that did not answer one read is not asked again: each read may wait out the
      // client's whole operation time, and the cell's other values count as missing with it.
      let unanswered: string | null = null;
      for (const [key, value] of acknowledged) {
        if (!key.startsWith(`${cellKey}/`)) continue;
        const item = key.slice(cellKey.length + 1);
        if (unanswered !== null) {
          missing.push(`${key}: not read, the cell did not answer (${unanswered})`);
          continue;
        }
        try {
          const read = await cell.get(item);
          if (read instanceof Uint8Array && Buffer.from(read).equals(Buffer.from(value))) readBack += 1;
          else missing.push(`${key}: read ${read instanceof Uint8Array ? `another value` : String(read)}`);
        } catch (error) {
          unanswered = (error as Error).message;
          missing.push(`${key}: ${unanswered}`);
        }
      }
    }),
  );
  const result: DiskFullResult = {
    acknowledged: acknowledged.size,
    s1Exit,
    s1LastLog,
    s1Warnings,
    fullRestartExit: full.exit,
    fullRestartOutput: full.output.trim().slice(-2000),
    restartHealthyMs,
    readBack,
    missing: missing.slice(0, 20),
    otherExits: colony.unexpectedExits.filter((exit) => exit !== s1Exit),
  };
  await sleep(0);
  console.log(JSON.stringify(result));
} finally {
  await Promise.all(clients.map((c) => c.close()));
  await colony.stopAll();
}
