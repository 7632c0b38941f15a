import { randomBytes } from "node:crypto";
import { connect, createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { encodeFrame, encodeHello, frameKey, linkKey } from "./frame.ts";
import { transportLimits } from "./limits.ts";
import {
  isClientAddress,
  listenAdvice,
  type MessageCodec,
  TcpTransport,
  type TcpTransportOptions,
} from "./tcp.ts";

interface Note {
  readonly n: number;
  readonly from?: string;
}

const colonyKey = randomBytes(32);
const host = "127.0.0.1";

const noteCodec: MessageCodec<Note> = {
  encode: (note) => Buffer.from(JSON.stringify(note)),
  decode: (bytes) => JSON.parse(Buffer.from(bytes).toString("utf8")) as Note,
};

const bytesCodec: MessageCodec<Uint8Array> = { encode: (m) => m, decode: (b) => b };

const transports: TcpTransport<unknown>[] = [];
const sockets: Socket[] = [];
const servers: Server[] = [];

afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  await Promise.all(transports.splice(0).map((t) => t.close()));
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
});

function track<M>(transport: TcpTransport<M>): TcpTransport<M> {
  transports.push(transport as TcpTransport<unknown>);
  return transport;
}

async function server<M = Note>(
  options: Partial<TcpTransportOptions<M>> = {},
  port = 0,
): Promise<TcpTransport<M>> {
  const transport = track(
    new TcpTransport<M>({
      listen: { host, port },
      colonyKey,
      codec: noteCodec as unknown as MessageCodec<M>,
      ...options,
    }),
  );
  await transport.start();
  return transport;
}

async function client(localAddress?: string): Promise<TcpTransport<Note>> {
  const transport = track(
    new TcpTransport<Note>({
      colonyKey,
      codec: noteCodec,
      ...(localAddress !== undefined ? { localAddress } : {}),
    }),
  );
  await transport.start();
  return transport;
}

function inbox<M>(transport: TcpTransport<M>): { from: string; message: M }[] {
  const received: { from: string; message: M }[] = [];
  transport.onMessage((from, message) => received.push({ from, message }));
  return received;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Poll until `condition` holds; fail with `what` after `timeoutMs`. */
async function waitFor(condition: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadlineMs = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadlineMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

function rawConnect(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port }, () => resolve(socket));
    socket.on("error", reject);
    // Read (and ignore) what the server sends, so its closing is seen.
    socket.resume();
    sockets.push(socket);
  });
}

function closedSignal(socket: Socket): () => boolean {
  let closed = false;
  socket.on("close", () => {
    closed = true;
  });
  socket.on("error", () => {});
  return () => closed;
}

/** A peer that says hello and then never reads; `socket()` is its end of the connection, once made. */
async function stalledPeer(): Promise<{ target: string; socket: () => Socket | null }> {
  const key = frameKey(linkKey(colonyKey, "servers"));
  let accepted: Socket | null = null;
  const stalled = createServer((socket) => {
    accepted = socket;
    socket.pause();
    socket.on("error", () => {});
    sockets.push(socket);
    const address = stalled.address();
    if (address !== null && typeof address === "object")
      socket.write(encodeHello(key, `${host}:${address.port}`));
  });
  servers.push(stalled);
  await new Promise<void>((resolve) => stalled.listen(0, host, resolve));
  const address = stalled.address();
  if (address === null || typeof address !== "object") throw new Error("no address");
  return { target: `${host}:${address.port}`, socket: () => accepted };
}

function portOf(transport: { readonly address: string }): number {
  return Number(transport.address.split(":")[1]);
}

