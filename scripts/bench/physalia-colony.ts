/**
 * A colony of real Physalia server processes on 127.0.0.1 for the benchmarks: a topology on free
 * ports, one configuration file per server, one `physalia server` process per server (started
 * with the server's Node flags), cell creation through the admin ports, and readings of
 * /status and /metrics.
 */
import type { ChildProcess } from "node:child_process";
import { mkdirSync, openSync } from "node:fs";
import { join } from "node:path";
import { loadColonyKey, type ServerConfig, type Topology } from "../../src/cli/colony.ts";
import { adminToken } from "../../src/cli/server-process.ts";
import type { NodeId } from "../../src/core/index.ts";
import { placeCell } from "../../src/discovery/index.ts";
import { localTopology, serverProcessArgs, writeColonyFiles } from "../../test/support/colony.ts";
import { type Children, processStat, residentMemory, waitFor } from "./common.ts";

const root = join(import.meta.dirname, "..", "..");
/** Cells one creation request may carry (the admin port's limit). */
const createBatchMax = 1000;

export interface ServerStatus {
  readonly hostedNodes: number;
  readonly residentNodes: number;
  readonly leaders: number;
  readonly rssBytes: number;
}

export class BenchColony {
  readonly topology: Topology;
  readonly connectionFile: string;
  readonly colonyKey: Buffer;
  private readonly processes = new Map<string, ChildProcess>();
  private readonly configFiles: ReadonlyMap<string, string>;

  private constructor(
    private readonly children: Children,
    readonly dir: string,
    topology: Topology,
    overrides: Readonly<Record<string, Partial<ServerConfig>>>,
  ) {
    this.topology = topology;
    const files = writeColonyFiles(dir, topology, overrides);
    this.colonyKey = loadColonyKey(files.keyFile, {});
    this.configFiles = files.configFiles;
    this.connectionFile = files.connectionFile;
    mkdirSync(join(dir, "logs"), { recursive: true });
  }

  /**
   * A colony of `servers` servers over three racks and three power domains, none started yet;
   * `overrides` adds settings to some servers' configurations, by server id.
   */
  static async create(
    children: Children,
    dir: string,
    servers: number,
    cellSize: number,
    overrides: Readonly<Record<string, Partial<ServerConfig>>> = {},
  ) {
    const topology = await localTopology(servers, cellSize, "bench");
    return new BenchColony(children, dir, topology, overrides);
  }

  get serverIds(): string[] {
    return this.topology.servers.map((s) => s.id);
  }

  pid(id: string): number {
    const pid = this.processes.get(id)?.pid;
    if (pid === undefined) throw new Error(`server ${id} is not running`);
    return pid;
  }

  get pids(): number[] {
    return [...this.processes.values()].map((child) => child.pid as number);
  }

  /** Starts one server process; its log (JSON lines on stderr) goes to logs/<id>.log. */
  start(id: string, extraNodeFlags: readonly string[] = []): ChildProcess {
    const log = openSync(join(this.dir, "logs", `${id}.log`), "a");
    const child = this.children.spawn(
      `server ${id}`,
      process.execPath,
      serverProcessArgs(this.configFiles.get(id) as string, extraNodeFlags),
      { cwd: root, stdio: ["ignore", log, log], env: { ...process.env, PHYSALIA_COLONY_KEY: "" } },
    );
    this.processes.set(id, child);
    child.once("exit", () => {
      if (this.processes.get(id) === child) this.processes.delete(id);
    });
    return child;
  }

  /** kill -9 by pid; resolves when the process is gone. */
  async kill(id: string): Promise<void> {
    const child = this.processes.get(id);
    if (child === undefined) return;
    this.processes.delete(id);
    await this.children.kill(child, "SIGKILL");
  }

