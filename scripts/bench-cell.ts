/**
 * Benchmark of the pure cell engine (no I/O): CPU per committed transaction across many 7-node
 * cells, and heap, timers and messages of resident idle nodes.
 *
 *   npm run bench:cell -- [--json] [--cells N] [--rounds N] [--warmup N] [--runs N] [--idle-nodes N]
 *
 * Prints the machine's floors first (this benchmark does no I/O, so they are context only).
 * CPU is measured in fresh child processes, `--runs` of each (median, min and max reported),
 * once with Node's default flags and once with the flags the server runs with
 * (serverNodeFlags, src/server/runtime.ts). The target is judged on the server's flags. A third
 * measurement, with the server's flags, encodes every message and decodes it again before its
 * node takes it, as servers do: what the replicas' wire format adds to the protocol path (not
 * judged).
 */
import { execSync, spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import {
  CellMachine,
  type Command,
  type CommandResult,
  commandCodec,
  OPERATION_FORMAT_VERSION,
} from "../src/cell/index.ts";
import { ByteWriter, Prng, type Scheduler, type TimerHandle } from "../src/core/index.ts";
import {
  decodePaxosMessage,
  initialMembership,
  MembershipInterner,
  Output,
  type PaxosMessage,
  Replica,
  type ReplicaEnvironment,
  writePaxosMessage,
} from "../src/paxos/index.ts";
import { Server, type ServerMessage, serverNodeFlags } from "../src/server/index.ts";
import type { StorageBatch, StoragePort } from "../src/storage/index.ts";
import type { TransportPort } from "../src/transport/index.ts";
import { floorsLine, measureFloors } from "./bench/common.ts";

const json = process.argv.includes("--json");
function option(name: string, fallback: number): number {
  const index = process.argv.indexOf(`--${name}`);
  return index < 0 ? fallback : Number(process.argv[index + 1]);
}

// ---------------------------------------------------------------- helpers

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] as number;
}

// ---------------------------------------------------------------- CPU per committed transaction

interface Bus {
  queue: PaxosMessage<Command>[];
}

function command(session: number, seq: number, i: number): Command {
  return {
    version: OPERATION_FORMAT_VERSION,
    session,
    seq,
    newSession: seq === 1,
    op: {
      type: "txn",
      txn: { conditions: [], reads: [], writes: [{ item: `k${i % 4}`, op: "add", delta: 1n }] },
    },
  };
}

/**
 * A message as a server's peer gets it: written into a writer that is reused (as the transport's
 * scratch writer is) and read back from those bytes.
 */
const scratch = new ByteWriter(1024);
function reencode(message: PaxosMessage<Command>): PaxosMessage<Command> {
  writePaxosMessage(scratch.clear(), message, commandCodec);
  return decodePaxosMessage(scratch.view(), commandCodec);
}

function cpuPerCommit(cells: number, rounds: number, warmup: number, concurrency: number, wire: boolean) {
  const env: ReplicaEnvironment = {
    random: new Prng(1),
    isServerAlive: () => true,
    observer: null,
    bugs: null,
    memberships: new MembershipInterner(),
  };
  const out = new Output<Command, CommandResult>();
  const bus: Bus = { queue: [] };
  // cellKey -> replicas by incarnation - 1 (incarnations here are 1..7).
  const replicas = new Map<string, Replica<Command, CommandResult>[]>();
  const leaders: Replica<Command, CommandResult>[] = [];
  for (let c = 0; c < cells; c++) {
    const cellKey = `cell-${c}`;
    const members = Array.from({ length: 7 }, (_, i) => ({ serverId: `s${i + 1}`, incarnation: i + 1 }));
    const membership = initialMembership(members);
    const nodes: Replica<Command, CommandResult>[] = [];
    for (const node of members) {
      const replica = Replica.create({ cellKey, node, machine: new CellMachine(), env }, membership, out);
      nodes.push(replica);
      if (node.serverId === "s1") leaders.push(replica);
    }
    replicas.set(cellKey, nodes);
  }
  let committed = 0;
  let messages = 0;
  const drain = (): void => {
    // Execute the Ready batches: persistence is a no-op here (no I/O); messages go in order.
    for (;;) {
      committed += out.results.length;
      for (const m of out.sendNow) bus.queue.push(m);
      for (const m of out.sendAfterPersist) bus.queue.push(m);
      out.reset();
      if (bus.queue.length === 0) return;
      const queue = bus.queue;
      bus.queue = [];
      messages += queue.length;
      for (const sent of queue) {
        const m = wire ? reencode(sent) : sent;
        const target = replicas.get(m.cellKey)?.[m.to.incarnation - 1];
        target?.step(m, 0, out);
      }
    }
  };
  // Elect s1 in every cell, then run `warmup` rounds unmeasured (the code is compiled and the
  // heap has reached its working size: the figure is the steady state).
  let seq = 1;
  for (const leader of leaders) leader.propose(command(1, seq, 0), 0, 0, out);
  drain();
  const round = (r: number): void => {
    seq += 1;
    for (const leader of leaders) {
      for (let k = 0; k < concurrency; k++) leader.propose(command(1 + k, seq, r), k + 1, 0, out);
    }
    drain();
  };
  for (let r = 0; r < warmup; r++) round(r);
  committed = 0;
  messages = 0;
  const t0 = process.cpuUsage();
  const w0 = process.hrtime.bigint();
  for (let r = 0; r < rounds; r++) round(warmup + r);
  const cpu = process.cpuUsage(t0);
  const wallMs = Number(process.hrtime.bigint() - w0) / 1e6;
  const cpuUs = cpu.user + cpu.system;
  return {
    cells,
    nodesPerCell: 7,
    concurrencyPerCell: concurrency,
    committed,
    messages,
    wire,
    cpuUsPerCommit: cpuUs / committed,
    messagesPerCommit: messages / committed,
    wallMs: Math.round(wallMs),
  };
}

