/**
 * The write path's CPU in one process: 7 servers (real lmdb, journals, TCP on loopback) and the
 * closed-loop writers of `throughput` (through the SDK) in one Node.js process started with the
 * server's flags. No target: it is the measure for changes to the path's code. Seven server
 * processes on 2 cores add their scheduling and the run-to-run drift of a shared machine (about
 * 20%), which hides a change of a few percent in `throughput`; here the process's own CPU is
 * divided by the writes it completed, so runs of two builds can be compared pair by pair.
 *
 *   npm run bench -- inprocess [--cells 1000] [--clients 256] [--connections 4] [--warmup 20] [--seconds 10] [--runs 3]
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
} from "./common.ts";
import type { InprocessRunOptions, InprocessRunResult } from "./inprocess-run.ts";

const runScript = join(import.meta.dirname, "inprocess-run.ts");

export async function inprocessBenchmark(children: Children, options: Options): Promise<BenchmarkReport> {
  const cells = options.integer("cells", 1000);
  const clients = options.integer("clients", 256);
  const connections = options.integer("connections", 4);
  const warmupSeconds = options.number("warmup", 20);
  const seconds = options.number("seconds", 10);
  const runs = options.integer("runs", 3);
  options.finish();
  const results: {
    writesPerSecond: number;
    cpuUsPerWrite: number;
    systemUsPerWrite: number;
    gcShare: number;
    errors: number;
  }[] = [];
  for (let run = 1; run <= runs; run++) {
    progress(
      `run ${run} of ${runs}: 7 servers and ${clients} writers in one process, ${warmupSeconds} s of warm-up, ${seconds} s measured`,
    );
    const runOptions: InprocessRunOptions = {
      dir: children.tempDir("physalia-bench-inprocess-"),
      cells,
      clients,
      connections,
      warmupSeconds,
      seconds,
    };
    const r = await runJsonScript<InprocessRunResult>(
      children,
      "in-process colony",
      runScript,
      serverNodeFlags,
      runOptions,
    );
    if (r.completed === 0) throw new Error("the in-process colony completed no write in its window");
    results.push({
      writesPerSecond: round((r.completed * 1000) / r.windowMs, 0),
      cpuUsPerWrite: round((r.userUs + r.systemUs) / r.completed, 1),
      systemUsPerWrite: round(r.systemUs / r.completed, 1),
      gcShare: round(r.gcMs / r.windowMs, 3),
      errors: r.errors,
    });
  }
  const sorted = [...results].sort((a, b) => a.cpuUsPerWrite - b.cpuUsPerWrite);
  const median = sorted[Math.floor(sorted.length / 2)] as (typeof results)[number];
  return {
    results: { cells, clients, connections, warmupSeconds, seconds, runs: results, median },
    targets: {},
    lines: [
      ...results.map(
        (r, i) =>
          `run ${i + 1}: ${r.writesPerSecond.toLocaleString("en-US")} writes/s, CPU ${r.cpuUsPerWrite} us per write (${r.systemUsPerWrite} in the kernel), ${Math.round(r.gcShare * 1000) / 10}% of the time in collector pauses, ${r.errors} errors`,
      ),
      `median of ${results.length} runs: ${median.cpuUsPerWrite} us of CPU per write (7 servers and ${clients} writers in one process, ${cells} cells)`,
    ],
  };
}
