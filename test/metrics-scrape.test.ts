/**
 * A scrape of /metrics reads what the server has; it never makes the storage catch up with its
 * pending changes first (a checkpoint on the event loop, for seconds during a burst of new cells).
 */
import { createConnection } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { encodeFrame, encodeHello, frameKey, linkKey } from "../src/transport/index.ts";
import { createCells } from "./support/colony.ts";
import { metric, type OneServer, sleep, startOneServer } from "./support/one-server.ts";

describe("a scrape of a server's /metrics", () => {
  let server: OneServer | null = null;

  afterAll(async () => {
    await server?.stop();
  });

  it("leaves the storage's pending changes to their checkpoint", async () => {
    server = await startOneServer("scrape");
    const { scrape } = server;
    // New cells' founding nodes wait in the journal for a checkpoint (every 2 s by default). Had a
    // scrape made lmdb catch up, the next one would find nothing pending. A checkpoint of its own
    // may fall between two scrapes now and then, so this is tried a few times.
    const pendingAfterTwoScrapes: number[] = [];
    for (let attempt = 0; attempt < 3; attempt++) {
      const cells = Array.from({ length: 50 }, (_, i) => `scrape-${attempt}-${i}`);
      await createCells(server.topology, server.colonyKey, cells);
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

  it("counts and logs messages from a peer with the servers' key that it cannot decode", async () => {
    server ??= await startOneServer("scrape");
    const { topology, colonyKey } = server;
    const target = topology.servers[0] as { host: string; port: number };
    const key = frameKey(linkKey(colonyKey, "servers"));
    const socket = createConnection({ host: target.host, port: target.port });
    await new Promise((resolve) => socket.once("connect", resolve));
    try {
      socket.write(encodeHello(key, "127.0.0.1:1"));
      for (let sequence = 1; sequence <= 3; sequence++) {
        socket.write(
          encodeFrame(key, { sender: "127.0.0.1:1", sequence, messages: [new Uint8Array([0xff])] }),
        );
      }
      const series = 'physalia_transport_messages_dropped_total{reason="undecodable-message"}';
      let dropped = Number.NaN;
      for (let attempt = 0; attempt < 50 && dropped !== 3; attempt++) {
        await sleep(100);
        dropped = metric(await server.scrape(), series);
      }
      expect(dropped).toBe(3);
      expect(server.log()).toMatch(/"msg":"undecodable message dropped".*"remote":"127\.0\.0\.1:1"/);
    } finally {
      socket.destroy();
    }
  }, 30_000);

  it("names a sender before its hello by its socket address, and counts the warnings past the rate bound", async () => {
    server ??= await startOneServer("scrape");
    const target = server.topology.servers[0] as { host: string; port: number };
    // Connections that send a length prefix beyond any frame: each is a warning, and closed.
    const sockets = await Promise.all(
      Array.from({ length: 40 }, async () => {
        const socket = createConnection({ host: target.host, port: target.port });
        await new Promise((resolve) => socket.once("connect", resolve));
        socket.on("error", () => {});
        socket.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
        return socket;
      }),
    );
    try {
      let suppressed = 0;
      for (let attempt = 0; attempt < 50 && suppressed === 0; attempt++) {
        await sleep(100);
        suppressed = metric(await server.scrape(), "physalia_transport_warnings_suppressed_total");
      }
      // At most 20 warnings a second are logged; the rest of the 40 are counted.
      expect(suppressed).toBeGreaterThan(0);
      expect(server.log()).toMatch(/"remote":"127\.0\.0\.1:\d+ \(before its hello\)"/);
    } finally {
      for (const socket of sockets) socket.destroy();
    }
  }, 30_000);

  it("gives the free space of the file system holding the data directory", async () => {
    server ??= await startOneServer("scrape");
    const free = metric(await server.scrape(), "physalia_storage_free_bytes");
    expect(free).toBeGreaterThan(0);
    expect(Number.isSafeInteger(free)).toBe(true);
  }, 60_000);
});
