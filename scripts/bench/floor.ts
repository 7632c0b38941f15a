/**
 * `npm run bench -- floor`: the throughput and write-latency workloads against Physalia and
 * against the replication floor (floor-replica.ts: 7 processes that only move each write to 7
 * O_DSYNC journals and answer once 4 hold it), side by side, with the ratio of each figure.
 * The floor is what this machine allows a 7-replica write through 7 Node.js processes before any
 * database work: a target the floor itself misses cannot be met by Physalia here either.
 * `--per-cell` runs floor-cells-replica.ts instead: each write travels as its own cell's
 * messages, as in Physalia, with the least work per message, so that what a per-cell protocol
 * costs here is measured apart from what Physalia's implementation of it costs.
 */
import type { ChildProcess } from "node:child_process";
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
  latencyLoad,
  latencySettings,
  measureThenStop,
  type SystemUnderTest,
  startPhysalia,
  throughputSettings,
} from "./workloads.ts";

const replicaScripts = {
  stream: join(import.meta.dirname, "floor-replica.ts"),
  cells: join(import.meta.dirname, "floor-cells-replica.ts"),
} as const;
/** Which floor: one replication stream per leader, or each write as its own cell's messages. */
export type FloorKind = keyof typeof replicaScripts;
const replicas = 7;

/** The floor's 7 replica processes on free loopback ports, journals in a temporary directory. */
export async function startFloor(
  children: Children,
  keys: readonly string[],
  journalMiB = 64,
  kind: FloorKind = "stream",
): Promise<SystemUnderTest & { readonly ports: readonly number[]; readonly dir: string }> {
  const dir = children.tempDir("physalia-bench-floor-");
  const ports = await freePorts(replicas);
  progress(`starting the replication floor: ${replicas} processes`);
  const ready = new Set<number>();
  let exited: string | null = null;
  const processes: ChildProcess[] = ports.map((_, i) => {
    const child = children.spawn(
      `floor replica ${i}`,
      process.execPath,
      ["--import", "tsx", replicaScripts[kind], String(i), dir, ports.join(","), String(journalMiB)],
      { stdio: ["ignore", "pipe", 2] },
    );
    child.stdout?.on("data", (data: Buffer) => {
      if (data.toString().includes("ready")) ready.add(i);
    });
    child.once("exit", (code, signal) => {
      exited ??= `floor replica ${i} exited (${signal ?? `code ${code}`}); its error is above`;
    });
    return child;
  });
  const stop = async () => {
    await Promise.all(processes.map((p) => children.kill(p, "SIGTERM", 3000)));
  };
  try {
    // A replica that exits ends the wait at once, with its own reason.
    await waitFor("the floor's replicas", async () => exited !== null || ready.size === replicas, 30_000, 50);
    if (exited !== null) throw new Error(exited);
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    name: "floor",
    ports,
    dir,
    target: { kind: "floor", ports },
    keys,
    serverPids: () => processes.map((p) => p.pid as number),
    stop,
  };
}

export async function floorBenchmark(children: Children, options: Options): Promise<BenchmarkReport> {
  const throughput = throughputSettings(options);
  const latency = latencySettings(options);
  const kind = options.flag("per-cell") ? "cells" : "stream";
  options.finish();
  if (throughput.cellSize !== replicas)
    throw new Error(`the floor has ${replicas} replicas: --cell-size must be 7`);

  const writes = (system: SystemUnderTest) => latencyLoad(children, system, latency, "write");
  const floor = await measureThenStop(
    children,
    await startFloor(children, cellKeys(throughput.cells), 64, kind),
    throughput,
    writes,
  );
  const physalia = await measureThenStop(
    children,
    (await startPhysalia(children, 7, throughput.cells, throughput.serverNodeFlags)).system,
    throughput,
    writes,
  );

  const rows: [string, (r: { throughput: LoadResult; latency: LoadResult }) => number][] = [
    ["throughput: committed writes/s", (r) => r.throughput.perSecond],
    ["throughput: server CPU us per write", (r) => r.throughput.serverCpuUsPerOperation],
    ["throughput: client CPU us per write", (r) => r.throughput.clientCpuUsPerOperation],
    ["throughput: write p50 ms", (r) => r.throughput.latency.p50Ms],
    ["latency: write p50 ms", (r) => r.latency.latency.p50Ms],
    ["latency: write p99 ms", (r) => r.latency.latency.p99Ms],
    ["latency: write p99.9 ms", (r) => r.latency.latency.p999Ms],
    ["latency: server CPU us per write", (r) => r.latency.serverCpuUsPerOperation],
  ];
  const comparison = rows.map(([figure, get]) => {
    const p = get(physalia);
    const f = get(floor);
    return { figure, physalia: p, floor: f, physaliaOverFloor: round(p / f, 2) };
  });
  const errors = floor.throughput.errors + floor.latency.errors;
  const lines = [
    `${replicas} processes each: physalia (cells of 7, ${throughput.cells} cells) and the floor (${throughput.cells} keys; ` +
      (kind === "cells"
        ? "each write moved as its own cell's messages: accepts, votes, commit notices, applied on every replica"
        : "a write is in 4 of 7 O_DSYNC journals, nothing else") +
      `); ${throughput.clients} writers, then 1`,
    ...sideBySide(
      ["physalia", "floor"],
      comparison.map((c) => ({ figure: c.figure, a: c.physalia, b: c.floor })),
    ),
    `floor errors: ${errors}; machine busy during the floor's throughput run: ${floor.throughput.machineBusyCores} cores ` +
      `(busiest client process ${floor.throughput.busiestClientProcessCores})`,
  ];
  const target = (name: string, limit: number, measured: number, higher: boolean) => ({
    target: name,
    measured,
    met: higher ? measured >= limit : measured <= limit,
  });
  return {
    results: { floorKind: kind, physalia, floor, comparison },
    // Physalia's targets judged on this run, and whether the floor itself meets them.
    targets: {
      writesPerSecond: target(">= 20,000 committed writes/s", 20_000, physalia.throughput.perSecond, true),
      writeP50: target("write p50 <= 1 ms (one client)", 1, physalia.latency.latency.p50Ms, false),
      writeP99: target("write p99 <= 3 ms (one client)", 3, physalia.latency.latency.p99Ms, false),
      floorWritesPerSecond: target("floor: >= 20,000 writes/s", 20_000, floor.throughput.perSecond, true),
      floorWriteP50: target("floor: write p50 <= 1 ms", 1, floor.latency.latency.p50Ms, false),
      floorWriteP99: target("floor: write p99 <= 3 ms", 3, floor.latency.latency.p99Ms, false),
    },
    lines,
  };
}