// ---------------------------------------------------------------- idle nodes

class NullStorage implements StoragePort<Command> {
  load() {
    return { status: "absent" as const };
  }
  hostedCells(): string[] {
    return [];
  }
  pointers() {
    return [];
  }
  write(_batch: StorageBatch<Command>, done: (error: Error | null) => void): void {
    done(null);
  }
}

class CountingTransport implements TransportPort<ServerMessage> {
  readonly address = "s1";
  sent = 0;
  paxos = 0;
  send(_to: string, message: ServerMessage): void {
    this.sent += 1;
    if (message.kind === "paxos") this.paxos += 1;
  }
  flush(): void {}
  onMessage(): void {}
}

/** A manual clock: timers fire only when `advance` runs them. */
class ManualScheduler implements Scheduler {
  now = 0;
  private nextId = 1;
  readonly timers = new Map<number, { at: number; run: () => void }>();
  deferred: (() => void)[] = [];
  firings = 0;
  nowMs(): number {
    return this.now;
  }
  setTimer(delayMs: number, callback: () => void): TimerHandle {
    const id = this.nextId++;
    this.timers.set(id, { at: this.now + delayMs, run: callback });
    return { id };
  }
  clearTimer(handle: TimerHandle): void {
    this.timers.delete(handle.id);
  }
  defer(callback: () => void): void {
    this.deferred.push(callback);
  }
  runDeferred(): void {
    while (this.deferred.length > 0) (this.deferred.shift() as () => void)();
  }
  advance(ms: number): void {
    const end = this.now + ms;
    for (;;) {
      this.runDeferred();
      let next: [number, { at: number; run: () => void }] | null = null;
      for (const entry of this.timers)
        if (entry[1].at <= end && (next === null || entry[1].at < next[1].at)) next = entry;
      if (next === null) break;
      this.timers.delete(next[0]);
      this.now = next[1].at;
      this.firings += 1;
      next[1].run();
    }
    this.now = end;
  }
}

function idleNodes(count: number) {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error("run with --expose-gc (npm run bench:cell does)");
  const scheduler = new ManualScheduler();
  const transport = new CountingTransport();
  const server = new Server({
    serverId: "s1",
    peers: ["s1", "s2", "s3", "s4", "s5", "s6", "s7"],
    storage: new NullStorage(),
    transport,
    scheduler,
    random: new Prng(3),
  });
  scheduler.runDeferred();
  gc();
  const before = process.memoryUsage().heapUsed;
  for (let c = 0; c < count; c++) {
    const members = Array.from({ length: 7 }, (_, i) => ({ serverId: `s${i + 1}`, incarnation: i + 1 }));
    server.createCell(`vol-${c.toString(16).padStart(8, "0")}`, members);
    if (c % 1000 === 999) scheduler.runDeferred();
  }
  scheduler.runDeferred();
  gc();
  const after = process.memoryUsage().heapUsed;
  const sentBefore = transport.sent;
  const paxosBefore = transport.paxos;
  const firingsBefore = server.counters.timerFirings;
  const idleSeconds = 60;
  scheduler.advance(idleSeconds * 1000);
  const status = server.status();
  return {
    residentNodes: status.residentNodes,
    heapBytesPerNode: Math.round((after - before) / count),
    armedCellTimers: status.armedTimers,
    cellTimerFiringsWhileIdle: server.counters.timerFirings - firingsBefore,
    paxosMessagesWhileIdle: transport.paxos - paxosBefore,
    idleSeconds,
    serverHeartbeatsPerSecond: (transport.sent - sentBefore - (transport.paxos - paxosBefore)) / idleSeconds,
  };
}

