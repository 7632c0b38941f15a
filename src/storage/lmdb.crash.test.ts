/**
 * Real-process crash test. This file is both the test and its child: run by vitest it defines
 * the test; run as `node --import tsx lmdb.crash.test.ts` with PHYSALIA_CRASH_CHILD_DIR set it is
 * the child, which writes batches in a loop and prints `durable <n>` after each done(null).
 * The parent kills the child with SIGKILL mid-stream, reopens the directory and checks that every
 * batch the child reported durable is there and intact, that the batch in flight is all or
 * nothing, and that no record is corrupt. Three rounds share the directory, so a child also
 * starts on an environment (and a journal) left behind by a killed one.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { CellMachine, type Command, commandCodec, OPERATION_FORMAT_VERSION } from "../cell/index.ts";
import {
  initialMembership,
  type LogEntry,
  makeBallot,
  type NodeWrite,
  type Snapshot,
} from "../paxos/index.ts";
import { type CheckpointPolicy, LmdbStorage } from "./lmdb.ts";
import type { StorageBatch } from "./port.ts";

const trackedCells = 8;
const fillerCellsMax = 40;
/** Batches the child writes at most, and for how long: it is meant to be killed well before. */
const childBatchesMax = 200_000;
const childRunMsMax = 30_000;
const rounds = 3;
/** Durable batches the parent waits for before it picks a moment to kill. */
const reportedBeforeKillMin = 40;

// ---------------------------------------------------------------- the batches (child and parent)

const snapshotState: Uint8Array = (() => {
  const machine = new CellMachine();
  machine.apply(command(1, 1), { index: 1, stampMs: 1_000, stampBallot: makeBallot(1, 1) });
  return machine.snapshot();
})();

function command(session: number, n: number): Command {
  return {
    version: OPERATION_FORMAT_VERSION,
    session,
    seq: 1,
    newSession: true,
    op: {
      type: "txn",
      txn: {
        conditions: [],
        reads: [],
        writes: [{ item: `item-${n}`, op: "put", value: new Uint8Array(200).fill(n % 256) }],
      },
    },
  };
}

function snapshotAt(index: number): Snapshot {
  return {
    index,
    membership: initialMembership([
      { serverId: "s1", incarnation: 1 },
      { serverId: "s2", incarnation: 2 },
    ]),
    state: snapshotState,
  };
}

function entryOf(slot: number, cell: number): LogEntry<Command> {
  return {
    slot,
    ballot: makeBallot(slot, 1),
    value: {
      kind: "commands",
      stampMs: slot,
      stampBallot: makeBallot(slot, 1),
      commands: [command(cell, slot)],
    },
  };
}

const trackedKey = (round: number, j: number): string => `r${round}-cell-${j}`;
const fillerKey = (round: number, n: number, k: number): string => `r${round}-f-${n}-${k}`;
const fillersOf = (n: number): number => n % fillerCellsMax;

/** Batch 0 creates the tracked cells; batch n >= 1 appends slot n to three of them and adds fillers. */
function batchNumber(round: number, n: number): StorageBatch<Command> {
  const writes: NodeWrite<Command>[] = [];
  const node = { serverId: "s1", incarnation: 1 };
  if (n === 0) {
    for (let j = 0; j < trackedCells; j++) {
      writes.push({
        cellKey: trackedKey(round, j),
        node,
        promised: null,
        entries: [],
        snapshot: snapshotAt(0),
        truncateThrough: 0,
      });
    }
    return { writes, removed: [], pointers: [] };
  }
  const snapshotting = n % 32 === 0;
  for (let d = 0; d < 3; d++) {
    const j = (n + d) % trackedCells;
    writes.push({
      cellKey: trackedKey(round, j),
      node,
      promised: makeBallot(n, 1),
      entries: [entryOf(n, j)],
      snapshot: snapshotting ? snapshotAt(n - 16) : null,
      truncateThrough: snapshotting ? n - 16 : 0,
    });
  }
  for (let k = 0; k < fillersOf(n); k++) {
    writes.push({
      cellKey: fillerKey(round, n, k),
      node,
      promised: makeBallot(1, 1),
      entries: [entryOf(1, k), entryOf(2, k)],
      snapshot: snapshotAt(0),
      truncateThrough: 0,
    });
  }
  return { writes, removed: [], pointers: [] };
}

