/**
 * A colony of real server processes for fault tests and soaks (test/colony-faults.test.ts,
 * scripts/soak-colony.ts): servers started from the sources, killed with SIGKILL, paused with
 * SIGSTOP and resumed with SIGCONT, always by the pid this module started; concurrent clients
 * writing and reading a few cells; and the check of their history by the simulator's own
 * linearizability checker and cell model.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { join } from "node:path";
import type { Transaction, TxnResult } from "../../src/cell/index.ts";
import { loadColonyKey, type Topology } from "../../src/cli/colony.ts";
import { Prng } from "../../src/core/index.ts";
import { OutcomeUnknownError, PhysaliaClient } from "../../src/index.ts";
import { cellModel } from "../../src/sim/cell-model.ts";
import { checkLinearizable, type HistoryOperation } from "../../src/sim/linearizability.ts";
import { createCells, serverProcessArgs, writeColonyFiles } from "./colony.ts";

const root = join(import.meta.dirname, "..", "..");
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The items the workload touches in every cell. */
const items = ["x", "y", "z"] as const;
const readAll: Transaction = { conditions: [], reads: ["x", "y", "z", "n"], writes: [] };

/** The colony killed a server while it waited for it to start. */
export class KilledWhileStarting extends Error {
  override name = "KilledWhileStarting";
  constructor(readonly id: string) {
    super(`server ${id} was killed while it started`);
  }
}

export class ProcessColony {
  private readonly processes = new Map<string, ChildProcess>();
  private readonly paused = new Set<string>();
  private readonly configFiles: ReadonlyMap<string, string>;
  /** The connection file clients read. */
  readonly colonyFile: string;
  readonly key: Buffer;
  /** Servers that exited without being killed: a crash, which no fault should cause. */
  readonly unexpectedExits: string[] = [];

  constructor(
    readonly dir: string,
    readonly topology: Topology,
    overrides: Parameters<typeof writeColonyFiles>[2] = {},
  ) {
    const files = writeColonyFiles(dir, topology, overrides);
    this.configFiles = files.configFiles;
    this.colonyFile = files.connectionFile;
    this.key = loadColonyKey(files.keyFile, {});
  }

  get ids(): string[] {
    return this.topology.servers.map((s) => s.id);
  }

  isRunning(id: string): boolean {
    return this.processes.has(id);
  }

  isPaused(id: string): boolean {
    return this.paused.has(id);
  }

  /** Where the server's output (its JSON log) goes: appended across its restarts. */
  logFile(id: string): string {
    return join(this.dir, `${id}.log`);
  }

  start(id: string): void {
    if (this.processes.has(id)) throw new Error(`server ${id} is already running`);
    const log = openSync(this.logFile(id), "a");
    try {
      const child = spawn(process.execPath, serverProcessArgs(this.configFiles.get(id) as string), {
        cwd: root,
        stdio: ["ignore", log, log],
        env: { ...process.env, PHYSALIA_COLONY_KEY: "" },
      });
      this.processes.set(id, child);
      child.once("exit", (code, signal) => {
        // kill() forgets the process before it signals it: one still known exited by itself.
        if (this.processes.get(id) === child)
          this.unexpectedExits.push(
            `server ${id} stopped (${signal !== null ? `killed by ${signal}` : `exit code ${code}`}); its log: ${this.logFile(id)}`,
          );
      });
    } finally {
      closeSync(log);
    }
  }

  /** kill -9, by pid; resolves when the process is gone. */
  kill(id: string): Promise<void> {
    return this.end(id, "SIGKILL", 0);
  }

  /**
   * SIGTERM, by pid: the server stops cleanly (its journal checkpointed into lmdb, nothing left to
   * replay); resolves when the process is gone, after SIGKILL if it took longer than `timeoutMs`.
   */
  stop(id: string, timeoutMs = 15_000): Promise<void> {
    return this.end(id, "SIGTERM", timeoutMs);
  }