describe("TcpTransport", () => {
  it("exposes the bound address after start, and refuses a short colony key", async () => {
    const a = await server();
    expect(a.address).toMatch(/^127\.0\.0\.1:[0-9]+$/);
    expect(portOf(a)).toBeGreaterThan(0);
    expect(() => new TcpTransport({ colonyKey: Buffer.alloc(16), codec: noteCodec })).toThrow(
      /colony key is 16 bytes; it must be at least 32/,
    );
  });

  it("fails to start with the address in the message when the port is taken", async () => {
    const a = await server();
    const b = track(
      new TcpTransport<Note>({ listen: { host, port: portOf(a) }, colonyKey, codec: noteCodec }),
    );
    await expect(b.start()).rejects.toThrow(`cannot listen on ${a.address}`);
    await expect(b.start()).rejects.toThrow(/another process listens there .*other ports in the topology/);
  });

  it("says what to do about a port it cannot bind, for each reason it knows", () => {
    expect(listenAdvice({ code: "EADDRINUSE" })).toMatch(/another process listens there/);
    expect(listenAdvice({ code: "EACCES" })).toMatch(/ports below 1024 need privileges/);
    expect(listenAdvice({ code: "EADDRNOTAVAIL" })).toMatch(/check the server's host/);
    expect(listenAdvice({ code: "EMFILE" })).toBe("");
    expect(listenAdvice(null)).toBe("");
  });

  it("closes cleanly when closed while starting", async () => {
    const a = track(new TcpTransport<Note>({ listen: { host, port: 0 }, colonyKey, codec: noteCodec }));
    const starting = a.start();
    await a.close();
    await starting;
    a.send("127.0.0.1:1", { n: 1 });
    expect(a.stats().messagesDropped.closed).toBe(1);
  });

  it("counts send before start and after close as dropped, without throwing", async () => {
    const a = track(new TcpTransport<Note>({ listen: { host, port: 0 }, colonyKey, codec: noteCodec }));
    a.send("127.0.0.1:1", { n: 1 });
    a.flush();
    await a.start();
    await a.close();
    a.send("127.0.0.1:1", { n: 2 });
    a.flush();
    expect(a.stats().messagesDropped.closed).toBe(2);
    expect(a.stats().connectionsOpen).toBe(0);
  });

  it("exchanges many messages both ways in batches", async () => {
    const a = await server();
    const b = await server();
    const atA = inbox(a);
    const atB = inbox(b);
    const turns = 20;
    const perTurn = 100;
    for (let turn = 0; turn < turns; turn++) {
      for (let i = 0; i < perTurn; i++) {
        a.send(b.address, { n: turn * perTurn + i });
        b.send(a.address, { n: turn * perTurn + i });
      }
      a.flush();
      b.flush();
      await sleep(1);
    }
    const total = turns * perTurn;
    await waitFor(() => atA.length === total && atB.length === total, "every message");
    const expected = Array.from({ length: total }, (_, i) => i);
    expect(atB.map((r) => r.message.n).sort((x, y) => x - y)).toEqual(expected);
    expect(atA.map((r) => r.message.n).sort((x, y) => x - y)).toEqual(expected);
    expect(atB.every((r) => r.from === a.address)).toBe(true);
    expect(atA.every((r) => r.from === b.address)).toBe(true);
    expect(a.stats().messagesSent).toBe(total);
    expect(b.stats().messagesReceived).toBe(total);
  });

  it("dials its peers from the address it listens on (a client from the one it is given), or lets the kernel choose", async () => {
    // A plain listener on a second loopback address records where each connection comes from.
    const remotes: string[] = [];
    const listener = createServer((socket) => {
      remotes.push(socket.remoteAddress ?? "");
      sockets.push(socket);
    });
    servers.push(listener);
    await new Promise<void>((resolve) => listener.listen(0, "127.0.0.12", resolve));
    const port = (listener.address() as { port: number }).port;
    const specific = await server({ listen: { host: "127.0.0.11", port: 0 } });
    specific.send(`127.0.0.12:${port}`, { n: 1 });
    specific.flush();
    await waitFor(() => remotes.length === 1, "the dial from 127.0.0.11");
    const wildcard = await server({ listen: { host: "0.0.0.0", port: 0, advertiseHost: host } });
    wildcard.send(`127.0.0.12:${port}`, { n: 2 });
    wildcard.flush();
    await waitFor(() => remotes.length === 2, "the dial from the wildcard listener");
    expect(remotes).toEqual(["127.0.0.11", "127.0.0.1"]);
    // A client dials from the address it is given, if any.
    const placed = await client("127.0.0.13");
    placed.send(`127.0.0.12:${port}`, { n: 3 });
    placed.flush();
    await waitFor(() => remotes.length === 3, "the dial from the client's address");
    expect(remotes[2]).toBe("127.0.0.13");
    expect(() => new TcpTransport<Note>({ colonyKey, codec: noteCodec, localAddress: "localhost" })).toThrow(
      /localAddress must be an IP address/,
    );
  });

  it("sends the messages of one turn to one destination in one frame", async () => {
    const a = await server();
    const b = await server();
    const atB = inbox(b);
    a.send(b.address, { n: -1 });
    a.flush();
    await waitFor(() => atB.length === 1, "the first message");
    const sentBefore = a.stats().framesSent;
    const receivedBefore = b.stats().framesReceived;
    for (let i = 0; i < 1000; i++) a.send(b.address, { n: i });
    a.flush();
    await waitFor(() => atB.length === 1001, "the turn's messages");
    expect(a.stats().framesSent - sentBefore).toBe(1);
    expect(b.stats().framesReceived - receivedBefore).toBe(1);
    expect(atB.slice(1).map((r) => r.message.n)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
  });

  it("splits a turn larger than the frame bound into a few frames", async () => {
    const limits = { frameBytesMax: 40_000, messageBytesMax: 16_384, peerQueueBytesMax: 1_000_000 };
    const a = await server<Uint8Array>({ codec: bytesCodec, limits });
    const b = await server<Uint8Array>({ codec: bytesCodec, limits });
    const atB = inbox(b);
    a.send(b.address, new Uint8Array([1]));
    a.flush();
    await waitFor(() => atB.length === 1, "the first message");
    const sentBefore = a.stats().framesSent;
    for (let i = 0; i < 10; i++) a.send(b.address, new Uint8Array(10_000).fill(i));
    a.send(b.address, new Uint8Array(20_000)); // over messageBytesMax: dropped and counted
    a.flush();
    await waitFor(() => atB.length === 11, "the turn's messages");
    // Three 10 kB messages fit under 40 kB per frame: 10 messages take 4 frames.
    expect(a.stats().framesSent - sentBefore).toBe(4);
    expect(a.stats().messagesDropped.oversized).toBe(1);
    expect(atB.slice(1).map((r) => r.message[0])).toEqual(Array.from({ length: 10 }, (_, i) => i));
  });

  it("stops reading for the rest of a turn once the turn's bytes reach their bound, and loses nothing", async () => {
    const bounds = {
      messageBytesMax: 32 * 1024,
      frameBytesMax: 128 * 1024,
      peerQueueBytesMax: 64 * 1024 * 1024,
      turnReceiveBytesMax: 256 * 1024,
    };
    const a = await server<Uint8Array>({ codec: bytesCodec, limits: bounds });
    const senders = [
      await server<Uint8Array>({ codec: bytesCodec, limits: bounds }),
      await server<Uint8Array>({ codec: bytesCodec, limits: bounds }),
    ];
    // What each turn of a's event loop delivers: a turn ends with the immediates queued in it.
    const turns: number[] = [];
    let turn: { bytes: number } | null = null;
    let delivered = 0;
    a.onMessage((_from, message) => {
      if (turn === null) {
        const current = { bytes: 0 };
        turn = current;
        setImmediate(() => {
          turns.push(current.bytes);
          turn = null;
        });
      }
      turn.bytes += message.length;
      delivered += 1;
    });
    for (const sender of senders) {
      sender.send(a.address, new Uint8Array(1));
      sender.flush();
    }
    await waitFor(() => delivered === senders.length, "the first messages");
    // 8 MiB from each sender, all at once: far more than the bound in every turn.
    const perSender = 256;
    for (let i = 0; i < perSender; i++) {
      for (const sender of senders) sender.send(a.address, new Uint8Array(30 * 1024).fill(i));
    }
    for (const sender of senders) sender.flush();
    const expected = senders.length * (perSender + 1);
    await waitFor(() => delivered === expected, "every message to arrive");
    await sleep(5);
    const stats = a.stats();
    expect(stats.readsPaused).toBeGreaterThan(0);
    expect(stats.messagesDropped).toEqual(
      Object.fromEntries(Object.keys(stats.messagesDropped).map((reason) => [reason, 0])),
    );
    // A turn delivers what it read (at most the bound and one read of each connection) and the
    // frames that reads of earlier turns began.
    const readMax = 64 * 1024;
    const turnMax = bounds.turnReceiveBytesMax + senders.length * (readMax + bounds.frameBytesMax);
    expect(Math.max(...turns)).toBeLessThanOrEqual(turnMax);
  });

  it("lays out messages a codec writes exactly as messages it encodes, bounds included", async () => {
    // A codec with `write` has its messages written into the frame being built, not encoded one
    // by one: the frames must split at the same bounds and carry the same bytes.
    const limits = { frameBytesMax: 40_000, messageBytesMax: 16_384, peerQueueBytesMax: 1_000_000 };
    const writing: MessageCodec<Uint8Array> = {
      encode: (m) => m,
      decode: (b) => b.slice(),
      write: (writer, m) => {
        if (m.length === 3) throw new RangeError("three bytes cannot be encoded");
        writer.raw(m);
      },
    };
    const a = await server<Uint8Array>({ codec: writing, limits });
    const b = await server<Uint8Array>({ codec: writing, limits });
    const atB = inbox(b);
    a.send(b.address, new Uint8Array([1]));
    a.flush();
    await waitFor(() => atB.length === 1, "the first message");
    const sentBefore = a.stats().framesSent;
    for (let i = 0; i < 10; i++) {
      a.send(b.address, new Uint8Array(10_000).fill(i));
      if (i === 4) a.send(b.address, new Uint8Array(3)); // unencodable: dropped and counted
    }
    a.send(b.address, new Uint8Array(20_000)); // over messageBytesMax: dropped and counted
    a.send(b.address, new Uint8Array(0));
    a.flush();
    await waitFor(() => atB.length === 12, "the turn's messages");
    // Three 10 kB messages fit under 40 kB per frame: 10 messages take 4 frames (the empty one
    // rides in the last).
    expect(a.stats().framesSent - sentBefore).toBe(4);
    expect(a.stats().messagesDropped.oversized).toBe(1);
    expect(a.stats().messagesDropped["unencodable-message"]).toBe(1);
    const received = atB.slice(1).map((r) => r.message);
    expect(received.slice(0, 10).map((m) => [m.length, m[0], m[9_999]])).toEqual(
      Array.from({ length: 10 }, (_, i) => [10_000, i, i]),
    );
    expect(received[10]?.length).toBe(0);
    // Many small messages in one frame, as a JSON codec that writes.
    const notes: MessageCodec<Note> = {
      ...noteCodec,
      write: (writer, note) => writer.raw(noteCodec.encode(note)),
    };
    const c = await server<Note>({ codec: notes });
    const d = await server<Note>({ codec: notes });
    const atD = inbox(d);
    for (let i = 0; i < 500; i++) c.send(d.address, { n: i, from: "c".repeat(i % 7) });
    c.flush();
    await waitFor(() => atD.length === 500, "the notes");
    expect(atD.map((r) => r.message)).toEqual(
      Array.from({ length: 500 }, (_, i) => ({ n: i, from: "c".repeat(i % 7) })),
    );
  });

  it("keeps one connection when two servers dial each other at once, losing nothing", async () => {
    for (let round = 0; round < 3; round++) {
      const a = await server();
      const b = await server();
      const atA = inbox(a);
      const atB = inbox(b);
      // Both flush before either dial connects: each dials the other.
      for (let i = 0; i < 50; i++) {
        a.send(b.address, { n: i });
        b.send(a.address, { n: i });
      }
      a.flush();
      b.flush();
      await waitFor(() => atA.length === 50 && atB.length === 50, "the first messages");
      await waitFor(
        () => a.stats().connectionsOpen === 1 && b.stats().connectionsOpen === 1,
        "the duplicate connection to close",
      );
      expect(a.stats().dials).toBe(1);
      expect(b.stats().dials).toBe(1);
      expect(a.stats().connectionsRetired + b.stats().connectionsRetired).toBeGreaterThanOrEqual(1);
      // The survivor carries traffic both ways, and no new connection is made for it.
      for (let i = 50; i < 100; i++) {
        a.send(b.address, { n: i });
        b.send(a.address, { n: i });
      }
      a.flush();
      b.flush();
      await waitFor(() => atA.length === 100 && atB.length === 100, "the later messages");
      expect(atA.map((r) => r.message.n).sort((x, y) => x - y)).toEqual(
        Array.from({ length: 100 }, (_, i) => i),
      );
      expect(atB.map((r) => r.message.n).sort((x, y) => x - y)).toEqual(
        Array.from({ length: 100 }, (_, i) => i),
      );
      expect(a.stats().connectionsOpen + b.stats().connectionsOpen).toBe(2);
      await Promise.all([a.close(), b.close()]);
    }
  });

  it("reconnects after the peer restarts on the same port", async () => {
    const a = await server();
    const b = await server();
    const port = portOf(b);
    const atB = inbox(b);
    a.send(b.address, { n: 1 });
    a.flush();
    await waitFor(() => atB.length === 1, "the first message");
    const address = b.address;
    await b.close();
    await waitFor(() => a.stats().connectionsOpen === 0, "the connection to drop");

    // Sends while the peer is down: dials fail and back off.
    a.send(address, { n: 2 });
    a.flush();
    await sleep(50);
    const restarted = await server({}, port);
    expect(restarted.address).toBe(address);
    const atRestarted = inbox(restarted);
    for (let attempt = 0; attempt < 200 && atRestarted.length === 0; attempt++) {
      a.send(address, { n: 3 });
      a.flush();
      await sleep(20);
    }
    await waitFor(() => atRestarted.some((r) => r.message.n === 3), "a message to the restarted peer");
    expect(a.stats().reconnects).toBeGreaterThanOrEqual(1);
  });

  it("reports a lost peer at once, then its refusal, and redials once per loss", async () => {
    const a = await server();
    const b = await server();
    const lost: { peer: string; refused: boolean }[] = [];
    a.onPeerLost((peer, refused) => lost.push({ peer, refused }));
    const atB = inbox(b);
    a.send(b.address, { n: 1 });
    a.flush();
    await waitFor(() => atB.length === 1, "the first message");
    const address = b.address;
    const dialsBefore = a.stats().dials;
    await b.close();
    // Nothing queued for b: the loss alone makes a dial again, which nobody answers.
    await waitFor(() => lost.some((l) => l.refused), "the refusal of the redial");
    expect(lost).toEqual([
      { peer: address, refused: false },
      { peer: address, refused: true },
    ]);
    expect(a.stats().dials).toBe(dialsBefore + 1);
    // A refused dial with nothing queued is not retried.
    await sleep(100);
    expect(a.stats().dials).toBe(dialsBefore + 1);
    expect(lost.length).toBe(2);
  });

  it("does not report clients or losses after close", async () => {
    const s = await server();
    const lost: string[] = [];
    s.onPeerLost((peer) => lost.push(peer));
    const c = await client();
    const atS = inbox(s);
    c.send(s.address, { n: 1 });
    c.flush();
    await waitFor(() => atS.length === 1, "the client's message");
    await c.close();
    await waitFor(() => s.stats().connectionsOpen === 0, "the client's connection to close");
    expect(lost).toEqual([]);
  });

  it("rejects a peer with the wrong colony key and counts its frames", async () => {
    const a = await server();
    const atA = inbox(a);
    const stranger = await server({ colonyKey: randomBytes(32) });
    const atStranger = inbox(stranger);
    for (let i = 0; i < 10; i++) stranger.send(a.address, { n: i });
    stranger.flush();
    await waitFor(() => a.stats().framesDropped.unauthenticated >= 1, "the stranger's hello to be rejected");
    // The end that accepted says nothing, not even its hello, to a dialler that did not authenticate.
    await waitFor(() => stranger.stats().connectionsOpen === 0, "a to close the stranger's connection");
    expect(stranger.stats().framesDropped.unauthenticated).toBe(0);
    a.send(stranger.address, { n: 99 });
    a.flush();
    await waitFor(() => stranger.stats().framesDropped.unauthenticated >= 1, "a's hello to be rejected");
    await sleep(100);
    expect(atA).toEqual([]);
    expect(atStranger).toEqual([]);
    expect(a.stats().messagesReceived).toBe(0);
  });

  it("survives a garbage-sending peer while good traffic keeps flowing", async () => {
    const warnings: string[] = [];
    const s = await server({
      limits: { helloTimeoutMs: 300 },
      warn: (message, fields) => warnings.push(`${message} ${JSON.stringify(fields)}`),
    });
    const good = await server();
    const atS = inbox(s);
    const port = portOf(s);
    const otherKey = frameKey(randomBytes(32));
    const key = frameKey(linkKey(colonyKey, "servers"));

    let sent = 0;
    const sendGood = (count: number): void => {
      for (let i = 0; i < count; i++) good.send(s.address, { n: sent++ });
      good.flush();
    };
    sendGood(10);

    // Random bytes: rejected (too large, malformed or unauthenticated) or timed out.
    const randomPeer = await rawConnect(port);
    const randomClosed = closedSignal(randomPeer);
    randomPeer.write(randomBytes(5_000));
    // An oversized length prefix: rejected before anything is buffered, and closed.
    const hugePeer = await rawConnect(port);
    const hugeClosed = closedSignal(hugePeer);
    hugePeer.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
    // A well-formed hello with a tag from another key.
    const forger = await rawConnect(port);
    const forgerClosed = closedSignal(forger);
    forger.write(encodeHello(otherKey, "127.0.0.1:1"));
    // A valid hello, then frames naming another sender, an undecodable message and a replay.
    const impostor = await rawConnect(port);
    closedSignal(impostor);
    impostor.write(encodeHello(key, "127.0.0.1:1"));
    const foreign = new Uint8Array(Buffer.from(JSON.stringify({ n: -1 })));
    impostor.write(encodeFrame(key, { sender: "127.0.0.1:2", sequence: 1, messages: [foreign] }));
    impostor.write(
      encodeFrame(key, { sender: "127.0.0.1:1", sequence: 2, messages: [new Uint8Array([0xff])] }),
    );
    impostor.write(encodeFrame(key, { sender: "127.0.0.1:1", sequence: 2, messages: [foreign] }));
    sendGood(10);

    await waitFor(() => hugeClosed() && forgerClosed() && randomClosed(), "the hostile connections to close");
    await waitFor(
      () =>
        s.stats().framesDropped["sender-mismatch"] === 1 &&
        s.stats().framesDropped.replayed === 1 &&
        s.stats().messagesDropped["undecodable-message"] === 1,
      "the impostor's frames to be counted",
    );
    const dropped = s.stats().framesDropped;
    expect(dropped.oversized).toBeGreaterThanOrEqual(1);
    expect(dropped.unauthenticated).toBeGreaterThanOrEqual(1);
    sendGood(10);
    await waitFor(() => atS.length === 30, "the good peer's messages");
    expect(atS.map((r) => r.message.n)).toEqual(Array.from({ length: 30 }, (_, i) => i));
    expect(atS.every((r) => r.from === good.address)).toBe(true);
    expect(warnings.some((w) => w.includes("oversized"))).toBe(true);
    expect(warnings.some((w) => w.includes("unauthenticated"))).toBe(true);
  });

  it("holds an unauthenticated connection to a hello's size, and takes a hello and a large frame sent together", async () => {
    const warnings: string[] = [];
    const s = await server({
      warn: (message, fields) => warnings.push(`${message} ${JSON.stringify(fields)}`),
    });
    const atS = inbox(s);
    const port = portOf(s);
    const key = frameKey(linkKey(colonyKey, "servers"));
    // A length prefix within frameBytesMax but past any hello: closed at its fourth byte, not
    // after the hello timeout with megabytes buffered.
    const hoarder = await rawConnect(port);
    const hoarderClosed = closedSignal(hoarder);
    const prefix = Buffer.alloc(4);
    prefix.writeUInt32BE(3 * 1024 * 1024);
    hoarder.write(Buffer.concat([prefix, Buffer.alloc(1000)]));
    await waitFor(hoarderClosed, "the hoarding connection to close", 2_000);
    expect(s.stats().framesDropped.oversized).toBe(1);
    expect(warnings.some((w) => w.includes("the bound of a hello"))).toBe(true);
    // A peer whose hello and a 50 KB frame arrive in one write: the frame waits for the hello.
    const note = new Uint8Array(Buffer.from(JSON.stringify({ n: 7, pad: "x".repeat(50_000) })));
    const peer = await rawConnect(port);
    peer.write(
      Buffer.concat([
        encodeHello(key, "127.0.0.1:3"),
        encodeFrame(key, { sender: "127.0.0.1:3", sequence: 1, messages: [note] }),
      ]),
    );
    await waitFor(() => atS.length === 1, "the frame sent with the hello");
    expect(atS[0]?.from).toBe("127.0.0.1:3");
    expect(atS[0]?.message.n).toBe(7);
  });

  it("answers a client over the connection the client opened", async () => {
    const s = await server();
    s.onMessage((from, note) => {
      s.send(from, { n: note.n + 1000, from });
      s.flush();
    });
    const c = await client();
    expect(isClientAddress(c.address)).toBe(true);
    const atC = inbox(c);
    for (let i = 0; i < 10; i++) c.send(s.address, { n: i });
    c.flush();
    await waitFor(() => atC.length === 10, "the replies");
    expect(atC.map((r) => r.message.n)).toEqual(Array.from({ length: 10 }, (_, i) => i + 1000));
    expect(atC.every((r) => r.from === s.address && r.message.from === c.address)).toBe(true);
    // A client address with no connection cannot be dialled.
    s.send("client:0000", { n: 0 });
    s.flush();
    expect(s.stats().messagesDropped.unreachable).toBe(1);
    expect(s.stats().dials).toBe(0);
  });

  it("lets a client key reach servers as a client, and never pose as a server", async () => {
    const clientKey = linkKey(colonyKey, "clients");
    const warnings: string[] = [];
    const s = await server({
      warn: (message, fields) => warnings.push(`${message} ${JSON.stringify(fields)}`),
    });
    const atS: string[] = [];
    s.onMessage((from, note) => {
      atS.push(from);
      s.send(from, { n: note.n + 1000 });
      s.flush();
    });
    const c = track(new TcpTransport<Note>({ colonyKey: clientKey, keyKind: "client", codec: noteCodec }));
    await c.start();
    const atC = inbox(c);
    c.send(s.address, { n: 1 });
    c.flush();
    await waitFor(() => atC.length === 1, "the server's answer to the client key's holder");
    expect(atC[0]?.message.n).toBe(1001);

    // The same key, tagging a hello that names a server: unauthenticated, whatever the address.
    const posing = await rawConnect(portOf(s));
    const posingClosed = closedSignal(posing);
    const posingReceived: Buffer[] = [];
    posing.on("data", (chunk: Buffer) => posingReceived.push(chunk));
    posing.write(encodeHello(frameKey(clientKey), "127.0.0.1:1"));
    await waitFor(posingClosed, "the server to close the connection posing as a server");
    expect(posingReceived).toEqual([]);
    expect(s.stats().framesDropped.unauthenticated).toBe(1);
    expect(warnings.some((w) => w.includes("unauthenticated") && w.includes("before its hello"))).toBe(true);
    expect(atS).toEqual([c.address]);

    // And the colony key itself does not tag frames between servers: the servers' link key does.
    const raw = await rawConnect(portOf(s));
    const rawClosed = closedSignal(raw);
    raw.write(encodeHello(frameKey(colonyKey), "127.0.0.1:2"));
    await waitFor(rawClosed, "the server to close a connection tagged with the colony key itself");
    expect(s.stats().framesDropped.unauthenticated).toBe(2);

    // A client key cannot make a server.
    expect(
      () =>
        new TcpTransport<Note>({
          listen: { host, port: 0 },
          colonyKey: clientKey,
          keyKind: "client",
          codec: noteCodec,
        }),
    ).toThrow(/needs the colony key/);
  });

  it("stops reading a client that does not take its answers, and reads it again once it does", async () => {
    const s = await server<Uint8Array>({ codec: bytesCodec });
    s.onMessage((from) => {
      s.send(from, new Uint8Array(8 * 1024));
      s.flush();
    });
    // A client that sends 5,000 requests of 4 KiB and does not read its answers.
    const key = frameKey(linkKey(colonyKey, "clients"));
    const sender = "client:00000000000000aa";
    const socket = await rawConnect(portOf(s));
    socket.pause();
    socket.write(encodeHello(key, sender));
    const requests = 5_000;
    const request = new Uint8Array(4 * 1024);
    for (let sequence = 1; sequence <= requests; sequence++)
      socket.write(encodeFrame(key, { sender, sequence, messages: [request] }));
    await waitFor(() => s.stats().clientReadsHeld >= 1, "the server to stop reading the client");
    // Held: what it reads stops well short of what was sent, and stays there.
    await sleep(300);
    const heldAt = s.stats().messagesReceived;
    await sleep(300);
    expect(s.stats().messagesReceived).toBe(heldAt);
    expect(heldAt).toBeLessThan(requests * 0.7);
    // The client reads its answers: the server reads the rest of its requests.
    socket.on("data", () => {});
    socket.resume();
    await waitFor(() => s.stats().messagesReceived === requests, "every request to be read", 30_000);
  }, 60_000);

  it("queues up to the bound for a peer that stops reading, then drops the oldest", async () => {
    const { target, socket: stalledSocket } = await stalledPeer();

    const a = await server<Uint8Array>({ codec: bytesCodec });
    const messageBytes = 32 * 1024;
    const turns = 400; // 100 MiB offered, far beyond the queue and the kernel's buffers
    for (let turn = 0; turn < turns; turn++) {
      for (let i = 0; i < 8; i++) a.send(target, new Uint8Array(messageBytes));
      a.flush();
      expect(a.stats().queuedBytes).toBeLessThanOrEqual(transportLimits.peerQueueBytesMax);
      if (turn % 20 === 0) await sleep(1);
    }
    const stats = a.stats();
    expect(stats.framesDropped.backpressure).toBeGreaterThan(0);
    expect(stats.messagesDropped.backpressure).toBeGreaterThan(0);
    expect(stats.queuedBytes).toBeGreaterThan(0);
    expect(stats.queuedBytes).toBeLessThanOrEqual(transportLimits.peerQueueBytesMax);
    // What was written is bounded by what the socket accepted, not by what was offered.
    expect(stats.bytesSent).toBeLessThan(turns * 8 * messageBytes);

    // Once the peer reads again, 'drain' resumes writing and the queue empties.
    let readBytes = 0;
    stalledSocket()?.on("data", (chunk: Buffer) => {
      readBytes += chunk.length;
    });
    stalledSocket()?.resume();
    await waitFor(() => a.stats().queuedBytes === 0, "the queue to drain");
    await waitFor(() => readBytes === a.stats().bytesSent, "every written byte to be read");
    expect(a.stats().framesDropped.backpressure).toBe(stats.framesDropped.backpressure);
  });

  it("bounds the bytes queued for all peers together, shedding the largest queue", async () => {
    const targets: string[] = [];
    for (let i = 0; i < 3; i++) targets.push((await stalledPeer()).target);
    const bounds = {
      messageBytesMax: 64 * 1024,
      frameBytesMax: 128 * 1024,
      peerQueueBytesMax: 256 * 1024,
      queuedBytesMax: 512 * 1024,
    };
    const a = await server<Uint8Array>({ codec: bytesCodec, limits: bounds });
    const messageBytes = 16 * 1024;
    // Far beyond the kernel's buffers for each peer, in turns that go to every peer in order.
    for (let turn = 0; turn < 1_200; turn++) {
      for (const target of targets) {
        for (let i = 0; i < 4; i++) a.send(target, new Uint8Array(messageBytes));
      }
      a.flush();
      expect(a.stats().queuedBytes).toBeLessThanOrEqual(bounds.queuedBytesMax);
      if (turn % 50 === 0) await sleep(1);
    }
    const stats = a.stats();
    // Three full queues do not fit in the bound of two: queues were shed, and what is queued now
    // is within the bound (the last peer sent to keeps the frame of its last turn).
    expect(stats.queuesShed).toBeGreaterThan(0);
    expect(stats.queuedBytes).toBeGreaterThan(0);
    expect(stats.queuedBytes).toBeLessThanOrEqual(bounds.queuedBytesMax);
    expect(stats.framesDropped.backpressure).toBeGreaterThan(0);
  });

  it("bounds the bytes of partly received frames held for all connections, closing the largest holder", async () => {
    const bounds = {
      messageBytesMax: 64 * 1024,
      frameBytesMax: 128 * 1024,
      receiveBufferedBytesMax: 256 * 1024,
    };
    const s = await server<Uint8Array>({ codec: bytesCodec, limits: bounds, warn: () => {} });
    const key = frameKey(linkKey(colonyKey, "servers"));
    const prefix = Buffer.alloc(4);
    prefix.writeUInt32BE(120 * 1024);
    // Authenticated peers that each send most of a large frame, then stall: 3 x 100 KiB do not
    // fit in 256 KiB.
    const closed: (() => boolean)[] = [];
    let sent = 0;
    for (let i = 0; i < 3; i++) {
      const socket = await rawConnect(portOf(s));
      closed.push(closedSignal(socket));
      const hello = encodeHello(key, `127.0.0.1:${10 + i}`);
      const partial = Buffer.concat([prefix, Buffer.alloc(100 * 1024)]);
      socket.write(hello);
      socket.write(partial);
      sent += hello.length + partial.length;
      await waitFor(() => s.stats().bytesReceived >= sent, `peer ${i}'s bytes to arrive`);
    }
    await waitFor(() => closed.some((c) => c()), "a holder to be closed");
    const stats = s.stats();
    expect(stats.receiveBuffersShed).toBe(1);
    expect(closed.filter((c) => c())).toHaveLength(1);
    expect(stats.receiveBufferedBytes).toBeLessThanOrEqual(bounds.receiveBufferedBytesMax);
    expect(stats.receiveBufferedBytes).toBeGreaterThanOrEqual(2 * 100 * 1024);
    for (const socket of sockets) socket.destroy();
    await waitFor(() => s.stats().receiveBufferedBytes === 0, "closed connections to release their bytes");
  });

  it("bounds the bytes held in sockets that stopped reading, closing the largest holder", async () => {
    const stalled: { target: string; socket: () => Socket | null }[] = [];
    for (let i = 0; i < 3; i++) stalled.push(await stalledPeer());
    const bounds = {
      messageBytesMax: 64 * 1024,
      frameBytesMax: 128 * 1024,
      sendBufferedBytesMax: 256 * 1024,
    };
    const a = await server<Uint8Array>({ codec: bytesCodec, limits: bounds, warn: () => {} });
    const closedBefore = stalled.map((peer) => peer.socket());
    // Frames of about 120 KiB to peers that never read, far beyond the kernel's buffers: each
    // socket that blocks holds about one frame, and three do not fit in 256 KiB.
    for (let turn = 0; turn < 2_000 && a.stats().sendBuffersShed === 0; turn++) {
      for (const peer of stalled) {
        a.send(peer.target, new Uint8Array(60 * 1024));
        a.send(peer.target, new Uint8Array(60 * 1024));
      }
      a.flush();
      expect(a.stats().sendBufferedBytes).toBeLessThanOrEqual(bounds.sendBufferedBytesMax);
      if (turn % 20 === 0) await sleep(1);
    }
    const stats = a.stats();
    expect(stats.sendBuffersShed).toBeGreaterThan(0);
    expect(stats.sendBufferedBytes).toBeGreaterThan(0);
    expect(stats.sendBufferedBytes).toBeLessThanOrEqual(bounds.sendBufferedBytesMax);
    // The shed connection is closed: what is still queued for that peer goes on a new one.
    await waitFor(
      () => stalled.some((peer, i) => peer.socket() !== closedBefore[i]),
      "a stalled peer to be dialled again",
    );
    await a.close();
    expect(a.stats().sendBufferedBytes).toBe(0);
  });

  it("refuses bounds whose total queue cannot hold one peer's", () => {
    expect(
      () => new TcpTransport({ colonyKey, codec: noteCodec, limits: { queuedBytesMax: 1024 * 1024 } }),
    ).toThrow(/queuedBytesMax 1048576 must hold at least one peer's queue/);
  });

  it("delivers messages to its own address in a later turn", async () => {
    const a = await server();
    const atA = inbox(a);
    a.send(a.address, { n: 1 });
    a.send(a.address, { n: 2 });
    a.flush();
    expect(atA).toEqual([]);
    await waitFor(() => atA.length === 2, "the local messages");
    expect(atA).toEqual([
      { from: a.address, message: { n: 1 } },
      { from: a.address, message: { n: 2 } },
    ]);
    expect(a.stats().dials).toBe(0);
  });
});
