/**
 * The throughput and latency workloads, run against a system under test: a Physalia colony of
 * server processes, or an etcd cluster (scripts/bench/etcd-cluster.ts).
 */
import { resolve } from "node:path";
import { campaignCauses } from "../../src/paxos/index.ts";
import { paxosSendKinds } from "../../src/server/index.ts";
import { type BenchmarkReport, type Children, type Options, progress, round, UsageError } from "./common.ts";
import { describeLoad, type LoadResult, runLoad } from "./load.ts";
import type { LoadTarget } from "./load-worker.ts";
import { BenchColony, cellKeys } from "./physalia-colony.ts";

export interface SystemUnderTest {
  readonly name: string;
  readonly target: LoadTarget;
  readonly keys: readonly string[];
  serverPids(): number[];
  counters?(): Promise<Record<string, number>>;
  stop(): Promise<void>;
}

/** A colony of `servers` Physalia server processes (cells of 7, fsync on) with `cells` cells. */
export async function startPhysalia(
  children: Children,
  servers: number,
  cells: number,
  extraNodeFlags: readonly string[] = [],
  cellSize = Math.min(7, servers),
) {
  const dir = children.tempDir("physalia-bench-");
  const colony = await BenchColony.create(children, dir, servers, cellSize);
  try {
    progress(`starting ${servers} Physalia server processes`);
    await colony.startAll(extraNodeFlags);
    progress(`creating ${cells} cells of ${colony.topology.cellSize} nodes`);
    const keys = cellKeys(cells);
    await colony.createCells(keys);
    const system: SystemUnderTest = {
      name: "physalia",
      target: { kind: "physalia", colonyFile: colony.connectionFile },
      keys,
      serverPids: () => colony.pids,
      counters: () =>
        colony.counterSums({
          messagesOut: "physalia_messages_out_total",
          storageBatches: "physalia_storage_batches_total",
          turns: "physalia_turns_total",
          framesSent: "physalia_transport_frames_sent_total",
          requestsOverloaded: "physalia_requests_overloaded_total",
          messagesDropped: "physalia_messages_dropped_total",
          ...Object.fromEntries(
            paxosSendKinds.map((kind) => [
              `paxos.${kind}`,
              `physalia_paxos_messages_out_total{kind="${kind}"}`,
            ]),
          ),
          ...Object.fromEntries(
            campaignCauses.map((cause) => [
              `campaigns.${cause}`,
              `physalia_campaigns_total{cause="${cause}"}`,
            ]),
          ),
          leadershipsWon: "physalia_leaderships_won_total",
          takeoversDeclined: "physalia_takeovers_declined_total",
          requestsRelayed: "physalia_requests_relayed_total",
        }),
      stop: () => colony.stopAll(),
    };
    return { system, colony };
  } catch (error) {
    await colony.stopAll();
    throw error;
  }
}

export interface ThroughputSettings {
  readonly cells: number;
  readonly clients: number;
  readonly clientProcesses: number;
  readonly connectionsPerProcess: number;
  readonly warmupSeconds: number;
  readonly seconds: number;
  /** Node flags for the server processes (for profiling: --cpu-prof --cpu-prof-dir DIR). */
  readonly serverNodeFlags: readonly string[];
  /** Nodes per cell (7; 3 compares like for like with a 3-member etcd). */
  readonly cellSize: number;
  /** Each writer's wait after each write: a moderate load instead of a saturating one. */
  readonly thinkMs: number;
}

/**
 * The extra Node.js flags of every server process:
 * - `--profile-dir DIR`: each writes a V8 CPU profile there when it stops;
 * - `--node-flags "FLAG ..."`: flags added after the server's own (a later flag wins), to try a V8
 *   setting or trace the collector (`--node-flags="--trace-gc"`; the output lands in the logs).
 */
export function profileFlags(options: Options): string[] {
  const dir = options.text("profile-dir");
  const flags = dir === undefined ? [] : ["--cpu-prof", "--cpu-prof-dir", resolve(dir)];
  return [...flags, ...nodeFlags(options.text("node-flags"))];
}

/** `--node-flags` split on spaces; each must look like a flag, so a value cannot be taken for a script. */
export function nodeFlags(text: string | undefined): string[] {
  const flags = (text ?? "").split(" ").filter((flag) => flag !== "");
  for (const flag of flags) {
    if (!/^--[a-z0-9][a-z0-9_-]*(=\S+)?$/i.test(flag)) {
      throw new UsageError(
        `--node-flags: "${flag}" is not a Node.js flag (write each as --name or --name=value, separated by spaces)`,
      );
    }
  }
  return flags;
}

