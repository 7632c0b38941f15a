/**
 * The servers' compute per commit, and how it grows with the cells a colony hosts. 7 `Server`s in
 * one process (scripts/bench/servers-run.ts): an in-memory bus instead of TCP, storage that keeps
 * nothing, closed-loop writers sending requests straight to the cells' leaders. Each count of
 * cells runs in a fresh process with the same writers per cell (0.256 by default: 256 writers on
 * 1,000 cells, as `throughput`), so every run does the same work per commit: a commit of one
 * write, the same messages. What differs is how much per-cell state the commits are spread over.
 * No target: it is the measure for the per-cell data layout of the replica, the state machine
 * and the server.
 *
 * `--disk` puts each server on its own lmdb storage (journal with fsync, checkpoints on a worker
 * thread) in a temporary directory, to measure what storage adds per commit.
 *
 *   npm run bench -- servers [--cells 100,1000,10000] [--writers-per-cell 0.256] [--wire] [--disk] [--warmup 5] [--seconds 8]
 */
import { join } from "node:path";
import { serverNodeFlags } from "../../src/server/index.ts";
import {
  type BenchmarkReport,
  type Children,
  type Options,
  progress,
  round,
  runJsonScript,
  UsageError,
} from "./common.ts";
import type { ServersRunOptions, ServersRunResult } from "./servers-run.ts";

const runScript = join(import.meta.dirname, "servers-run.ts");

export async function serversBenchmark(children: Children, options: Options): Promise<BenchmarkReport> {
  const cellsText = options.text("cells") ?? "100,1000,10000";
  const cellCounts = cellsText.split(",").map((part) => Number(part.replace(/_/g, "")));
  if (cellCounts.some((n) => !Number.isSafeInteger(n) || n < 1))
    throw new UsageError(
      `--cells must be a comma-separated list of positive integers, not ${JSON.stringify(cellsText)}`,
    );
  const writersPerCell = options.number("writers-per-cell", 0.256, 0.001);
  const wire = options.flag("wire");
  const disk = options.flag("disk");
  const warmupSeconds = options.number("warmup", 5, 0);
  const seconds = options.number("seconds", 8);
  options.finish();

  const runs: {
    cells: number;
    writers: number;
    commitsPerSecond: number;
    cpuUsPerCommit: number;
    messagesPerCommit: number;
    cpuUsPerMessage: number;
    retries: number;
  }[] = [];
  for (const cells of cellCounts) {
    const writers = Math.max(1, Math.round(cells * writersPerCell));
    progress(`${cells} cells, ${writers} writers: ${warmupSeconds} s of warm-up, ${seconds} s measured`);
    const runOptions: ServersRunOptions = { cells, writers, wire, disk, warmupSeconds, seconds };
    const r = await runJsonScript<ServersRunResult>(
      children,
      `servers' process (${cells} cells)`,
      runScript,
      serverNodeFlags,
      runOptions,
    );
    if (r.commits === 0) throw new Error(`no commit completed in the window with ${cells} cells`);
    runs.push({
      cells,
      writers,
      commitsPerSecond: round((r.commits * 1000) / r.windowMs, 0),
      cpuUsPerCommit: round(r.cpuUs / r.commits, 1),
      messagesPerCommit: round(r.messages / r.commits, 2),
      cpuUsPerMessage: round(r.cpuUs / r.messages, 2),
      retries: r.retries,
    });
  }
  const first = runs[0] as (typeof runs)[number];
  return {
    results: { writersPerCell, wire, disk, warmupSeconds, seconds, runs },
    targets: {},
    lines: runs.map(
      (r) =>
        `${r.cells.toLocaleString("en-US")} cells, ${r.writers.toLocaleString("en-US")} writers: ` +
        `${r.commitsPerSecond.toLocaleString("en-US")} commits/s, ${r.cpuUsPerCommit} us of CPU per commit ` +
        `(${round(r.cpuUsPerCommit / first.cpuUsPerCommit, 2)} times ${first.cells.toLocaleString("en-US")} cells'), ` +
        `${r.messagesPerCommit} messages per commit (${r.cpuUsPerMessage} us per message, ` +
        `${round(r.cpuUsPerMessage / first.cpuUsPerMessage, 2)} times), ${r.retries} answers retried` +
        (wire ? ", every message encoded and decoded" : ", messages handed over as objects") +
        (disk ? ", each server on its own lmdb storage" : ", storage that keeps nothing"),
    ),
  };
}