  private async end(id: string, signal: "SIGKILL" | "SIGTERM", timeoutMs: number): Promise<void> {
    const child = this.processes.get(id);
    if (child === undefined) return;
    const wasPaused = this.paused.delete(id);
    this.processes.delete(id);
    if (child.exitCode !== null || child.signalCode !== null) return;
    const pid = child.pid as number;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    process.kill(pid, signal);
    let timer: NodeJS.Timeout | null = null;
    if (signal === "SIGTERM") {
      // A frozen process handles SIGTERM only once it runs again.
      if (wasPaused) process.kill(pid, "SIGCONT");
      timer = setTimeout(() => {
        if (child.exitCode === null && child.signalCode === null) process.kill(pid, "SIGKILL");
      }, timeoutMs);
    }
    await exited;
    if (timer !== null) clearTimeout(timer);
  }

  /** SIGHUP, by pid: a server reads its colony keys again. */
  hangUp(id: string): void {
    const child = this.processes.get(id);
    if (child === undefined) throw new Error(`server ${id} is not running`);
    process.kill(child.pid as number, "SIGHUP");
  }

  /** SIGSTOP: the process keeps its sockets open and says nothing, as one frozen or cut off. */
  pause(id: string): void {
    const child = this.processes.get(id);
    if (child === undefined || this.paused.has(id)) return;
    process.kill(child.pid as number, "SIGSTOP");
    this.paused.add(id);
  }

  resume(id: string): void {
    const child = this.processes.get(id);
    if (child === undefined || !this.paused.has(id)) return;
    process.kill(child.pid as number, "SIGCONT");
    this.paused.delete(id);
  }

  /**
   * Waits until the server answers /healthz; returns how long that took. Fails at once if the
   * process exits first (naming its exit and its log), or if this colony kills it meanwhile.
   */
  /**
   * Starts every server, waits until each is healthy, creates `cells` and connects `count` SDK
   * clients (client i from localAddressOf(i), when it names an address). Each client is pushed
   * to `clients` once connected, so that the caller's cleanup closes it whatever fails later.
   */
  async startWithClients(
    cells: readonly string[],
    clients: PhysaliaClient[],
    count: number,
    localAddressOf: (i: number) => string | undefined = () => undefined,
  ): Promise<void> {
    for (const id of this.ids) this.start(id);
    await Promise.all(this.ids.map((id) => this.healthy(id)));
    await createCells(this.topology, this.key, cells);
    for (let i = 0; i < count; i++) {
      const localAddress = localAddressOf(i);
      clients.push(
        await PhysaliaClient.connect({
          colony: this.colonyFile,
          requestTimeoutMs: 300,
          ...(localAddress !== undefined ? { localAddress } : {}),
        }),
      );
    }
  }

  async healthy(id: string, timeoutMs = 20_000): Promise<number> {
    const s = this.topology.servers.find((server) => server.id === id);
    const child = this.processes.get(id);
    if (child === undefined) throw new Error(`server ${id} is not running`);
    const started = performance.now();
    while (performance.now() - started < timeoutMs) {
      if (this.processes.get(id) !== child) throw new KilledWhileStarting(id);
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(
          `server ${id} exited (${child.exitCode ?? child.signalCode}) before it answered; its log: ${this.logFile(id)}`,
        );
      try {
        const response = await fetch(`http://${s?.host}:${s?.adminPort}/healthz`, {
          signal: AbortSignal.timeout(500),
        });
        if (response.ok) return performance.now() - started;
      } catch {
        // not up yet
      }
      await sleep(50);
    }
    throw new Error(`server ${id} did not become healthy in ${timeoutMs} ms; its log: ${this.logFile(id)}`);
  }

  /** What the server's /status says of its peers and faulty nodes; throws if it does not answer in time. */
  async status(id: string, timeoutMs: number): Promise<{ suspectedPeers: string[]; faultyCells: string[] }> {
    const s = this.topology.servers.find((server) => server.id === id);
    if (s === undefined) throw new Error(`no server ${id} in the topology`);
    const response = await fetch(`http://${s.host}:${s.adminPort}/status`, {
      signal: AbortSignal.timeout(timeoutMs),
    });
    return (await response.json()) as { suspectedPeers: string[]; faultyCells: string[] };
  }