export function throughputSettings(options: Options): ThroughputSettings {
  return {
    serverNodeFlags: profileFlags(options),
    cellSize: options.integer("cell-size", 7),
    cells: options.integer("cells", 1000),
    clients: options.integer("clients", 256),
    clientProcesses: options.integer("client-processes", 2),
    // One SDK client per client process, as an application holds one: its writers' requests of
    // a turn share a frame per server, and the servers answer it in one frame per turn. Four
    // clients per process cost the servers a fifth more CPU per write (docs/BENCHMARK-LOG.md).
    connectionsPerProcess: options.integer("connections", 1),
    // V8 goes on compiling the servers' hot path for 40-60 s under this load on 2 cores
    // (docs/BENCHMARK-LOG.md, "Warm-up"): the window measures the colony after it.
    warmupSeconds: options.number("warmup", 60, 0),
    seconds: options.number("seconds", 20),
    thinkMs: options.number("think-ms", 0, 0),
  };
}

export function throughputLoad(
  children: Children,
  system: SystemUnderTest,
  s: ThroughputSettings,
): Promise<LoadResult> {
  progress(
    `${system.name}: ${s.clients} closed-loop writers in ${s.clientProcesses} client process(es), ` +
      `${s.thinkMs > 0 ? `${s.thinkMs} ms between a writer's writes, ` : ""}` +
      `${s.warmupSeconds} s warm-up, ${s.seconds} s measured`,
  );
  return runLoad(children, {
    target: system.target,
    clients: s.clients,
    clientProcesses: s.clientProcesses,
    connectionsPerProcess: s.connectionsPerProcess,
    keys: system.keys,
    operation: "write",
    warmupSeconds: s.warmupSeconds,
    seconds: s.seconds,
    thinkMs: s.thinkMs,
    serverPids: () => system.serverPids(),
    ...serverCounters(system),
  });
}

/** The system's counters for runLoad, read at both ends of the window, when it has any. */
function serverCounters(system: SystemUnderTest): { counters?: () => Promise<Record<string, number>> } {
  const read = system.counters;
  return read === undefined ? {} : { counters: () => read.call(system) };
}

export interface LatencySettings {
  readonly warmupSeconds: number;
  readonly seconds: number;
  /** The client's wait after each operation (0: back to back). */
  readonly thinkMs: number;
}

export function latencySettings(options: Options): LatencySettings {
  return {
    warmupSeconds: options.number("latency-warmup", 20, 0),
    seconds: options.number("latency-seconds", 10),
    thinkMs: options.number("latency-think-ms", 0, 0),
  };
}

/** One client, one operation at a time, on one cell (or key). */
export function latencyLoad(
  children: Children,
  system: SystemUnderTest,
  s: LatencySettings,
  operation: "write" | "read",
): Promise<LoadResult> {
  progress(
    `${system.name}: one client, one ${operation} at a time${s.thinkMs > 0 ? `, ${s.thinkMs} ms apart` : ""}, ${s.seconds} s measured`,
  );
  return runLoad(children, {
    target: system.target,
    clients: 1,
    clientProcesses: 1,
    connectionsPerProcess: 1,
    keys: system.keys.slice(0, 1),
    operation,
    warmupSeconds: s.warmupSeconds,
    seconds: s.seconds,
    thinkMs: s.thinkMs,
    serverPids: () => system.serverPids(),
    ...serverCounters(system),
  });
}

/** The throughput load, then `latency` (one client's loads), then `system` stops, also on failure. */
export async function measureThenStop<L>(
  children: Children,
  system: SystemUnderTest,
  t: ThroughputSettings,
  latency: (system: SystemUnderTest) => Promise<L>,
): Promise<{ throughput: LoadResult; latency: L }> {
  try {
    return { throughput: await throughputLoad(children, system, t), latency: await latency(system) };
  } finally {
    await system.stop();
  }
}

/** Writes, then linearizable reads, each by one client on one cell (or key). */
export async function latencyLoads(children: Children, system: SystemUnderTest, s: LatencySettings) {
  return {
    writes: await latencyLoad(children, system, s, "write"),
    reads: await latencyLoad(children, system, s, "read"),
  };
}

export async function throughputBenchmark(children: Children, options: Options): Promise<BenchmarkReport> {
  const s = throughputSettings(options);
  options.finish();
  const { system } = await startPhysalia(children, 7, s.cells, s.serverNodeFlags, s.cellSize);
  let load: LoadResult;
  try {
    load = await throughputLoad(children, system, s);
  } finally {
    await system.stop();
  }
  const results = {
    servers: 7,
    cellSize: s.cellSize,
    cells: s.cells,
    fsync: "on (a flushed journal record per storage batch)",
    ...load,
    ...perCommitFigures(load),
    thinkMs: s.thinkMs,
  };
  // With a think time the load is moderate by choice: the target is judged without one.
  const targets =
    s.thinkMs > 0
      ? {}
      : {
          writesPerSecond: {
            target: ">= 20,000 committed writes/s",
            measured: load.perSecond,
            met: load.perSecond >= 20_000,
          },
        };
  return {
    results,
    targets,
    lines: [
      describeLoad(
        `7 servers, ${s.cells} cells of 7${s.thinkMs > 0 ? `, ${s.thinkMs} ms between a writer's writes` : ""}`,
        load,
      ),
      ...describePerCommit(results),
    ],
  };
}

