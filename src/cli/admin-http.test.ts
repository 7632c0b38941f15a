import { once } from "node:events";
import type { Server } from "node:http";
import { connect, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { type AdminHttpStats, adminHttpServer, readJsonBody, reply, requestTarget } from "./admin-http.ts";

let open: { server: Server; sockets: Socket[] } | null = null;

afterEach(async () => {
  if (open === null) return;
  for (const socket of open.sockets) socket.destroy();
  open.server.closeAllConnections();
  await new Promise<void>((resolve) => open?.server.close(() => resolve()));
  open = null;
});

async function serve(
  options: Partial<Parameters<typeof adminHttpServer>[0]> = {},
): Promise<{ port: number; stats: AdminHttpStats; logged: string[] }> {
  const logged: string[] = [];
  const { server, stats } = adminHttpServer({
    connectionsMax: 4,
    logError: (message, fields) => logged.push(`${message} ${JSON.stringify(fields)}`),
    handle: async (request, response, url) => {
      if (url.pathname === "/healthz") return reply(response, 200, { status: "ok" });
      if (url.pathname === "/echo") return reply(response, 200, await readJsonBody(request, 1024));
      if (url.pathname === "/throw") throw new Error("planted failure");
      reply(response, 404, { error: `no ${url.pathname}` });
    },
    ...options,
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  open = { server, sockets: [] };
  return { port: (server.address() as { port: number }).port, stats, logged };
}

/** Sends `text` as it is and returns everything the server answers before it closes or 2 s pass. */
async function raw(port: number, text: string): Promise<string> {
  const socket = connect(port, "127.0.0.1");
  open?.sockets.push(socket);
  await once(socket, "connect");
  socket.write(text);
  const chunks: Buffer[] = [];
  socket.on("data", (chunk: Buffer) => chunks.push(chunk));
  await Promise.race([once(socket, "close"), new Promise((resolve) => setTimeout(resolve, 2000))]);
  return Buffer.concat(chunks).toString("utf8");
}

async function idleConnection(port: number): Promise<Socket> {
  const socket = connect(port, "127.0.0.1");
  open?.sockets.push(socket);
  socket.on("error", () => {});
  await once(socket, "connect");
  return socket;
}

/**
 * POSTs `body` over a raw socket, reading nothing until all of it is written, as a client blocked
 * on sending a large body does: an answer followed by a reset would be lost in its receive queue.
 */
async function post(
  port: number,
  path: string,
  body: Buffer,
  chunked: boolean,
): Promise<{ status: number; text: string }> {
  const socket = connect(port, "127.0.0.1");
  open?.sockets.push(socket);
  socket.on("error", () => {});
  await once(socket, "connect");
  socket.pause();
  const framing = chunked ? "transfer-encoding: chunked" : `content-length: ${body.length}`;
  socket.write(`POST ${path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n${framing}\r\n\r\n`);
  const payload = chunked
    ? Buffer.concat([Buffer.from(`${body.length.toString(16)}\r\n`), body, Buffer.from("\r\n0\r\n\r\n")])
    : body;
  await new Promise<void>((resolve) => socket.write(payload, () => resolve()));
  const chunks: Buffer[] = [];
  socket.on("data", (chunk: Buffer) => chunks.push(chunk));
  socket.resume();
  await Promise.race([once(socket, "close"), new Promise((resolve) => setTimeout(resolve, 3000))]);
  const text = Buffer.concat(chunks).toString("utf8");
  const status = Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1] ?? 0);
  return { status, text: text.slice(text.indexOf("\r\n\r\n") + 4) };
}

describe("the admin port's HTTP plumbing", () => {
  it("parses only origin-form targets", () => {
    expect(requestTarget("/healthz?x=1")?.pathname).toBe("/healthz");
    expect(requestTarget("/:99999/")?.pathname).toBe("/:99999/");
    expect(requestTarget("//evil/healthz")).toBeNull();
    expect(requestTarget("//:99999/")).toBeNull();
    expect(requestTarget("http://host/healthz")).toBeNull();
    expect(requestTarget("*")).toBeNull();
    expect(requestTarget(undefined)).toBeNull();
  });

  it("lets a new connection in when every place is held by idle ones, closing the longest idle", async () => {
    const { port, stats } = await serve();
    const idle = [];
    for (let i = 0; i < 6; i++) idle.push(await idleConnection(port));
    // The two over the bound each displaced the longest idle: the first two.
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(idle.map((socket) => socket.destroyed || socket.readableEnded)).toEqual([
      true,
      true,
      false,
      false,
      false,
      false,
    ]);
    for (let i = 0; i < 3; i++) {
      const answer = await fetch(`http://127.0.0.1:${port}/healthz`);
      expect(answer.status).toBe(200);
    }
    expect(stats.connectionsDisplaced).toBeGreaterThanOrEqual(3);
  });

  it("answers a malformed or host-naming target 400 without running the handler", async () => {
    const { port, logged } = await serve();
    for (const target of ["//:99999/", "//evil/healthz"]) {
      const answer = await raw(port, `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      expect(answer).toMatch(/^HTTP\/1\.1 400 /);
      expect(answer).toContain("is not a path; try /healthz");
    }
    expect(logged).toEqual([]);
  });

  it("logs failures of the handler at a bounded rate, answering each 500", async () => {
    const { port, stats, logged } = await serve({ errorsPerSecondMax: 3 });
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => fetch(`http://127.0.0.1:${port}/throw`).then((r) => r.status)),
    );
    expect(answers).toEqual(Array(20).fill(500));
    expect(logged.length).toBe(3);
    expect(logged[0]).toContain("planted failure");
    expect(stats.errorsNotLogged).toBe(17);
  });

  it("answers a body over the bound 413, declared or streamed, and reads one within it", async () => {
    const { port } = await serve();
    const big = Buffer.alloc(2_000_000, 0x20);
    for (const chunked of [false, true]) {
      const answer = await post(port, "/echo", big, chunked);
      expect(answer.status).toBe(413);
      expect(JSON.parse(answer.text).error).toMatch(/at most 1024 are taken/);
    }
    const small = await post(port, "/echo", Buffer.from('{"a":1}'), false);
    expect(small).toEqual({ status: 200, text: '{"a":1}\n' });
    const notJson = await post(port, "/echo", Buffer.from("{"), true);
    expect(notJson.status).toBe(400);
  });
});
