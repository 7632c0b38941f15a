/**
 * Restart of a server hosting many nodes: kill -9, start again, and time until it answers
 * /healthz and until it answers a client's linearizable read of one of its cells.
 *
 * The colony is one server with cells of one node (topology cellSize 1): the read can then only
 * be answered by the restarted server, after it has loaded the cell from its storage.
 */
import { PhysaliaClient, type Value } from "../../src/index.ts";
import { type BenchmarkReport, type Children, type Options, progress, round, sleep } from "./common.ts";
import { BenchColony, cellKeys } from "./physalia-colony.ts";

export async function restartBenchmark(children: Children, options: Options): Promise<BenchmarkReport> {
  const nodes = options.integer("nodes", 1_000_000);
  options.finish();
  const colony = await BenchColony.create(children, children.tempDir("physalia-bench-restart-"), 1, 1);
  let client: PhysaliaClient | null = null;
  try {
    progress("starting one Physalia server process (cells of one node)");
    await colony.startAll();
    progress(`creating ${nodes} cells on it`);
    const loadStarted = performance.now();
    const keys = cellKeys(nodes, "restart");
    const chunk = 50_000;
    for (let i = 0; i < keys.length; i += chunk) {
      await colony.createCells(keys.slice(i, i + chunk));
      if (i > 0 && (i / chunk) % 4 === 0) progress(`  ${i + chunk} created`);
    }
    const creationSeconds = (performance.now() - loadStarted) / 1000;
    client = await PhysaliaClient.connect({ colony: colony.connectionFile, requestTimeoutMs: 1000 });
    // Two cells: one written before the kill (its value must be read back), one never touched.
    const written = keys[Math.floor(keys.length / 2)] as string;
    const untouched = keys[keys.length - 1] as string;
    const value = new TextEncoder().encode(`written before kill -9 at ${Date.now()}`);
    await client.cell(written).put("probe", value);
    const hosted = (await colony.status("s1")).hostedNodes;
    await sleep(1000);

    progress(`kill -9 of the server hosting ${hosted} nodes, then restart`);
    await colony.kill("s1");
    const restarted = performance.now();
    colony.start("s1");
    const healthzMs = await colony.healthy("s1", 60_000);
    const c = client;
    const readWithin = async (cellKey: string): Promise<{ ms: number; value: Value | null }> => {
      for (;;) {
        try {
          const result = await c.cell(cellKey).get("probe");
          return { ms: performance.now() - restarted, value: result };
        } catch {
          if (performance.now() - restarted > 60_000) throw new Error(`no read of ${cellKey} within 60 s`);
          await sleep(5);
        }
      }
    };
    const first = await readWithin(written);
    const second = await readWithin(untouched);
    const durable = first.value instanceof Uint8Array && Buffer.from(first.value).equals(Buffer.from(value));
    const status = await colony.status("s1");
    const results = {
      servers: 1,
      cellSize: 1,
      hostedNodes: hosted,
      hostedAfterRestart: status.hostedNodes,
      creationSeconds: round(creationSeconds, 1),
      healthzMs: Math.round(healthzMs),
      firstReadMs: Math.round(first.ms),
      untouchedCellReadMs: Math.round(second.ms),
      writeBeforeKillReadBack: durable,
      residentAfterReads: status.residentNodes,
    };
    return {
      results,
      targets: {
        healthz: {
          target: "answers /healthz within 10 s",
          measured: results.healthzMs,
          met: healthzMs <= 10_000,
        },
        read: {
          target: "answers a client read of one of its cells within 10 s",
          measured: results.firstReadMs,
          met: first.ms <= 10_000,
        },
      },
      lines: [
        `one server, cells of one node: ${hosted.toLocaleString("en-US")} nodes hosted (created in ${results.creationSeconds} s)`,
        `after kill -9 and restart (times from the new process's start): /healthz in ${results.healthzMs} ms, ` +
          `a read of a cell written before the kill in ${results.firstReadMs} ms (value ${durable ? "read back" : "NOT read back"}), ` +
          `a read of a never-used cell in ${results.untouchedCellReadMs} ms; ${status.residentNodes} nodes resident after the reads`,
      ],
    };
  } finally {
    await client?.close();
    await colony.stopAll();
  }
}