/**
 * Heap of a node after its cell was used: single-member cells take a few writes (one item,
 * one client session, the log entries since the last snapshot), then go idle.
 */
function usedNodes(count: number, writes: number) {
  const gc = (globalThis as { gc?: () => void }).gc as () => void;
  const env: ReplicaEnvironment = {
    random: new Prng(5),
    isServerAlive: () => true,
    observer: null,
    bugs: null,
    memberships: new MembershipInterner(),
  };
  const out = new Output<Command, CommandResult>();
  const node = { serverId: "s1", incarnation: 1 };
  const membershipOf = () => initialMembership([node]);
  gc();
  const before = process.memoryUsage().heapUsed;
  const keep: Replica<Command, CommandResult>[] = [];
  for (let c = 0; c < count; c++) {
    const replica = Replica.create(
      { cellKey: `vol-${c}`, node, machine: new CellMachine(), env },
      membershipOf(),
      out,
    );
    for (let w = 0; w < writes; w++) replica.propose(command(1, w + 1, 0), w, 0, out);
    for (let guard = 0; guard < 100 && !out.isEmpty(); guard++) {
      const messages = [...out.sendNow, ...out.sendAfterPersist];
      out.reset();
      for (const m of messages) replica.step(m, 0, out);
    }
    out.reset();
    keep.push(replica);
  }
  gc();
  const after = process.memoryUsage().heapUsed;
  const applied = keep.reduce((sum, r) => sum + r.appliedIndex, 0) / count;
  return {
    nodes: count,
    writesPerCell: writes,
    appliedPerCell: applied,
    heapBytesPerNode: Math.round((after - before) / count),
  };
}

// ---------------------------------------------------------------- main

type CpuRun = ReturnType<typeof cpuPerCommit>;

/** One CPU measurement in a fresh process (a clean heap and compiler state each time). */
function cpuInChild(flags: readonly string[], concurrency: number, wire = false): CpuRun {
  const script = process.argv[1] as string;
  const args = [...process.execArgv, ...flags, script, "--worker", String(concurrency)];
  args.push("--cells", String(cells), "--rounds", String(rounds), "--warmup", String(warmup));
  if (wire) args.push("--wire");
  const child = spawnSync(process.execPath, args, { encoding: "utf8", maxBuffer: 1 << 20 });
  if (child.status !== 0) throw new Error(`benchmark worker failed (${child.status}): ${child.stderr}`);
  return JSON.parse(child.stdout.trim().split("\n").at(-1) as string) as CpuRun;
}

function summarize(runs: CpuRun[]) {
  const figures = runs.map((r) => r.cpuUsPerCommit).sort((a, b) => a - b);
  const first = runs[0] as CpuRun;
  return {
    cells: first.cells,
    nodesPerCell: first.nodesPerCell,
    concurrencyPerCell: first.concurrencyPerCell,
    committedPerRun: first.committed,
    messagesPerCommit: first.messagesPerCommit,
    runs: figures.length,
    cpuUsPerCommit: round2(median(figures)),
    cpuUsPerCommitMin: round2(figures[0] as number),
    cpuUsPerCommitMax: round2(figures.at(-1) as number),
  };
}

function round2(value: number): number {
  return Math.round(value * 100) / 100;
}

