/**
 * A real server process, started with the server's Node flags, gives back the memory of evicted
 * nodes once it is quiet: the idle collection runs, and /metrics says so.
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

describe("a quiet server process", () => {
  const dir = mkdtempSync(join(tmpdir(), "physalia-idle-gc-"));
  let child: ChildProcess | null = null;

  afterAll(async () => {
    if (child !== null && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child?.once("exit", resolve));
      process.kill(child.pid as number, "SIGKILL");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it("collects the evicted nodes' garbage once quiet, and reports it", async () => {
    const topology = await localTopology(1, 1, "idle-gc");
    const server = topology.servers[0];
    if (server === undefined) throw new Error("no server in the topology");
    const keyFile = join(dir, "colony.key");
    ensureKeyFile(keyFile);
    const config: ServerConfig = {
      server: server.id,
      data: join(dir, server.id),
      keyFile,
      residentIdleSeconds: 1,
      topology,
    };
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
        return await (await fetch(`${admin}/metrics`, { signal: AbortSignal.timeout(2000) })).text();
      } catch {
        return "";
      }
    };
    for (let attempt = 0; attempt < 200 && (await scrape()) === ""; attempt++) await sleep(100);
    expect(metric(await scrape(), "physalia_idle_collections_total")).toBe(0);

    const cells = Array.from({ length: 12_000 }, (_, i) => `idle-gc-${i}`);
    await createCells(topology, loadColonyKey(keyFile, {}), cells);

    // Evicted a second after creation (residentIdleSeconds: 1), then 5 s quiet before collecting.
    let text = "";
    for (let attempt = 0; attempt < 60; attempt++) {
      text = await scrape();
      if (metric(text, "physalia_idle_collections_total") >= 1) break;
      await sleep(500);
    }
    expect(metric(text, "physalia_nodes_evicted_total")).toBeGreaterThanOrEqual(10_000);
    expect(metric(text, "physalia_resident_nodes")).toBe(0);
    expect(metric(text, "physalia_idle_collections_total")).toBeGreaterThanOrEqual(1);
    // The pauses of the collection are reported a moment after it ends.
    let pause = 0;
    for (let attempt = 0; attempt < 20 && pause === 0; attempt++) {
      await sleep(250);
      pause = metric(await scrape(), "physalia_idle_collection_longest_pause_seconds");
    }
    expect(pause).toBeGreaterThan(0);
    expect(metric(await scrape(), "physalia_idle_collection_last_seconds")).toBeGreaterThan(0);
  }, 60_000);
});