// ---------------------------------------------------------------- child

/**
 * Each round checkpoints differently, so the kill lands at different points: round 0 never
 * checkpoints before the kill (a restart replays the whole journal), round 1 checkpoints every
 * few batches, round 2 whenever 16 KiB of journal are written (often inside a checkpoint).
 */
const checkpointPolicyOfRound: readonly Partial<CheckpointPolicy>[] = [
  { intervalMs: 600_000 },
  { cells: 60, intervalMs: 600_000 },
  { journalBytes: 16 * 1024, intervalMs: 600_000 },
];

/** The module a server's storage starts its checkpoint worker from. */
const checkpointWorker = new URL("../cli/checkpoint-worker.ts", import.meta.url);

async function runChild(directory: string, round: number, onWorker: boolean): Promise<void> {
  const storage = LmdbStorage.open({
    path: directory,
    codec: commandCodec,
    checkpoint: checkpointPolicyOfRound[round] ?? {},
    ...(onWorker ? { checkpointWorker } : {}),
  });
  const startedMs = Date.now();
  for (let n = 0; n < childBatchesMax && Date.now() - startedMs < childRunMsMax; n++) {
    await new Promise<void>((resolve, reject) => {
      storage.write(batchNumber(round, n), (error) => (error === null ? resolve() : reject(error)));
    });
    process.stdout.write(`durable ${n}\n`);
  }
  await storage.close();
  process.stdout.write("finished\n");
}

// ---------------------------------------------------------------- parent

/** Problems with one write of batch n in the reopened storage; empty if it is all there. */
function writeProblems(storage: LmdbStorage<Command>, write: NodeWrite<Command>, n: number): string[] {
  const loaded = storage.load(write.cellKey);
  if (loaded.status !== "found") return [`batch ${n}: cell ${write.cellKey} ${loaded.status}`];
  const problems: string[] = [];
  const stored = loaded.node;
  if (write.promised !== null && stored.promised < write.promised)
    problems.push(`batch ${n}: cell ${write.cellKey} promise ${stored.promised} below ${write.promised}`);
  for (const entry of write.entries) {
    if (entry.slot <= stored.snapshot.index) continue; // covered by a later snapshot
    const found = stored.entries.find((e) => e.slot === entry.slot);
    if (found === undefined) problems.push(`batch ${n}: cell ${write.cellKey} lacks slot ${entry.slot}`);
    else if (JSON.stringify(found, replacer) !== JSON.stringify(entry, replacer))
      problems.push(`batch ${n}: cell ${write.cellKey} slot ${entry.slot} differs`);
  }
  return problems;
}

/** Problems with batch n of a round; empty if it is all there. */
function missingFrom(storage: LmdbStorage<Command>, round: number, n: number): string[] {
  return batchNumber(round, n).writes.flatMap((write) => writeProblems(storage, write, n));
}

/** Whether each write of batch n is entirely on disk. */
function writesPresent(storage: LmdbStorage<Command>, round: number, n: number): boolean[] {
  return batchNumber(round, n).writes.map((write) => writeProblems(storage, write, n).length === 0);
}

function replacer(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") return `${value}n`;
  if (value instanceof Uint8Array) return Buffer.from(value).toString("hex");
  return value;
}

