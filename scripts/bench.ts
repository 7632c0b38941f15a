/**
 * Benchmarks of real Physalia server processes on this machine (docs/BENCHMARKS.md).
 *
 *   npm run bench -- <throughput|latency|idle|restart|failover|etcd|floor|inprocess|servers> [--json] [options]
 *
 * Each prints the machine's floors first (median fsync of a small write on the disk of the data
 * directories; loopback TCP round trip), then its results and targets; with --json, one JSON
 * object {benchmark, floors, results, targets}. Every process a benchmark starts is stopped by
 * pid at the end, also when it fails or is interrupted (SIGINT, SIGTERM). Progress goes to stderr.
 *
 * throughput  --cells 1000 --cell-size 7 --clients 256 --client-processes 2 --connections 1 --warmup 60 --seconds 20 --think-ms 0
 * latency     --latency-warmup 20 --latency-seconds 10 --latency-think-ms 0
 * idle        --nodes 1000000 --baseline-cells 1000 --idle-seconds 30 --evict-wait 90
 * restart     --nodes 1000000
 * failover    --cells 100 --interval 50 --warmup 10 --after 10 (kill -9 of the server leading the most cells)
 * etcd        the throughput and latency options (the same workloads against 3 etcd members)
 * floor       the throughput and latency options (the write workloads against the replication
 *             floor: 7 processes that only put each write in 4 of 7 O_DSYNC journals), and
 *             --per-cell (the floor moves each write as its cell's own messages instead)
 * inprocess   --cells 1000 --clients 256 --connections 4 --warmup 20 --seconds 10 --runs 3 (the
 *             write path's CPU per write with 7 servers and the writers in one process; no target)
 * servers     --cells 100,1000,10000 --writers-per-cell 0.256 --wire --disk --warmup 5 --seconds 8
 *             (the servers' CPU per commit in one process without sockets, by number of cells at
 *             the same load per cell, on lmdb storage with --disk and on none without; no target)
 */
import { tmpdir } from "node:os";
import { Children, floorsLine, measureFloors, Options, UsageError } from "./bench/common.ts";
import { etcdBenchmark } from "./bench/etcd.ts";
import { failoverBenchmark } from "./bench/failover.ts";
import { floorBenchmark } from "./bench/floor.ts";
import { idleBenchmark } from "./bench/idle.ts";
import { inprocessBenchmark } from "./bench/inprocess.ts";
import { restartBenchmark } from "./bench/restart.ts";
import { serversBenchmark } from "./bench/servers.ts";
import { latencyBenchmark, throughputBenchmark } from "./bench/workloads.ts";

const benchmarks = {
  throughput: throughputBenchmark,
  latency: latencyBenchmark,
  idle: idleBenchmark,
  restart: restartBenchmark,
  failover: failoverBenchmark,
  etcd: etcdBenchmark,
  floor: floorBenchmark,
  inprocess: inprocessBenchmark,
  servers: serversBenchmark,
} as const;
type BenchmarkName = keyof typeof benchmarks;

const usage = `usage: npm run bench -- <${Object.keys(benchmarks).join("|")}> [--json] [options] (see docs/BENCHMARKS.md)`;

const children = new Children();
let interrupted = false;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    if (interrupted) return;
    interrupted = true;
    process.stderr.write(`\n[bench] ${signal}: stopping every process this benchmark started\n`);
    children.killAllNow();
    process.exit(130);
  });
}
process.on("exit", () => children.killAllNow());

async function main(): Promise<number> {
  const [name, ...rest] = process.argv.slice(2);
  if (name === undefined || name === "--help" || name === "-h") {
    console.log(usage);
    return name === undefined ? 2 : 0;
  }
  if (!(name in benchmarks)) {
    console.error(`unknown benchmark ${JSON.stringify(name)}; ${usage}`);
    return 2;
  }
  const options = new Options(rest, ["json", "wire", "disk", "per-cell"]);
  const json = options.flag("json");
  const floors = await measureFloors(tmpdir());
  if (!json) console.log(floorsLine(floors));
  const started = performance.now();
  let report: Awaited<ReturnType<(typeof benchmarks)[BenchmarkName]>>;
  try {
    report = await benchmarks[name as BenchmarkName](children, options);
  } finally {
    await children.stopAll();
    children.removeTempDirs();
  }
  const seconds = Math.round((performance.now() - started) / 1000);
  if (json) {
    console.log(
      JSON.stringify({
        benchmark: name,
        node: process.version,
        floors,
        results: report.results,
        targets: report.targets,
        seconds,
      }),
    );
  } else {
    for (const line of report.lines) console.log(line);
    for (const t of Object.values(report.targets))
      console.log(`target ${t.target}: ${t.met ? "met" : "MISSED"} (measured ${t.measured})`);
    console.log(`(${seconds} s)`);
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof UsageError) {
      console.error(`${error.message}; ${usage}`);
      process.exit(2);
    }
    console.error(`benchmark failed: ${(error as Error).stack ?? String(error)}`);
    process.exit(1);
  },
);