/** What the servers did per commit in a load's window, from their counters' differences. */
function perCommitFigures(load: LoadResult) {
  const perCommit = (n: number | undefined) => round((n ?? 0) / Math.max(1, load.completed), 2);
  return {
    messagesPerCommit: perCommit(load.counters.messagesOut),
    framesPerCommit: perCommit(load.counters.framesSent),
    turnsPerCommit: perCommit(load.counters.turns),
    storageBatchesPerCommit: perCommit(load.counters.storageBatches),
    acceptsPerCommit: perCommit(load.counters["paxos.accept"]),
    acceptancesPerCommit: perCommit(load.counters["paxos.accepted"]),
    commitNoticesPerCommit: perCommit(load.counters["paxos.commit_notice"]),
    /** Every kind of cell message sent, per commit. */
    cellMessagesPerCommit: Object.fromEntries(
      paxosSendKinds.map((kind) => [kind, perCommit(load.counters[`paxos.${kind}`])]),
    ),
    requestsOverloaded: load.counters.requestsOverloaded ?? 0,
    messagesDropped: load.counters.messagesDropped ?? 0,
    /** Campaigns the nodes started in the window, by cause, and those they won. */
    campaigns: Object.fromEntries(
      campaignCauses.map((cause) => [cause, load.counters[`campaigns.${cause}`] ?? 0]),
    ),
    leadershipsWon: load.counters.leadershipsWon ?? 0,
    /** Claims that a leader was unresponsive made where it was still heard, and the requests relayed to it. */
    takeoversDeclined: load.counters.takeoversDeclined ?? 0,
    requestsRelayed: load.counters.requestsRelayed ?? 0,
  };
}

function describePerCommit(f: ReturnType<typeof perCommitFigures>): string[] {
  return [
    `per commit (all servers): ${f.messagesPerCommit} messages sent in ${f.framesPerCommit} frames, ${f.turnsPerCommit} turns, ${f.storageBatchesPerCommit} durable storage batches`,
    `  of those messages: ${f.acceptsPerCommit} accepts, ${f.acceptancesPerCommit} acceptances, ${f.commitNoticesPerCommit} commit notices${otherKinds(f.cellMessagesPerCommit)}; ${f.requestsOverloaded} requests answered overloaded, ${f.messagesDropped} messages dropped`,
    `elections in the window: ${describeCampaigns(f.campaigns)}, ${f.leadershipsWon} won; ${f.takeoversDeclined} claims of an unresponsive leader declined, ${f.requestsRelayed} requests relayed to a leader`,
  ];
}

export async function latencyBenchmark(children: Children, options: Options): Promise<BenchmarkReport> {
  const s = latencySettings(options);
  const flags = profileFlags(options);
  options.finish();
  const { system } = await startPhysalia(children, 7, 1, flags);
  let loads: Awaited<ReturnType<typeof latencyLoads>>;
  try {
    loads = await latencyLoads(children, system, s);
  } finally {
    await system.stop();
  }
  const w = loads.writes.latency;
  const writes = perCommitFigures(loads.writes);
  return {
    results: { servers: 7, cellSize: 7, cells: 1, thinkMs: s.thinkMs, ...loads, writesPerCommit: writes },
    targets: {
      writeP50: { target: "write p50 <= 1 ms", measured: w.p50Ms, met: w.p50Ms <= 1 },
      writeP99: { target: "write p99 <= 3 ms", measured: w.p99Ms, met: w.p99Ms <= 3 },
    },
    lines: [
      describeLoad(`one 7-node cell, one client${apart(s)}, writes`, loads.writes),
      ...describePerCommit(writes).map((line) => `  ${line}`),
      describeLoad(`one 7-node cell, one client${apart(s)}, linearizable reads`, loads.reads),
    ],
  };
}

/** How far apart the client's operations are, when they are not back to back. */
function apart(s: LatencySettings): string {
  return s.thinkMs > 0 ? ` (${s.thinkMs} ms between operations)` : "";
}

/** Campaigns started, in all and by each cause that started any. */
function describeCampaigns(byCause: Readonly<Record<string, number>>): string {
  const counts = Object.entries(byCause).filter(([, n]) => n > 0);
  const total = counts.reduce((sum, [, n]) => sum + n, 0);
  return counts.length === 0
    ? "0 campaigns"
    : `${total} campaigns (${counts.map(([cause, n]) => `${n} ${cause}`).join(", ")})`;
}

/** The kinds of cell message other than accepts, acceptances and commit notices that were sent. */
function otherKinds(perCommit: Readonly<Record<string, number>>): string {
  const shown = new Set(["accept", "accepted", "commit_notice"]);
  const parts = Object.entries(perCommit)
    .filter(([kind, n]) => !shown.has(kind) && n > 0)
    .map(([kind, n]) => `${n} ${kind}`);
  return parts.length === 0 ? "" : `, ${parts.join(", ")}`;
}