  /** SIGTERM by pid (the server closes its storage), SIGKILL if it lingers. */
  async stop(id: string): Promise<void> {
    const child = this.processes.get(id);
    if (child === undefined) return;
    this.processes.delete(id);
    await this.children.kill(child, "SIGTERM");
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.processes.keys()].map((id) => this.stop(id)));
  }

  adminUrl(id: string): string {
    const s = this.topology.servers.find((server) => server.id === id);
    if (s === undefined) throw new Error(`no server ${id} in the topology`);
    return `http://${s.host}:${s.adminPort}`;
  }

  /** Waits until the server answers /healthz; returns the milliseconds that took. */
  healthy(id: string, timeoutMs = 30_000): Promise<number> {
    return waitFor(
      `/healthz of server ${id}`,
      async () => {
        const child = this.processes.get(id);
        if (child === undefined || child.exitCode !== null)
          throw new Error(`server ${id} exited; see ${join(this.dir, "logs", `${id}.log`)}`);
        const response = await fetch(`${this.adminUrl(id)}/healthz`, { signal: AbortSignal.timeout(1000) });
        return response.ok;
      },
      timeoutMs,
      10,
    );
  }

  async startAll(extraNodeFlags: readonly string[] = []): Promise<void> {
    for (const id of this.serverIds) this.start(id, extraNodeFlags);
    await Promise.all(this.serverIds.map((id) => this.healthy(id)));
  }

  /**
   * Creates cells through the admin ports, in batches of 1000. Each cell goes to its members as
   * placed by the topology, or, with `only`, to that one server alone (its peers need not run:
   * a founding node exists without them).
   */
  async createCells(cellKeys: readonly string[], only?: string): Promise<void> {
    const perServer = new Map<string, { cellKey: string; members: NodeId[] }[]>();
    for (const cellKey of cellKeys) {
      const ids = placeCell(cellKey, this.topology.servers, this.topology.cellSize);
      const members = ids.map((serverId, i) => ({ serverId, incarnation: i + 1 }));
      for (const id of only === undefined ? ids : [only]) {
        const list = perServer.get(id) ?? [];
        list.push({ cellKey, members });
        perServer.set(id, list);
      }
    }
    const token = adminToken(this.colonyKey);
    await Promise.all(
      [...perServer].map(async ([id, cells]) => {
        for (let i = 0; i < cells.length; i += createBatchMax) {
          const response = await fetch(`${this.adminUrl(id)}/cells`, {
            method: "POST",
            headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
            body: JSON.stringify({ cells: cells.slice(i, i + createBatchMax) }),
          }).catch((error: unknown) => {
            const cause = (error as { cause?: unknown }).cause;
            throw new Error(
              `creating cells ${i + 1}-${Math.min(i + createBatchMax, cells.length)} of ${cells.length} on ${id}: ${String(error)}${cause === undefined ? "" : ` (${String(cause)})`}`,
            );
          });
          if (!response.ok)
            throw new Error(`creating cells on ${id}: ${response.status} ${await response.text()}`);
        }
      }),
    );
  }

  async status(id: string): Promise<ServerStatus> {
    const response = await fetch(`${this.adminUrl(id)}/status`, { signal: AbortSignal.timeout(10_000) });
    if (!response.ok) throw new Error(`/status of ${id}: ${response.status}`);
    return (await response.json()) as ServerStatus;
  }

  /** The unlabeled samples of a server's /metrics, by name. */
  async metrics(id: string): Promise<Map<string, number>> {
    const response = await fetch(`${this.adminUrl(id)}/metrics`, { signal: AbortSignal.timeout(10_000) });
    if (!response.ok) throw new Error(`/metrics of ${id}: ${response.status}`);
    const values = new Map<string, number>();
    for (const line of (await response.text()).split("\n")) {
      // A series with labels is kept under its name and labels as written: `name{kind="accept"}`.
      if (line.startsWith("#")) continue;
      const space = line.lastIndexOf(" ");
      if (space > 0) values.set(line.slice(0, space), Number(line.slice(space + 1)));
    }
    return values;
  }

  /** Sum of one counter over the running servers. */
  async counterSum(name: string): Promise<number> {
    return (await this.counterSums({ value: name })).value as number;
  }

  /**
   * Sums of several series over the running servers, from one scrape of each (a scrape settles
   * the server's journal into lmdb first, so one is better than one per series).
   */
  async counterSums<K extends string>(series: Readonly<Record<K, string>>): Promise<Record<K, number>> {
    const all = await Promise.all([...this.processes.keys()].map((id) => this.metrics(id)));
    const sums = {} as Record<K, number>;
    for (const key of Object.keys(series) as K[]) {
      let sum = 0;
      for (const m of all) sum += m.get(series[key]) ?? 0;
      sums[key] = sum;
    }
    return sums;
  }

  rssBytes(id: string): number {
    return processStat(this.pid(id))?.rssBytes ?? 0;
  }

  /** Resident memory of a server by kind: its own (anonymous) and lmdb's mapped file. */
  residentMemory(id: string): { anonBytes: number; fileBytes: number } {
    return residentMemory(this.pid(id)) ?? { anonBytes: 0, fileBytes: 0 };
  }
}

/** Cell keys of a benchmark: `bench-000000`, ... */
export function cellKeys(count: number, prefix = "bench"): string[] {
  return Array.from({ length: count }, (_, i) => `${prefix}-${i.toString().padStart(7, "0")}`);
}