async function defineTests(): Promise<void> {
  const { afterEach, describe, expect, it } = await import("vitest");
  const thisFile = fileURLToPath(import.meta.url);

  // Checkpoints on the storage's own thread, then on a checkpoint worker (as servers run them):
  // the kill then also lands while the worker's transaction is open or committing.
  describe.each([
    ["checkpoints on its own thread", false],
    ["checkpoints on a worker thread", true],
  ])("LmdbStorage under SIGKILL, %s", (_name, onWorker) => {
    const children: ChildProcess[] = [];
    const directories: string[] = [];
    afterEach(() => {
      for (const child of children.splice(0)) {
        if (child.pid !== undefined && child.exitCode === null && child.signalCode === null)
          process.kill(child.pid, "SIGKILL");
      }
      for (const directory of directories.splice(0)) rmSync(directory, { recursive: true, force: true });
    });

    /** Runs one child until it reported enough batches, kills it mid-stream; returns the reported numbers. */
    async function killMidStream(directory: string, round: number): Promise<number[]> {
      const child = spawn(process.execPath, ["--import", "tsx", thisFile], {
        cwd: process.cwd(),
        env: {
          ...process.env,
          PHYSALIA_CRASH_CHILD_DIR: directory,
          PHYSALIA_CRASH_CHILD_ROUND: String(round),
          PHYSALIA_CRASH_CHILD_WORKER: onWorker ? "1" : "",
        },
        stdio: ["ignore", "pipe", "pipe"],
      });
      children.push(child);
      const reported: number[] = [];
      let stderr = "";
      let pending = "";
      child.stderr?.on("data", (chunk: Buffer) => {
        stderr += chunk.toString("utf8");
      });
      const exited = new Promise<NodeJS.Signals | null>((resolve) =>
        child.on("exit", (_code, signal) => resolve(signal)),
      );
      // A random extra wait, so the kill lands at a different point of a commit in each round.
      const extraBatches = Math.floor(Math.random() * 20);
      await new Promise<void>((resolve, reject) => {
        const deadline = setTimeout(
          () => reject(new Error(`child reported ${reported.length} batches; stderr: ${stderr}`)),
          60_000,
        );
        child.on("exit", () => {
          clearTimeout(deadline);
          reject(new Error(`child exited before it was killed; stderr: ${stderr}`));
        });
        child.stdout?.on("data", (chunk: Buffer) => {
          pending += chunk.toString("utf8");
          const lines = pending.split("\n");
          pending = lines.pop() ?? "";
          for (const line of lines) {
            const match = /^durable (\d+)$/.exec(line);
            if (match !== null) reported.push(Number(match[1]));
          }
          if (reported.length >= reportedBeforeKillMin + extraBatches && child.pid !== undefined) {
            clearTimeout(deadline);
            process.kill(child.pid, "SIGKILL");
            resolve();
          }
        });
      });
      expect(await exited).toBe("SIGKILL");
      return reported;
    }

    it("every batch reported durable survives, the batch in flight is all or nothing, nothing is corrupt", async () => {
      const directory = mkdtempSync(join(tmpdir(), "physalia-crash-"));
      directories.push(directory);
      const reportedByRound: number[][] = [];
      for (let round = 0; round < rounds; round++) {
        const reported = await killMidStream(directory, round);
        expect(reported).toEqual(reported.map((_, i) => i)); // in order, none skipped
        reportedByRound.push(reported);
        const storage = LmdbStorage.open({ path: directory, codec: commandCodec });
        // The round that never checkpoints left its batches in the journal only.
        if (round === 0) expect(storage.stats().replayedBatches).toBeGreaterThanOrEqual(reported.length);
        try {
          for (const cellKey of storage.hostedCells()) {
            const loaded = storage.load(cellKey);
            expect(loaded.status, `${cellKey}: ${JSON.stringify(loaded)}`).toBe("found");
          }
          // Every round so far: a later child must not have damaged what an earlier one wrote.
          for (let r = 0; r <= round; r++) {
            const lastReported = (reportedByRound[r] as number[]).length - 1;
            for (let n = 0; n <= lastReported; n++) expect(missingFrom(storage, r, n)).toEqual([]);
            // Past the last report: the batch that was in flight (or a few, if the last lines
            // were still in the pipe) is entirely present or entirely absent, in order.
            let previousPresent = true;
            for (let n = lastReported + 1; n <= lastReported + 4; n++) {
              const each = writesPresent(storage, r, n);
              const present = each.every((p) => p);
              expect(present || each.every((p) => !p), `batch ${n} of round ${r} is partial: ${each}`).toBe(
                true,
              );
              if (present) expect(previousPresent, `batch ${n} present after a missing one`).toBe(true);
              previousPresent = present;
            }
          }
        } finally {
          await storage.close();
        }
      }
    });
  });
}

const childDirectory = process.env.PHYSALIA_CRASH_CHILD_DIR;
if (childDirectory !== undefined)
  await runChild(
    childDirectory,
    Number(process.env.PHYSALIA_CRASH_CHILD_ROUND),
    process.env.PHYSALIA_CRASH_CHILD_WORKER === "1",
  );
else await defineTests();
