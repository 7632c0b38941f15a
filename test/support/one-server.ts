/**
 * One real server process, started with the server's Node flags in a directory of its own, and
 * reads of its /metrics: for tests of what a single server does on its own.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureKeyFile, loadColonyKey, type ServerConfig, type Topology } from "../../src/cli/colony.ts";
import { localTopology, serverProcessArgs } from "./colony.ts";

const root = join(import.meta.dirname, "..", "..");

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The value of an unlabeled series in a /metrics text, NaN if absent. */
export function metric(text: string, name: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.slice(name.length + 1));
}

export interface OneServer {
  readonly topology: Topology;
  readonly colonyKey: Uint8Array;
  /** The server's /metrics text, or "" if it does not answer within 2 s. */
  scrape(): Promise<string>;
  /** What the server has logged so far (its standard error, the last 1 MiB). */
  log(): string;
  /** Kills the process (SIGKILL) if it still runs, and removes its directory. */
  stop(): Promise<void>;
}

/** Starts the server and waits (up to 20 s) until its admin port answers. */
export async function startOneServer(
  name: string,
  config: Partial<Pick<ServerConfig, "residentIdleSeconds">> = {},
): Promise<OneServer> {
  const dir = mkdtempSync(join(tmpdir(), `physalia-${name}-`));
  const topology = await localTopology(1, 1, name);
  const server = topology.servers[0];
  if (server === undefined) throw new Error("no server in the topology");
  const keyFile = join(dir, "colony.key");
  ensureKeyFile(keyFile);
  const file = join(dir, "server.json");
  const full: ServerConfig = { server: server.id, data: join(dir, server.id), keyFile, topology, ...config };
  writeFileSync(file, JSON.stringify(full));
  const child: ChildProcess = spawn(process.execPath, serverProcessArgs(file), {
    cwd: root,
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, PHYSALIA_COLONY_KEY: "" },
  });
  let log = "";
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (text: string) => {
    log = (log + text).slice(-1024 * 1024);
  });
  const admin = `http://${server.host}:${server.adminPort}`;
  const scrape = async (): Promise<string> => {
    try {
      return await (await fetch(`${admin}/metrics`, { signal: AbortSignal.timeout(2000) })).text();
    } catch {
      return "";
    }
  };
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      process.kill(child.pid as number, "SIGKILL");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  for (let attempt = 0; attempt < 200 && (await scrape()) === ""; attempt++) await sleep(100);
  return { topology, colonyKey: loadColonyKey(keyFile, {}), scrape, log: () => log, stop };
}