  /** The value of one unlabelled series of a server's /metrics. */
  async metric(id: string, name: string, timeoutMs: number): Promise<number> {
    const s = this.topology.servers.find((server) => server.id === id);
    if (s === undefined) throw new Error(`no server ${id} in the topology`);
    const response = await fetch(`http://${s.host}:${s.adminPort}/metrics`, {
      signal: AbortSignal.timeout(timeoutMs),
    });
    const line = (await response.text()).split("\n").find((l) => l.startsWith(`${name} `));
    if (line === undefined) throw new Error(`server ${id} reports no ${name}`);
    return Number(line.slice(name.length + 1));
  }

  /** SIGKILL to every server still running, at once (for an exit handler, which cannot wait). */
  killAllNow(): void {
    for (const [id, child] of this.processes) {
      this.processes.delete(id);
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid as number, "SIGKILL");
    }
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.processes.keys()].map((id) => this.kill(id)));
  }
}

/**
 * The server of the cell's leader as a node of the cell tells it (`describe`), asked again every
 * 100 ms until one names a leader; null if none did within `timeoutMs`.
 */
export async function leaderServerOf(
  client: PhysaliaClient,
  cellKey: string,
  timeoutMs: number,
): Promise<string | null> {
  const deadline = performance.now() + timeoutMs;
  do {
    try {
      const leader = (await client.cell(cellKey).describe()).leader;
      if (leader !== null) return leader.serverId;
    } catch {
      // no node answered in time: ask again
    }
    await sleep(100);
  } while (performance.now() < deadline);
  return null;
}

export interface Entry {
  readonly id: number;
  readonly client: number;
  readonly cellKey: string;
  readonly txn: Transaction;
  readonly write: boolean;
  readonly callMs: number;
  returnMs: number | null;
  output: TxnResult | undefined;
  failed: boolean;
}

export interface Workload {
  /** Writes acknowledged so far, to every cell or to one, by every client or by those listed. */
  acknowledgedWrites(cellKey?: string, clients?: readonly number[]): number;
  /**
   * Milliseconds from `sinceMs` (a performance.now() reading) until a write to `cellKey` called
   * at or after it was acknowledged; null if none was within `timeoutMs` of it.
   */
  nextAcknowledgedWrite(cellKey: string, sinceMs: number, timeoutMs: number): Promise<number | null>;
  stop(): Promise<Entry[]>;
}

/**
 * Closed-loop clients, one per PhysaliaClient, each writing and reading random cells of `cells`
 * until stopped: puts of unique values, additions, reads of every item, and a conditional
 * addition. `stop()` ends the loops once their operations in flight end, reads every cell once
 * more (those reads must see every acknowledged write) and returns the whole history.
 */
