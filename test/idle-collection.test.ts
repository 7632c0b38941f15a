/**
 * A real server process, started with the server's Node flags, gives back the memory of evicted
 * nodes once it is quiet: the idle collection runs, and /metrics says so.
 */
import { afterAll, describe, expect, it } from "vitest";
import { createCells } from "./support/colony.ts";
import { metric, type OneServer, sleep, startOneServer } from "./support/one-server.ts";

describe("a quiet server process", () => {
  let server: OneServer | null = null;

  afterAll(async () => {
    await server?.stop();
  });

  it("collects the evicted nodes' garbage once quiet, and reports it", async () => {
    server = await startOneServer("idle-gc", { residentIdleSeconds: 1 });
    const { scrape } = server;
    expect(metric(await scrape(), "physalia_idle_collections_total")).toBe(0);

    const cells = Array.from({ length: 12_000 }, (_, i) => `idle-gc-${i}`);
    await createCells(server.topology, server.colonyKey, cells);

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