const cells = option("cells", 2000);
const rounds = option("rounds", 60);
const warmup = option("warmup", 10);
const runs = option("runs", 3);
const idleCount = option("idle-nodes", 100_000);
const worker = process.argv.indexOf("--worker");
if (worker >= 0) {
  const concurrency = Number(process.argv[worker + 1]);
  console.log(
    JSON.stringify(cpuPerCommit(cells, rounds, warmup, concurrency, process.argv.includes("--wire"))),
  );
  process.exit(0);
}
for (const [name, value] of [
  ["cells", cells],
  ["rounds", rounds],
  ["runs", runs],
  ["idle-nodes", idleCount],
] as const) {
  if (!Number.isSafeInteger(value) || value < 1) {
    console.error(`--${name} must be a positive integer, not ${value}`);
    process.exit(2);
  }
}
if (!Number.isSafeInteger(warmup) || warmup < 0) {
  console.error(`--warmup must be an integer >= 0, not ${warmup}`);
  process.exit(2);
}

const floors = await measureFloors(tmpdir());
if (!json) console.log(`${floorsLine(floors)} (context only: this benchmark does no I/O)`);
const configurations = [
  { name: "serverFlags", flags: serverNodeFlags },
  { name: "defaultFlags", flags: [] as readonly string[] },
] as const;
const protocol: Record<
  string,
  {
    flags: string;
    oneRequestPerCell: ReturnType<typeof summarize>;
    eightRequestsPerCell: ReturnType<typeof summarize>;
  }
> = {};
/** Both workloads, `runs` fresh processes each, with `flags` (and every message re-encoded: `wire`). */
const measureBoth = (flags: readonly string[], wire: boolean) => {
  const measure = (concurrency: number) =>
    summarize(Array.from({ length: runs }, () => cpuInChild(flags, concurrency, wire)));
  return {
    flags: flags.join(" ") || "(none)",
    oneRequestPerCell: measure(1),
    eightRequestsPerCell: measure(8),
  };
};
for (const { name, flags } of configurations) protocol[name] = measureBoth(flags, false);
const server = protocol.serverFlags as (typeof protocol)[string];
const encoded = measureBoth(serverNodeFlags, true);
const idle = idleNodes(idleCount);
const used = usedNodes(20_000, 3);
const cpuMet =
  server.oneRequestPerCell.cpuUsPerCommit <= 20 && server.eightRequestsPerCell.cpuUsPerCommit <= 20;
const result = {
  benchmark: "cell",
  node: process.version,
  cpu: `${execSync("nproc").toString().trim()} cores`,
  floors,
  rounds,
  warmupRounds: warmup,
  protocol,
  encoded,
  idle,
  used,
  targets: {
    cpuUsPerCommitMax: 20,
    heapBytesPerIdleNodeMax: 1024,
    judgedOn: "serverFlags, median of runs, both workloads",
    met:
      cpuMet &&
      idle.heapBytesPerNode <= 1024 &&
      idle.cellTimerFiringsWhileIdle === 0 &&
      idle.paxosMessagesWhileIdle === 0,
  },
};
if (json) {
  console.log(JSON.stringify(result));
} else {
  const p = (r: ReturnType<typeof summarize>) =>
    `${r.cells} cells x 7 nodes, ${r.concurrencyPerCell} request(s) per cell per round: ` +
    `${r.cpuUsPerCommit.toFixed(2)} us CPU per commit (median of ${r.runs}; ${r.cpuUsPerCommitMin.toFixed(2)}-${r.cpuUsPerCommitMax.toFixed(2)}), ` +
    `${r.messagesPerCommit.toFixed(1)} messages per commit`;
  for (const [name, figures] of Object.entries(protocol)) {
    console.log(`${name} (${figures.flags}):`);
    console.log(`  ${p(figures.oneRequestPerCell)}`);
    console.log(`  ${p(figures.eightRequestsPerCell)}`);
  }
  console.log("serverFlags, every message encoded and decoded again (not judged):");
  console.log(`  ${p(encoded.oneRequestPerCell)}`);
  console.log(`  ${p(encoded.eightRequestsPerCell)}`);
  console.log(
    `${idle.residentNodes} resident idle nodes: ${idle.heapBytesPerNode} bytes of heap per node; over ${idle.idleSeconds} s idle: ` +
      `${idle.armedCellTimers} armed cell timers, ${idle.cellTimerFiringsWhileIdle} cell timer firings, ${idle.paxosMessagesWhileIdle} cell messages, ` +
      `${idle.serverHeartbeatsPerSecond} server heartbeats/s (per server pair, independent of cells)`,
  );
  console.log(
    `${used.nodes} nodes after ${used.writesPerCell} writes each (applied ${used.appliedPerCell}), then idle: ${used.heapBytesPerNode} bytes of heap per node`,
  );
  console.log(`targets met: ${result.targets.met ? "yes" : "NO"}`);
}