export function runWorkload(
  clients: readonly PhysaliaClient[],
  cells: readonly string[],
  seed: number,
): Workload {
  const history: Entry[] = [];
  let nextId = 1;
  let running = true;
  let valueCounter = 0;
  const run = async (client: PhysaliaClient, index: number): Promise<void> => {
    // Each client's own stream, from the seed: xoshiro128**, uniform over cells and kinds.
    const prng = new Prng((seed * 104729 + index * 7919 + 1) >>> 0);
    const random = (n: number) => prng.below(n);
    while (running) {
      const cellKey = cells[random(cells.length)] as string;
      const kind = random(10);
      let txn: Transaction;
      if (kind < 4) {
        valueCounter += 1;
        const value = new TextEncoder().encode(`v${valueCounter}`);
        txn = { conditions: [], reads: [], writes: [{ item: items[random(3)] as string, op: "put", value }] };
      } else if (kind < 6) {
        txn = { conditions: [], reads: [], writes: [{ item: "n", op: "add", delta: 1n }] };
      } else if (kind < 9) {
        txn = readAll;
      } else {
        txn = {
          conditions: [{ item: "x", op: "exists" }],
          reads: ["x"],
          writes: [{ item: "y", op: "add", delta: 1n }],
        };
      }
      const entry: Entry = {
        id: nextId++,
        client: index,
        cellKey,
        txn,
        write: txn.writes.length > 0,
        callMs: performance.now(),
        returnMs: null,
        output: undefined,
        failed: false,
      };
      history.push(entry);
      try {
        entry.output = await client.cell(cellKey).transact(txn);
        entry.returnMs = performance.now();
      } catch (error) {
        entry.failed = true;
        if (!(error instanceof Error)) throw error;
        if (error instanceof OutcomeUnknownError) continue;
        await sleep(20);
      }
    }
  };
  const workers = clients.map((client, i) => run(client, i));
  return {
    acknowledgedWrites: (cellKey, byClients) =>
      history.filter(
        (e) =>
          e.write &&
          e.returnMs !== null &&
          (cellKey === undefined || e.cellKey === cellKey) &&
          (byClients === undefined || byClients.includes(e.client)),
      ).length,
    async nextAcknowledgedWrite(cellKey, sinceMs, timeoutMs) {
      for (;;) {
        let first: number | null = null;
        for (const e of history)
          if (e.cellKey === cellKey && e.write && e.callMs >= sinceMs && e.returnMs !== null)
            first = Math.min(first ?? e.returnMs, e.returnMs);
        if (first !== null && first - sinceMs <= timeoutMs) return Math.round(first - sinceMs);
        if (performance.now() - sinceMs > timeoutMs) return null;
        await sleep(50);
      }
    },
    async stop(): Promise<Entry[]> {
      running = false;
      await Promise.all(workers);
      // Final reads of every cell, after every write has ended.
      const reader = clients[0] as PhysaliaClient;
      for (const cellKey of cells) {
        let output: TxnResult | undefined;
        const callMs = performance.now();
        for (let attempt = 0; attempt < 40 && output === undefined; attempt++) {
          try {
            output = await reader.cell(cellKey).transact(readAll);
          } catch {
            await sleep(250);
          }
        }
        if (output === undefined) throw new Error(`the final read of ${cellKey} failed 40 times`);
        history.push({
          id: nextId++,
          client: clients.length,
          cellKey,
          txn: readAll,
          write: false,
          callMs,
          returnMs: performance.now(),
          output,
          failed: false,
        });
      }
      return history;
    },
  };
}

/**
 * A cell's history as the checker takes it. A write that failed may still have applied: it is
 * open-ended. A failed read is dropped.
 */
export function operationsOf(
  cellKey: string,
  history: readonly Entry[],
): HistoryOperation<{ txn: Transaction }, TxnResult>[] {
  const operations: HistoryOperation<{ txn: Transaction }, TxnResult>[] = [];
  for (const e of history) {
    if (e.cellKey !== cellKey) continue;
    const base = { id: e.id, client: e.client, input: { txn: e.txn }, callMs: e.callMs };
    if (e.returnMs !== null && e.output !== undefined)
      operations.push({ ...base, returnMs: e.returnMs, output: e.output });
    else if (e.write) operations.push({ ...base, returnMs: null, output: undefined });
  }
  return operations;
}

export interface HistoryVerdict {
  readonly operations: number;
  readonly acknowledgedWrites: number;
  readonly reads: number;
  readonly failed: number;
  /** Per cell: "ok", "unknown: ..." (the search ran out of steps) or the violation explained. */
  readonly cells: ReadonlyMap<string, string>;
  /** Per cell: its acknowledged writes (every cell should have had its share of the load). */
  readonly acknowledgedWritesByCell: ReadonlyMap<string, number>;
}

/** Checks every cell's history: linearizable, with the final reads seeing every acknowledged write. */
export function checkHistory(
  history: readonly Entry[],
  cells: readonly string[],
  maxSteps = 5_000_000,
): HistoryVerdict {
  const verdicts = new Map<string, string>();
  for (const cellKey of cells) {
    const result = checkLinearizable(operationsOf(cellKey, history), cellModel(), { maxSteps });
    verdicts.set(
      cellKey,
      result.status === "ok"
        ? "ok"
        : result.status === "unknown"
          ? `unknown: ${result.reason}`
          : result.explanation,
    );
  }
  return {
    operations: history.length,
    acknowledgedWrites: history.filter((e) => e.write && e.returnMs !== null).length,
    reads: history.filter((e) => !e.write && e.returnMs !== null).length,
    failed: history.filter((e) => e.failed).length,
    cells: verdicts,
    acknowledgedWritesByCell: new Map(
      cells.map((cellKey) => [
        cellKey,
        history.filter((e) => e.cellKey === cellKey && e.write && e.returnMs !== null).length,
      ]),
    ),
  };
}
