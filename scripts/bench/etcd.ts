/**
 * The throughput and latency workloads against Physalia and against a 3-member etcd cluster on
 * loopback (Debian's etcd-server, installed here when missing; default fsync), side by side.
 * The etcd client is the `etcd3` npm package (gRPC).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { openSync } from "node:fs";
import { join } from "node:path";
import {
  type BenchmarkReport,
  type Children,
  freePorts,
  type Options,
  progress,
  round,
  sideBySide,
  waitFor,
} from "./common.ts";
import type { LoadResult } from "./load.ts";
import { cellKeys } from "./physalia-colony.ts";
import {
  latencyLoads,
  latencySettings,
  measureThenStop,
  type SystemUnderTest,
  startPhysalia,
  throughputSettings,
} from "./workloads.ts";

function etcdBinary(): string | null {
  const found = spawnSync("sh", ["-c", "command -v etcd"], { encoding: "utf8" });
  return found.status === 0 ? found.stdout.trim() : null;
}

/** Debian's etcd-server, installed with apt-get when missing (apt-get update once, then install). */
export function ensureEtcd(): { binary: string; installed: boolean } {
  const present = etcdBinary();
  if (present !== null) return { binary: present, installed: false };
  progress("etcd is not installed: apt-get update, then apt-get install -y etcd-server (Debian's package)");
  execFileSync("apt-get", ["update"], { stdio: ["ignore", 2, 2] });
  execFileSync("apt-get", ["install", "-y", "etcd-server"], {
    stdio: ["ignore", 2, 2],
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
  });
  const binary = etcdBinary();
  if (binary === null) throw new Error("apt-get installed etcd-server but no `etcd` binary is on PATH");
  return { binary, installed: true };
}

/** Three etcd members on free loopback ports, data in a temporary directory (default fsync). */
export async function startEtcd(children: Children, binary: string, keys: readonly string[]) {
  const dir = children.tempDir("physalia-bench-etcd-");
  const ports = await freePorts(6);
  const members = [0, 1, 2].map((i) => ({
    name: `e${i + 1}`,
    client: `http://127.0.0.1:${ports[2 * i]}`,
    peer: `http://127.0.0.1:${ports[2 * i + 1]}`,
  }));
  const cluster = members.map((m) => `${m.name}=${m.peer}`).join(",");
  const version = execFileSync(binary, ["--version"], { encoding: "utf8" }).split("\n")[0] ?? "";
  progress(`starting 3 etcd members (${version})`);
  const processes = members.map((m) => {
    const log = openSync(join(dir, `${m.name}.log`), "a");
    return children.spawn(
      `etcd ${m.name}`,
      binary,
      [
        "--name",
        m.name,
        "--data-dir",
        join(dir, m.name),
        "--listen-client-urls",
        m.client,
        "--advertise-client-urls",
        m.client,
        "--listen-peer-urls",
        m.peer,
        "--initial-advertise-peer-urls",
        m.peer,
        "--initial-cluster",
        cluster,
        "--initial-cluster-state",
        "new",
        "--initial-cluster-token",
        "physalia-bench",
        "--logger",
        "zap",
        "--log-level",
        "warn",
      ],
      { stdio: ["ignore", log, log] },
    );
  });
  const stop = async () => {
    await Promise.all(processes.map((p) => children.kill(p, "SIGTERM", 5000)));
  };
  try {
    await Promise.all(
      members.map((m) =>
        waitFor(
          `etcd ${m.name} /health`,
          async () => {
            const response = await fetch(`${m.client}/health`, { signal: AbortSignal.timeout(1000) });
            return response.ok && ((await response.json()) as { health?: string }).health === "true";
          },
          30_000,
          100,
        ),
      ),
    );
  } catch (error) {
    await stop();
    throw error;
  }
  const system: SystemUnderTest = {
    name: "etcd",
    target: { kind: "etcd", endpoints: members.map((m) => m.client) },
    keys,
    serverPids: () => processes.map((p) => p.pid as number),
    stop,
  };
  return { system, version };
}

export async function etcdBenchmark(children: Children, options: Options): Promise<BenchmarkReport> {
  const throughput = throughputSettings(options);
  const latency = latencySettings(options);
  options.finish();
  const etcd = ensureEtcd();

  const latencies = (system: SystemUnderTest) => latencyLoads(children, system, latency);
  const physalia = await measureThenStop(
    children,
    (await startPhysalia(children, 7, throughput.cells)).system,
    throughput,
    latencies,
  );
  const started = await startEtcd(children, etcd.binary, cellKeys(throughput.cells));
  const baseline = await measureThenStop(children, started.system, throughput, latencies);

  const rows: [
    string,
    (r: { throughput: LoadResult; latency: { writes: LoadResult; reads: LoadResult } }) => number,
    "higher" | "lower",
  ][] = [
    ["throughput: committed writes/s", (r) => r.throughput.perSecond, "higher"],
    ["throughput: write p50 ms", (r) => r.throughput.latency.p50Ms, "lower"],
    ["throughput: write p99 ms", (r) => r.throughput.latency.p99Ms, "lower"],
    ["throughput: server CPU us per write", (r) => r.throughput.serverCpuUsPerOperation, "lower"],
    ["throughput: client CPU us per write", (r) => r.throughput.clientCpuUsPerOperation, "lower"],
    ["latency: write p50 ms", (r) => r.latency.writes.latency.p50Ms, "lower"],
    ["latency: write p99 ms", (r) => r.latency.writes.latency.p99Ms, "lower"],
    ["latency: read p50 ms", (r) => r.latency.reads.latency.p50Ms, "lower"],
    ["latency: read p99 ms", (r) => r.latency.reads.latency.p99Ms, "lower"],
  ];
  const comparison = rows.map(([name, get, better]) => {
    const p = get(physalia);
    const e = get(baseline);
    return { figure: name, physalia: p, etcd: e, physaliaOverEtcd: round(p / e, 2), better };
  });
  const lines = [
    `physalia: 7 server processes, cells of 7, ${throughput.cells} cells; etcd: 3 members (${started.version}), ` +
      `${throughput.cells} keys, client: etcd3 npm package (gRPC)${etcd.installed ? "; etcd-server was installed with apt-get" : ""}`,
    ...sideBySide(
      ["physalia", "etcd"],
      comparison.map((c) => ({ figure: c.figure, a: c.physalia, b: c.etcd })),
    ),
    `etcd throughput errors: ${baseline.throughput.errors}${baseline.throughput.firstError === null ? "" : ` (${baseline.throughput.firstError})`}; ` +
      `busiest client process ${baseline.throughput.busiestClientProcessCores} cores (physalia ${physalia.throughput.busiestClientProcessCores})`,
  ];
  return {
    results: {
      etcdVersion: started.version,
      etcdInstalledNow: etcd.installed,
      etcdClient: "etcd3 npm package (gRPC)",
      physalia,
      etcd: baseline,
      comparison,
    },
    // The Physalia targets, judged on this run (etcd has none: it is the baseline).
    targets: {
      writesPerSecond: {
        target: ">= 20,000 committed writes/s",
        measured: physalia.throughput.perSecond,
        met: physalia.throughput.perSecond >= 20_000,
      },
      writeP50: {
        target: "write p50 <= 1 ms (one client)",
        measured: physalia.latency.writes.latency.p50Ms,
        met: physalia.latency.writes.latency.p50Ms <= 1,
      },
      writeP99: {
        target: "write p99 <= 3 ms (one client)",
        measured: physalia.latency.writes.latency.p99Ms,
        met: physalia.latency.writes.latency.p99Ms <= 3,
      },
    },
    lines,
  };
}
