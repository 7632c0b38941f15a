/**
 * A scrape of /metrics reads what the server has; it never makes the storage catch up with its
 * pending changes first (a checkpoint on the event loop, for seconds during a burst of new cells).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ensureKeyFile, loadColonyKey, type ServerConfig } from "../src/cli/colony.ts";
import { createCells, localTopology, serverProcessArgs } from "./support/colony.ts";

const root = join(import.meta.dirname, "..");
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function metric(text: string, name: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.slice(name.length + 1));
}

describe("a scrape of a server's /metrics", () => {
  const dir = mkdtempSync(join(tmpdir(), "physalia-scrape-"));
  let child: ChildProcess | null = null;

  afterAll(async () => {
    if (child !== null && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child?.once("exit", resolve));
      process.kill(child.pid as number, "SIGKILL");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it("leaves the storage's pending changes to their checkpoint", async () => {
    const topology = await localTopology(1, 1, "scrape");
    const server = topology.servers[0];
    if (server === undefined) throw new Error("no server in the topology");
    const keyFile = join(dir, "colony.key");
    ensureKeyFile(keyFile);
    const config: ServerConfig = { server: server.id, data: join(dir, server.id), keyFile, topology };
    const file = join(dir, "server.json");
    writeFileSync(file, JSON.stringify(config));
    child = spawn(process.execPath, serverProcessArgs(file), {
      cwd: root,
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, PHYSALIA_COLONY_KEY: "" },
    });
    child.stderr?.resume();
    const admin = `http://${server.host}:${server.adminPort}`;
    const scrape = async (): Promise<string> => {
      try {
        return await (await fetch(`${admin}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
      } catch {
        return "";
      }
    };
    for (let attempt = 0; attempt < 200 && (await scrape()) === ""; attempt++) await sleep(100);

    // New cells' founding nodes wait in the journal for a checkpoint (every 2 s by default). Had a
    // scrape made lmdb catch up, the next one would find nothing pending. A checkpoint of its own
    // may fall between two scrapes now and then, so this is tried a few times.
    const key = loadColonyKey(keyFile, {});
    const pendingAfterTwoScrapes: number[] = [];
    for (let attempt = 0; attempt < 3; attempt++) {
      const cells = Array.from({ length: 50 }, (_, i) => `scrape-${attempt}-${i}`);
      await createCells(topology, key, cells);
      const first = await scrape();
      const second = await scrape();
      expect(metric(first, "physalia_storage_pending_cells")).toBeGreaterThan(0);
      pendingAfterTwoScrapes.push(metric(second, "physalia_storage_pending_cells"));
      // The hosted count is there, as of the last checkpoint.
      expect(metric(second, "physalia_hosted_nodes")).toBeGreaterThanOrEqual(0);
      await sleep(2500);
    }
    expect(Math.max(...pendingAfterTwoScrapes)).toBeGreaterThan(0);
  }, 60_000);
});
