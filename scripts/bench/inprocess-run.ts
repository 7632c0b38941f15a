/**
 * The `inprocess` benchmark's process (started by scripts/bench/inprocess.ts with the server's
 * Node.js flags): 7 servers on real lmdb, journals and TCP on loopback, and closed-loop writers
 * through the SDK, all in this one process. It prints one JSON line: what completed in the
 * measured window and the process's CPU for it.
 *
 *   node <server flags> --import tsx scripts/bench/inprocess-run.ts '<InprocessRunOptions as JSON>'
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import { PerformanceObserver } from "node:perf_hooks";
import { ensureKeyFile, loadColonyKey, writeConnectionFile } from "../../src/cli/colony.ts";
import { jsonLogger } from "../../src/cli/log.ts";
import { type RunningServer, startServer } from "../../src/cli/server-process.ts";
import { PhysaliaClient } from "../../src/index.ts";
import { createCells, localTopology } from "../../test/support/colony.ts";

export interface InprocessRunOptions {
  readonly dir: string;
  readonly cells: number;
  readonly clients: number;
  readonly connections: number;
  readonly warmupSeconds: number;
  readonly seconds: number;
}

export interface InprocessRunResult {
  readonly completed: number;
  readonly errors: number;
  readonly windowMs: number;
  readonly userUs: number;
  readonly systemUs: number;
  /** Time in garbage collection pauses of the main thread during the window. */
  readonly gcMs: number;
}

const options = JSON.parse(process.argv[2] as string) as InprocessRunOptions;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const topology = await localTopology(7);
const keyFile = join(options.dir, "colony.key");
ensureKeyFile(keyFile);
const colonyKey = loadColonyKey(keyFile, {});
const servers: RunningServer[] = [];
const quiet = jsonLogger({}, { write: () => {} });
try {
  for (const server of topology.servers) {
    servers.push(
      await startServer({
        config: { server: server.id, data: join(options.dir, server.id), keyFile, topology },
        colonyKeys: { signing: colonyKey, alsoAccepted: [] },
        logger: quiet,
      }),
    );
  }
  const keys = Array.from({ length: options.cells }, (_, i) => `bench-${i}`);
  await createCells(topology, colonyKey, keys);
  const colonyFile = join(options.dir, "colony.json");
  writeConnectionFile(colonyFile, {
    colony: topology.colony,
    cellSize: 7,
    keyFile: "colony.key",
    servers: topology.servers,
  });
  const connections = await Promise.all(
    Array.from({ length: options.connections }, () => PhysaliaClient.connect({ colony: colonyFile })),
  );
  const value = new Uint8Array(16).fill(0x61);
  let running = true;
  let measuring = false;
  let completed = 0;
  let errors = 0;
  const writer = async (i: number): Promise<void> => {
    const client = connections[i % connections.length] as PhysaliaClient;
    let seed = (i * 104_729 + 1) >>> 0;
    for (let n = 1; running; n++) {
      seed = (Math.imul(seed, 1_103_515_245) + 12_345) >>> 0;
      try {
        await client.cell(keys[seed % keys.length] as string).put(`k${n & 3}`, value);
        if (measuring) completed += 1;
      } catch {
        if (measuring) errors += 1;
        await sleep(10);
      }
    }
  };
  const writers = Array.from({ length: options.clients }, (_, i) => writer(i));
  await sleep(options.warmupSeconds * 1000);

  let gcMs = 0;
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) gcMs += entry.duration;
  });
  observer.observe({ entryTypes: ["gc"] });
  measuring = true;
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  await sleep(options.seconds * 1000);
  const cpu = process.cpuUsage(cpuBefore);
  const windowMs = performance.now() - started;
  measuring = false;
  observer.disconnect();
  running = false;
  await Promise.allSettled(writers);
  await Promise.all(connections.map((c) => c.close()));
  const result: InprocessRunResult = {
    completed,
    errors,
    windowMs,
    userUs: cpu.user,
    systemUs: cpu.system,
    gcMs,
  };
  console.log(JSON.stringify(result));
} finally {
  for (const server of servers) await server.close();
  rmSync(options.dir, { recursive: true, force: true });
}
process.exit(0);
