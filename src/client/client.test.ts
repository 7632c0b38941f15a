import { describe, expect, it } from "vitest";
import { limits } from "../core/index.ts";
import { decodeServerMessage, encodeServerMessage } from "../server/wire.ts";
import { bytes, Scenario } from "../sim/scenario.ts";
import { agreedChoice, type ResumedSession, resumedSessionsProblem } from "./client.ts";
import { InvalidRequestError, OutcomeUnknownError, UnavailableError, UnknownCellError } from "./errors.ts";

describe("client", () => {
  it("rejects a request over a limit at once, naming the problem, without sending it", async () => {
    const s = new Scenario().cell("vol-1");
    const client = s.newClient();
    const sentBefore = s.world.network.framesSent;
    const cell = client.client.cell("vol-1");
    await expect(cell.put("k".repeat(300), bytes("v"))).rejects.toThrow(InvalidRequestError);
    await expect(cell.put("k".repeat(300), bytes("v"))).rejects.toThrow(/300 bytes exceeds the limit of 256/);
    await expect(cell.transact({ conditions: [], reads: [], writes: [] })).rejects.toThrow(
      /no conditions, no reads and no writes/,
    );
    await expect(cell.put("x", 5 as unknown as bigint)).rejects.toThrow(/Uint8Array, bigint or boolean/);
    expect(s.world.network.framesSent).toBe(sentBefore);
  });

  it("reports a cell that no member hosts as unknown once a majority said so, well before the retry budget", async () => {
    const s = new Scenario().cell("vol-1");
    const client = s.newClient().client;
    // Make the client believe a cell that was never created lives on the first seven servers.
    const members = ["s1", "s2", "s3", "s4", "s5", "s6", "s7"];
    (client as unknown as { resolver: { members: () => string[] } }).resolver = { members: () => members };
    const failure = client
      .cell("no-such-cell")
      .get("x")
      .then(
        () => null,
        (error: unknown) => error,
      );
    // Four answers of unknown_cell with short backoffs between them: far less than the budget of
    // 12 attempts with backoffs up to a second.
    s.run(600);
    // Let the promise callbacks queued during the run go (the simulator does not run them).
    await new Promise((resolve) => setImmediate(resolve));
    const settled = await Promise.race([failure, Promise.resolve("still pending")]);
    expect(settled).toBeInstanceOf(UnknownCellError);
  });

  it("refuses an operation past the ones a cell's sessions can hold waiting, as unavailable", async () => {
    const s = new Scenario().cell("vol-1");
    const client = s.newClient().client;
    const cell = client.cell("vol-1");
    // 16 sessions in flight and 10,000 operations waiting for one: nothing has run yet.
    const outcomes: string[] = [];
    const held = Array.from({ length: 16 + 10_000 }, (_, i) =>
      cell.put("x", bytes(`${i}`)).then(
        () => outcomes.push("applied"),
        (error: Error) => outcomes.push(error.name),
      ),
    );
    const refused = await cell.put("x", bytes("one too many")).then(
      () => null,
      (error: unknown) => error,
    );
    expect(refused).toBeInstanceOf(UnavailableError);
    expect((refused as Error).message).toMatch(
      /more than 10000 operations of this client wait for it; slow down/,
    );
    // Closing ends every one of them, the waiting ones included, however many wait: the 16 sent
    // may still apply (outcome unknown), the 10,000 never sent cannot (unavailable).
    await client.close();
    await Promise.all(held);
    expect(outcomes).toHaveLength(10_016);
    const count = (name: string) => outcomes.filter((o) => o === name).length;
    expect(count("OutcomeUnknownError")).toBe(16);
    expect(count("UnavailableError")).toBe(10_000);
  });

  it("refuses an operation past the ones it may have outstanding, as unavailable, and takes them again once answered", async () => {
    const s = new Scenario().cell("vol-1");
    const client = s.newClient().client;
    // Eventual reads: no sessions, so only the client-wide bound holds them back.
    const outcomes: string[] = [];
    const held = Array.from({ length: limits.clientOperationsMax }, () =>
      client
        .cell("vol-1")
        .get("x", { consistency: "eventual" })
        .then(
          () => outcomes.push("answered"),
          (error: Error) => outcomes.push(error.name),
        ),
    );
    const failureOf = (operation: Promise<unknown>) =>
      operation.then(
        () => null,
        (error: unknown) => error,
      );
    const refused = await failureOf(client.cell("vol-1").get("x"));
    expect(refused).toBeInstanceOf(UnavailableError);
    expect((refused as Error).message).toMatch(/operations outstanding, its limit; wait for some to finish/);
    // Every outstanding operation is answered (by the client's close here); then it takes more.
    await client.close();
    await Promise.all(held);
    expect(outcomes).toHaveLength(limits.clientOperationsMax);
    const after = await failureOf(client.cell("vol-1").get("x"));
    expect((after as Error).message).toMatch(/the client was closed/);
  });

  it("ends a write sent before close() as of unknown outcome, since the cell may still apply it", async () => {
    const s = new Scenario().cell("vol-1");
    const client = s.newClient().client;
    const failureOf = (operation: Promise<unknown>) =>
      operation.then(
        () => null,
        (error: unknown) => error,
      );
    const put = failureOf(client.cell("vol-1").put("x", bytes("sent")));
    const read = failureOf(client.cell("vol-1").get("x"));
    // Sent, not yet answered: the messages are on the simulated network.
    await client.close();
    const ended = await put;
    expect(ended).toBeInstanceOf(OutcomeUnknownError);
    expect((ended as Error).message).toMatch(/the client was closed while the write was in flight/);
    // A read applies nothing: closing makes it unavailable.
    expect(await read).toBeInstanceOf(UnavailableError);
    // And indeed the cell applies the write after the client is gone.
    s.run(500);
    expect(s.get("vol-1", "x")).toEqual(bytes("sent"));
  });

  it("retries a write refused for want of a session slot as the very same command, then gives up saying why", async () => {
    const s = new Scenario().cell("vol-1");
    // As many other clients as the cell remembers sessions, each with one write just now.
    for (let i = 0; i < limits.sessionsPerCellMax; i++) {
      const entry = s.put("vol-1", `k${i}`, bytes("v"), s.newClient());
      expect(entry.failure).toBeNull();
    }
    const client = s.newClient().client;
    // Every command this client sends, as (session, seq).
    const transport = (client as unknown as { transport: { send(to: string, message: unknown): void } })
      .transport;
    const send = transport.send.bind(transport);
    const sent: string[] = [];
    transport.send = (to, message) => {
      const body = (message as { body?: { type: string; command?: { session: number; seq: number } } }).body;
      if (body?.type === "command" && body.command !== undefined)
        sent.push(`${body.command.session}/${body.command.seq}`);
      send(to, message);
    };
    const refused = client
      .cell("vol-1")
      .put("mine", bytes("v"))
      .then(
        () => null,
        (error: unknown) => error,
      );
    s.run(20_000);
    await new Promise((resolve) => setImmediate(resolve));
    const error = await Promise.race([refused, Promise.resolve("still pending")]);
    expect(error).toBeInstanceOf(UnavailableError);
    expect((error as Error).message).toMatch(/already remembers 128 client sessions/);
    // Several attempts, every one the same command: a late copy of any of them and a retry can
    // never both apply.
    expect(sent.length).toBeGreaterThanOrEqual(4);
    expect(new Set(sent).size).toBe(1);
    expect(sent[0]).toMatch(/\/1$/);
  });

  it("a write refused for want of a session slot after a copy of it went unanswered ends as of unknown outcome", async () => {
    const s = new Scenario().cell("vol-1");
    for (let i = 0; i < limits.sessionsPerCellMax; i++) {
      expect(s.put("vol-1", `k${i}`, bytes("v"), s.newClient()).failure).toBeNull();
    }
    const slot = s.newClient();
    // The client hears nothing for a while: its first attempts go unanswered (one may yet apply).
    for (const server of s.world.serverIds()) s.world.network.block(server, slot.address);
    const ended = slot.client
      .cell("vol-1")
      .put("mine", bytes("v"))
      .then(
        () => null,
        (error: unknown) => error,
      );
    s.run(1500);
    s.world.network.heal();
    s.run(20_000);
    await new Promise((resolve) => setImmediate(resolve));
    const error = await Promise.race([ended, Promise.resolve("still pending")]);
    expect(error).toBeInstanceOf(OutcomeUnknownError);
    expect((error as Error).message).toMatch(/an earlier copy of it went unanswered and may still apply/);
  });

  it("goes on with sessions an earlier client left, so one-shot clients do not fill a cell's session table", async () => {
    const s = new Scenario().cell("vol-1");
    // More one-shot clients than the cell remembers sessions, each writing once, one after another.
    let sessions: ResumedSession[] = [];
    const runs = limits.sessionsPerCellMax + 40;
    for (let i = 0; i < runs; i++) {
      const client = s.newClient({ sessions }).client;
      const added = client
        .cell("vol-1")
        .add("n", 1n)
        .catch((error: unknown) => error);
      s.run(200);
      // The simulator does not run promise callbacks: let them go, then see what came.
      await new Promise((resolve) => setImmediate(resolve));
      expect(await Promise.race([added, Promise.resolve("still pending")])).toBe(BigInt(i + 1));
      sessions = client.idleSessions(["vol-1"]);
      await client.close();
    }
    // One session went from client to client, numbering its commands on.
    expect(sessions).toEqual([{ cellKey: "vol-1", id: sessions[0]?.id, seq: runs, fresh: false }]);
    // A session the cell does not know (a colony made anew, say) is given up for a new one.
    const stranger = s.newClient({
      sessions: [{ cellKey: "vol-1", id: 12345, seq: 7, fresh: false }],
    }).client;
    const added = stranger.cell("vol-1").add("n", 1n);
    s.run(400);
    expect(await added).toBe(BigInt(runs + 1));
    const [renewed] = stranger.idleSessions();
    expect(renewed?.id).not.toBe(12345);
    expect(renewed?.seq).toBe(1);
    // A session another client used further (a copy of the state it was kept in, taken up twice):
    // the cell answers stale_request, applying nothing, and the write goes on in a new session.
    const behind = { ...(sessions[0] as ResumedSession), seq: 0 };
    const copy = s.newClient({ sessions: [behind] }).client;
    const again = copy.cell("vol-1").add("n", 1n);
    s.run(400);
    expect(await again).toBe(BigInt(runs + 2));
    expect(copy.idleSessions()[0]?.id).not.toBe(behind.id);
  });

  it("refuses sessions to take up that are not shaped like ones it left", () => {
    const ok = { cellKey: "vol-1", id: 7, seq: 3, fresh: false };
    expect(resumedSessionsProblem([ok])).toBeNull();
    expect(resumedSessionsProblem("x")).toMatch(/must be an array/);
    expect(resumedSessionsProblem([7])).toMatch(/sessions\[0\] must be \{ cellKey/);
    expect(resumedSessionsProblem([{ ...ok, id: 0 }])).toMatch(/sessions\[0\]\.id is 0; a session is/);
    expect(resumedSessionsProblem([{ ...ok, id: 2 ** 52 }])).toMatch(/sessions\[0\]\.id is/);
    expect(resumedSessionsProblem([{ ...ok, seq: -1 }])).toMatch(/sessions\[0\]\.seq is -1/);
    // Its next command would take seq 2^53, beyond what a command may carry.
    expect(resumedSessionsProblem([{ ...ok, seq: Number.MAX_SAFE_INTEGER }])).toMatch(
      /sessions\[0\]\.seq is/,
    );
    expect(resumedSessionsProblem([{ ...ok, fresh: "no" }])).toMatch(/sessions\[0\]\.fresh is "no"/);
    expect(resumedSessionsProblem([{ ...ok, cellKey: "" }])).toMatch(/sessions\[0\]\.cellKey/);
    expect(resumedSessionsProblem([ok, { ...ok }])).toMatch(/listed twice/);
    const many = Array.from({ length: limits.clientSessionsPerCellMax + 1 }, (_, i) => ({
      ...ok,
      id: i + 1,
    }));
    expect(resumedSessionsProblem(many)).toMatch(/more than 16 sessions of cell "vol-1"/);
  });

  it("sends what it was given at the call, whatever the caller changes afterwards", async () => {
    const s = new Scenario().cell("vol-1");
    const cell = s.newClient().client.cell("vol-1");
    // With the cell's servers down, the put is sent again and again: every copy must carry what
    // was given, not what the caller changed in between.
    const servers = s.members("vol-1").map((node) => node.serverId);
    s.crash(...servers);
    const value = new Uint8Array([1, 2, 3]);
    const put = cell.put("x", value);
    s.run(1);
    value.fill(0xee);
    s.run(1500);
    s.restart(...servers);
    s.run(3000);
    await put;
    // A condition's bytes and the transaction's lists, changed after the call, change nothing.
    const expected = new Uint8Array([1, 2, 3]);
    const txn = {
      conditions: [{ item: "x", op: "equals" as const, value: expected }],
      reads: ["x"],
      writes: [{ item: "y", op: "put" as const, value: bytes("y") }],
    };
    const conditional = cell.transact(txn);
    expected.fill(0);
    txn.writes.push({ item: "z", op: "put", value: bytes("z") });
    s.run(200);
    expect((await conditional).status).toBe("committed");
    const read = cell.read({ conditions: [], reads: ["x", "z"], writes: [] });
    s.run(200);
    const result = await read;
    expect(result.status === "committed" ? result.reads?.map((r) => r.value) : result).toEqual([
      new Uint8Array([1, 2, 3]),
      null,
    ]);
  });

  it("a describe names a leader only while the answering node hears one", async () => {
    const s = new Scenario().cell("vol-1");
    expect(s.put("vol-1", "x", bytes("1")).failure).toBeNull();
    const cell = s.newClient().client.cell("vol-1");
    const settle = async <T>(promise: Promise<T>, ms: number): Promise<T | string> => {
      const caught = promise.catch((error: unknown) => `failed: ${String(error)}`);
      s.run(ms);
      await new Promise((resolve) => setImmediate(resolve));
      return Promise.race([caught, Promise.resolve("still pending")]);
    };
    const healthy = (await settle(cell.describe(), 500)) as { leader: { serverId: string } | null };
    const leader = s.leader("vol-1");
    expect(healthy.leader?.serverId).toBe(leader);
    // The leader's server and three more go: the three left cannot elect anyone, and the one a
    // describe reaches last followed a server that is gone.
    const others = s
      .members("vol-1")
      .map((n) => n.serverId)
      .filter((id) => id !== leader);
    s.crash(leader as string, ...others.slice(0, 3));
    s.run(3000);
    const stranded = (await settle(cell.describe(), 3000)) as { leader: unknown; role: string };
    expect(stranded).toMatchObject({ leader: null });
  });

  it("close() ends every operation at once, also those waiting to try again", async () => {
    const s = new Scenario().cell("vol-1");
    const client = s.newClient().client;
    // Cells no server hosts: each answer (unknown_cell) is followed by a backoff before a retry.
    const members = ["s1", "s2", "s3", "s4", "s5", "s6", "s7"];
    (client as unknown as { resolver: { members: () => string[] } }).resolver = { members: () => members };
    const ended = Array.from({ length: 20 }, (_, i) =>
      client
        .cell(`missing-${i}`)
        .put("x", bytes("1"))
        .then(
          () => "applied",
          (error: Error) => error.name,
        ),
    );
    s.run(60);
    await client.close();
    await new Promise((resolve) => setImmediate(resolve));
    const outcomes = await Promise.all(ended.map((p) => Promise.race([p, Promise.resolve("still pending")])));
    expect(outcomes.filter((o) => o === "still pending")).toEqual([]);
    expect(new Set(outcomes)).toEqual(new Set(["OutcomeUnknownError"]));
  });

  it("the promise API works end to end over the simulated colony", async () => {
    const s = new Scenario().cell("vol-1");
    const cell = s.newClient().client.cell("vol-1");
    const put = cell.put("x", bytes("hello"));
    const added = cell.add("n", 5n);
    s.run(200);
    await put;
    expect(await added).toBe(5n);
    const got = cell.get("x");
    const lease = cell.acquireLease("leader", "me", 1000);
    s.run(200);
    expect(new TextDecoder().decode((await got) as Uint8Array)).toBe("hello");
    expect((await lease).status).toBe("granted");
  });

  it("says when it has operations outstanding and when the last one ends", async () => {
    const s = new Scenario().cell("vol-1");
    const client = s.newClient().client;
    const busy: boolean[] = [];
    (client as unknown as { onBusy: (on: boolean) => void }).onBusy = (on) => busy.push(on);
    const cell = client.cell("vol-1");
    const first = cell.put("x", bytes("1"));
    const second = cell.add("n", 1n);
    expect(busy).toEqual([true]);
    s.run(200);
    await Promise.all([first, second]);
    expect(busy).toEqual([true, false]);
    // An operation refused before it is sent (invalid) never counts as outstanding.
    await expect(cell.put("", bytes("v"))).rejects.toThrow(InvalidRequestError);
    expect(busy).toEqual([true, false]);
    // One ended by close() counts as ended too.
    const cut = cell.get("x").catch((error: unknown) => error);
    expect(busy).toEqual([true, false, true]);
    await client.close();
    expect(await cut).toBeInstanceOf(UnavailableError);
    expect(busy).toEqual([true, false, true, false]);
  });

  it("refuses what is not a transaction with a rejected promise, never a throw", async () => {
    const s = new Scenario().cell("vol-1");
    const cell = s.newClient().client.cell("vol-1");
    const sentBefore = s.world.network.framesSent;
    for (const junk of [null, undefined, {}, { writes: "x" }, 42]) {
      let promise: Promise<unknown> | null = null;
      expect(() => {
        promise = cell.transact(junk as never);
      }).not.toThrow();
      await expect(promise).rejects.toThrow(InvalidRequestError);
    }
    expect(s.world.network.framesSent).toBe(sentBefore);
  });

  it("refuses a read consistency it does not know instead of reading weaker than asked", async () => {
    const s = new Scenario().cell("vol-1");
    const cell = s.newClient().client.cell("vol-1");
    const sentBefore = s.world.network.framesSent;
    const txn = { conditions: [], reads: ["x"], writes: [] };
    await expect(cell.read(txn, "strong" as never)).rejects.toThrow(
      /consistency of a read is "linearizable" or "eventual", not "strong"/,
    );
    await expect(cell.get("x", "eventual" as never)).rejects.toThrow(/options is an object such as/);
    await expect(cell.get("x", { consistency: "Eventual" as never })).rejects.toThrow(/not "Eventual"/);
    expect(s.world.network.framesSent).toBe(sentBefore);
  });

  it("refuses a cell key that cannot name a cell when the handle is made", () => {
    const client = new Scenario().cell("vol-1").newClient().client;
    expect(() => client.cell("")).toThrow(/client\.cell\(\): a cell key must not be empty/);
    expect(() => client.cell("k".repeat(129))).toThrow(/129 bytes exceeds the limit of 128/);
    expect(() => client.cell(7 as unknown as string)).toThrow(/a cell key is a string, not number/);
    expect(() => client.cell("vol-1")).not.toThrow();
  });
});

/** Calls `seen` with the destination and message count of every frame `address` sends. */
function watchFrames(s: Scenario, address: string, seen: (to: string, messages: number) => void): void {
  const network = s.world.network;
  const sendFrame = network.sendFrame.bind(network);
  network.sendFrame = (from, to, messages) => {
    if (from === address) seen(to, messages.length);
    sendFrame(from, to, messages);
  };
}

/** A colony with cell vol-1 and a client that has written to it once, so it knows the leader. */
async function clientKnowingLeader() {
  const s = new Scenario().cell("vol-1");
  const { client } = s.newClient();
  const cell = client.cell("vol-1");
  const warm = cell.put("warm", bytes("x"));
  s.run(200);
  await warm;
  return { s, client, cell };
}

describe("client failover", () => {
  it("a lost connection to the server a request waits on sends it elsewhere before its timeout", async () => {
    const { s, client, cell } = await clientKnowingLeader();
    const leader = s.leader("vol-1") as string;
    const sentTo: string[] = [];
    watchFrames(s, client.address, (to) => sentTo.push(to));
    s.crash(leader);
    const put = cell.put("k", bytes("v"));
    s.run(5);
    expect(sentTo).toEqual([leader]);
    client.serverLost(leader);
    // The retry leaves after a backoff of at most a few tens of ms, far below the request timeout.
    s.run(60);
    expect(limits.clientRequestTimeoutMs).toBeGreaterThan(60 + 5);
    expect(sentTo.length).toBeGreaterThan(1);
    expect(sentTo.slice(1)).not.toContain(leader);
    // The write then completes once the cell has elected a new leader (exactly once).
    s.run(3_000);
    await put;
    client.serverLost("s-unknown"); // a server with nothing waiting on it: nothing happens
  });
});

describe("client batching", () => {
  it("sends the requests of one turn to a server in one frame, when the turn ends", async () => {
    const { s, client, cell } = await clientKnowingLeader();
    const frames: number[] = [];
    watchFrames(s, client.address, (_to, messages) => frames.push(messages));
    // As many writes as the client runs at once in one cell (one per session).
    const n = limits.clientSessionsPerCellMax;
    const puts = Array.from({ length: n }, (_, i) => cell.put(`k${i}`, bytes("v")));
    expect(frames).toEqual([]); // nothing leaves before the turn ends
    s.run(200);
    await Promise.all(puts);
    expect(frames).toEqual([n]);
  });
});

describe("client routing", () => {
  it("places a cell only until it knows the cell's leader", async () => {
    const s = new Scenario().cell("vol-1");
    const client = s.newClient().client;
    const inner = client as unknown as {
      resolver: { members: (cellKey: string) => readonly string[] | null };
    };
    const real = inner.resolver;
    let placements = 0;
    inner.resolver = {
      members: (cellKey) => {
        placements += 1;
        return real.members(cellKey);
      },
    };
    const cell = client.cell("vol-1");
    const first = cell.put("x", bytes("1"));
    s.run(200);
    await first;
    const afterFirst = placements;
    expect(afterFirst).toBeGreaterThan(0);
    for (let i = 0; i < 5; i++) {
      const next = cell.put("x", bytes(String(i)));
      s.run(50);
      await next;
    }
    expect(placements).toBe(afterFirst);
  });

  it("sends eventual reads to the nearest node", () => {
    const s = new Scenario({ seed: 3 }).cell("vol-1");
    s.put("vol-1", "x", bytes("1"));
    s.run(100);
    const near = s.newClient({ distance: (id) => (id === "s5" ? 0 : 1) });
    const before = s.world.server("s5").counters.messagesIn;
    for (let i = 0; i < 5; i++) expect(s.get("vol-1", "x", "eventual", near)).toEqual(bytes("1"));
    expect(s.world.server("s5").counters.messagesIn - before).toBeGreaterThanOrEqual(5);
  });

  it("a node that moved away answers with a forwarding pointer, and the client follows it", () => {
    const s = new Scenario({ seed: 4, servers: 9 }).cell("vol-1");
    s.put("vol-1", "x", bytes("1"));
    const moved = s.changeMembership("vol-1", { add: "s8", remove: { serverId: "s1", incarnation: 1 } });
    expect(typeof moved === "object" && moved.status).toBe("applied");
    s.put("vol-1", "x", bytes("2"));
    s.run(500);
    expect(s.world.server("s1").status().forwardingPointers).toBe(1);
    // A client with a stale view that only knows s1 is redirected to the members.
    const learned: string[][] = [];
    const stale = s.world.addClient();
    let view: readonly string[] = ["s1"];
    const staleView = {
      members: () => view,
      learned: (_: string, members: readonly string[]) => {
        learned.push([...members]);
        view = members;
      },
    };
    (stale.client as unknown as { resolver: typeof staleView }).resolver = staleView;
    let answer: unknown = null;
    stale.client.read("vol-1", { conditions: [], reads: ["x"], writes: [] }, "linearizable", (outcome) => {
      answer = outcome;
    });
    s.run(3000);
    expect(learned[0]?.sort()).toEqual(["s2", "s3", "s4", "s5", "s6", "s7", "s8"]);
    expect(answer).toMatchObject({
      ok: true,
      value: { status: "committed", reads: [{ item: "x", value: bytes("2") }] },
    });
  });
});

/**
 * Until `untilMs`, every answer the servers send `address` is replaced by a redirect to another
 * server (the cell's nodes pointing at each other while leadership settles). Returns the count.
 */
function redirectAnswers(s: Scenario, address: string, untilMs: number): { redirects: number } {
  const network = s.world.network;
  const servers = s.world.serverIds();
  const counted = { redirects: 0 };
  const sendFrame = network.sendFrame.bind(network);
  network.sendFrame = (from, to, messages) => {
    if (to !== address || s.world.nowMs >= untilMs) return sendFrame(from, to, messages);
    const next = servers[(servers.indexOf(from) + 1) % servers.length] as string;
    const rewritten = messages.map((bytes) => {
      const message = decodeServerMessage(bytes as Uint8Array);
      if (message.kind !== "response") return bytes;
      counted.redirects += 1;
      const leader = { serverId: next, incarnation: 1 };
      const body = { type: "redirect", leader, members: null, epoch: null, reason: "not_leader" } as const;
      return encodeServerMessage({ ...message, body });
    });
    sendFrame(from, to, rewritten);
  };
  return counted;
}

describe("client redirects", () => {
  it("a relayed answer names the leader, and the cell's next write goes there", async () => {
    const { s, client, cell } = await clientKnowingLeader();
    const leader = s.leader("vol-1") as string;
    const named = s.world.serverIds().find((id) => id !== leader) as string;
    const network = s.world.network;
    const sendFrame = network.sendFrame.bind(network);
    const sentTo: string[] = [];
    let relayOnce = true;
    network.sendFrame = (from, to, messages) => {
      if (from === client.address) sentTo.push(to);
      if (to !== client.address || !relayOnce) return sendFrame(from, to, messages);
      // The leader's answer arrives as if another node had relayed it from `named`.
      const rewritten = messages.map((bytes) => {
        const message = decodeServerMessage(bytes as Uint8Array);
        if (message.kind !== "response") return bytes;
        relayOnce = false;
        return encodeServerMessage({ ...message, relayedFrom: named });
      });
      sendFrame(from, to, rewritten);
    };
    const first = cell.put("a", bytes("1"));
    s.run(100);
    await first;
    expect(sentTo).toEqual([leader]);
    // The next write goes to the server the answer named, not to the one that delivered it
    // (that server is not the leader, so it redirects the write back, and the write completes).
    const second = cell.put("b", bytes("2"));
    s.run(200);
    await second;
    expect(sentTo.slice(1, 3)).toEqual([named, leader]);
  });

  it("a write follows redirects for longer than its failed attempts may last, and applies once", async () => {
    const { s, client, cell } = await clientKnowingLeader();
    // 3 s of redirects: clientAttemptsMax attempts with their backoffs end well within it.
    const storm = redirectAnswers(s, client.address, s.world.nowMs + 3_000);
    const written = cell.add("n", 1n);
    s.run(6_000);
    expect(await written).toBe(1n);
    expect(storm.redirects).toBeGreaterThan(limits.clientAttemptsMax);
    // Every attempt kept the write's (session, seq): the servers applied it once.
    const read = cell.get("n");
    s.run(500);
    expect(await read).toBe(1n);
  });

  it("an operation redirected without end gives up, naming the redirects", async () => {
    const { s, client, cell } = await clientKnowingLeader();
    const storm = redirectAnswers(s, client.address, Number.POSITIVE_INFINITY);
    const failure = cell.put("k", bytes("v")).then(
      () => null,
      (error: unknown) => error,
    );
    s.run(limits.clientOperationMsMax + limits.clientBackoffMsMax + limits.clientRequestTimeoutMsMax);
    await new Promise((resolve) => setImmediate(resolve));
    const settled = await Promise.race([failure, Promise.resolve("still pending")]);
    expect(settled).toBeInstanceOf(OutcomeUnknownError);
    expect(String(settled)).toMatch(
      /\d+ attempts failed( in \d+ ms)? \(\d+ redirected\); last: redirected by s\d+/,
    );
    expect(storm.redirects).toBeGreaterThan(limits.clientAttemptsMax);
    expect(storm.redirects).toBeLessThanOrEqual(limits.clientRedirectsMax);
  });
});

describe("agreedChoice", () => {
  it("spreads cells evenly over their members, whatever order the members are listed in", () => {
    const members = ["s1", "s2", "s3", "s4", "s5", "s6", "s7"];
    const counts = new Map<string, number>();
    for (let i = 0; i < 7_000; i++) {
      const cellKey = `vol-${i}`;
      const chosen = agreedChoice(cellKey, members);
      expect(agreedChoice(cellKey, [...members].reverse())).toBe(chosen);
      counts.set(chosen, (counts.get(chosen) ?? 0) + 1);
    }
    // 1,000 each on average; a binomial spread stays well inside +-15%.
    for (const member of members) {
      expect(counts.get(member)).toBeGreaterThan(850);
      expect(counts.get(member)).toBeLessThan(1_150);
    }
  });
});

describe("client attempt timeouts", () => {
  it("wait longer once answers come slowly, so a slow colony is not sent copies of each request", async () => {
    const { s, client, cell } = await clientKnowingLeader();
    const sentTo: string[] = [];
    watchFrames(s, client.address, (to) => sentTo.push(to));
    // Every answer now takes 700 ms: longer than the first attempt timeout.
    const slowMs = 700;
    expect(limits.clientRequestTimeoutMs).toBeLessThan(slowMs);
    expect(client.attemptTimeoutMs()).toBeLessThan(slowMs);
    for (const server of s.world.serverIds())
      s.world.network.clog(server, client.address, slowMs, s.world.nowMs + 60_000);

    const first = cell.put("a", bytes("1"));
    s.run(2_000);
    await first;
    // The first attempt timed out and the write was tried again; the late answer to the first
    // attempt still completed it, and was timed against that attempt.
    expect(sentTo.length).toBeGreaterThan(1);
    expect(client.attemptTimeoutMs()).toBeGreaterThan(slowMs);
    expect(client.attemptTimeoutMs()).toBeLessThanOrEqual(limits.clientRequestTimeoutMsMax);

    // The next write waits out each slow answer: at most a redirect to the leader, no copy. The
    // leader answered late, so it is slow, not cut off: the write does not go around it.
    sentTo.length = 0;
    const leader = s.leader("vol-1");
    const second = cell.put("b", bytes("2"));
    s.run(3_000);
    await second;
    expect(sentTo.length).toBeLessThanOrEqual(2);
    expect(new Set(sentTo).size).toBe(sentTo.length);
    expect(sentTo.at(-1)).toBe(leader);
  });

  it("an attempt at a leader that goes on answering the cell's other writes waits longer, and is not sent elsewhere", async () => {
    const { s, client, cell } = await clientKnowingLeader();
    const leader = s.leader("vol-1") as string;
    const network = s.world.network;
    const sendFrame = network.sendFrame.bind(network);
    const sentTo: string[] = [];
    let dropToLeader = true;
    network.sendFrame = (from, to, messages) => {
      if (from !== client.address) return sendFrame(from, to, messages);
      sentTo.push(to);
      // The first write's request is lost on its way: the leader never hears of it.
      if (to === leader && dropToLeader) {
        dropToLeader = false;
        return;
      }
      sendFrame(from, to, messages);
    };
    const lost = cell.put("lost", bytes("v"));
    s.run(5);
    // Meanwhile the leader commits the cell's other writes, one every 50 ms, for three attempt
    // timeouts: the lost write's attempt is overdue, but its leader is plainly at work.
    const busyMs = 3 * client.attemptTimeoutMs();
    for (let t = 0; t < busyMs; t += 50) {
      const other = cell.put(`other-${t}`, bytes("x"));
      s.run(50);
      await other;
    }
    expect(sentTo.length).toBeGreaterThan(busyMs / 50);
    expect(new Set(sentTo)).toEqual(new Set([leader]));
    // Once the cell's other writes stop, the overdue attempt is given up and the write sent
    // again; it then applies (once: the lost request never reached the leader).
    s.run(limits.clientRequestTimeoutMsMax * 2 + limits.clientBackoffMsMax);
    await lost;
  });

  it("an attempt at a leader whose server answers other requests waits once more, then goes around it", async () => {
    const s = new Scenario().cell("vol-1");
    const warm = s.newClient().client.cell("vol-1").put("warm", bytes("x"));
    s.run(200);
    await warm;
    const leader = s.leader("vol-1") as string;
    // This client is nearest to the leader's server: its eventual reads are answered there.
    const { client } = s.newClient({ distance: (id) => (id === leader ? 0 : 1) });
    const cell = client.cell("vol-1");
    const known = cell.put("known", bytes("x"));
    s.run(200);
    await known;
    const network = s.world.network;
    const sendFrame = network.sendFrame.bind(network);
    const writes: { atMs: number; to: string; leaderUnresponsive: boolean }[] = [];
    let dropped = false;
    network.sendFrame = (from, to, messages) => {
      if (from === client.address) {
        for (const bytes of messages) {
          const message = decodeServerMessage(bytes as Uint8Array);
          if (message.kind !== "request" || message.body.type !== "command") continue;
          writes.push({ atMs: s.world.nowMs, to, leaderUnresponsive: message.body.leaderUnresponsive });
          // The write's first request is lost on its way: the leader never hears of it.
          if (!dropped) {
            dropped = true;
            return;
          }
        }
      }
      sendFrame(from, to, messages);
    };
    const startMs = s.world.nowMs;
    const timeoutMs = client.attemptTimeoutMs();
    const lost = cell.put("lost", bytes("v"));
    s.run(5);
    // Meanwhile the leader's server answers the client's eventual reads, one every 50 ms: it is
    // up and reaches the client, so the overdue attempt waits once more, twice as long...
    const readUntil = async (untilMs: number) => {
      while (s.world.nowMs < untilMs) {
        const read = cell.get("known", { consistency: "eventual" });
        s.run(50);
        await read;
      }
    };
    await readUntil(startMs + timeoutMs + 2 * timeoutMs - 50);
    expect(writes).toEqual([{ atMs: startMs, to: leader, leaderUnresponsive: false }]);
    // ... and then goes around the leader once: a follower that still hears it relays the write.
    await readUntil(startMs + 3 * timeoutMs + limits.clientBackoffMsMax + 200);
    await lost;
    expect(writes).toHaveLength(2);
    expect(writes[1]?.to).not.toBe(leader);
    expect(writes[1]?.leaderUnresponsive).toBe(true);
    expect(writes[1]?.atMs).toBeGreaterThanOrEqual(startMs + 3 * timeoutMs);
  });

  it("each unanswered attempt of an operation waits twice as long as the one before, up to the ceiling", async () => {
    const { s, client, cell } = await clientKnowingLeader();
    const base = client.attemptTimeoutMs();
    expect(base).toBe(limits.clientRequestTimeoutMs);
    const sentAt: number[] = [];
    watchFrames(s, client.address, () => sentAt.push(s.world.nowMs));
    // No server's answer reaches the client: every attempt times out.
    for (const server of s.world.serverIds()) s.world.network.block(server, client.address);
    const failure = cell.put("k", bytes("v")).catch((error: unknown) => error);
    s.run(limits.clientOperationMsMax + limits.clientRequestTimeoutMsMax + limits.clientBackoffMsMax);
    await new Promise((resolve) => setImmediate(resolve));
    expect(await Promise.race([failure, Promise.resolve("still pending")])).toBeInstanceOf(Error);
    // The gap before attempt k+1 is its predecessor's wait plus a backoff of at most
    // clientBackoffMsMax; the waits are base, 2 base, 4 base, ... up to clientRequestTimeoutMsMax.
    const gaps = sentAt.slice(1).map((t, i) => t - (sentAt[i] as number));
    expect(gaps.length).toBeGreaterThanOrEqual(4);
    gaps.forEach((gap, k) => {
      const wait = Math.min(limits.clientRequestTimeoutMsMax, base * 2 ** k);
      expect(gap, `gap ${k}`).toBeGreaterThanOrEqual(wait);
      expect(gap, `gap ${k}`).toBeLessThanOrEqual(wait + limits.clientBackoffMsMax);
    });
    // Fewer copies of the request than a fixed wait would send in the operation's time.
    expect(sentAt.length).toBeLessThan(limits.clientOperationMsMax / (base + limits.clientBackoffMsMax));
  });

  it("an operation makes no new attempt once clientOperationMsMax has passed since its first", async () => {
    const { s, client, cell } = await clientKnowingLeader();
    // Answers that take 2 s make every attempt wait long: clientAttemptsMax of them would take
    // longer than the run below...
    const network = s.world.network;
    for (const server of s.world.serverIds())
      network.clog(server, client.address, 2_000, s.world.nowMs + 10_000);
    const slow = cell.put("slow", bytes("v"));
    s.run(10_000);
    await slow;
    const runMs = limits.clientOperationMsMax + limits.clientRequestTimeoutMsMax + limits.clientBackoffMsMax;
    expect(client.attemptTimeoutMs() * limits.clientAttemptsMax).toBeGreaterThan(runMs);
    // ... then every server stops answering this client: attempts time out one after another.
    for (const server of s.world.serverIds()) network.block(server, client.address);
    const failure = cell.put("k", bytes("v")).then(
      () => null,
      (error: unknown) => error,
    );
    s.run(runMs);
    await new Promise((resolve) => setImmediate(resolve));
    const settled = await Promise.race([failure, Promise.resolve("still pending")]);
    expect(settled).toBeInstanceOf(Error);
    expect(String(settled)).toMatch(/outcome of a write .* is unknown: \d+ attempts failed in \d+ ms/);
  });
});
