import { describe, expect, it } from "vitest";
import type { Command } from "../cell/index.ts";
import { limits, Prng, type Scheduler, type TimerHandle } from "../core/index.ts";
import { makeBallot } from "../paxos/index.ts";
import { type LoadResult, MemoryStorage, type StorageBatch } from "../storage/index.ts";
import type { TransportPort } from "../transport/index.ts";
import {
  paxosSendKind,
  paxosSendKinds,
  Server,
  type ServerMessage,
  statusCellsListedMax,
  timerLatenessBucketsMs,
} from "./server.ts";

class RecordingStorage extends MemoryStorage<Command> {
  readonly written: StorageBatch<Command>[] = [];
  override write(batch: StorageBatch<Command>, done: (error: Error | null) => void): void {
    this.written.push(batch);
    super.write(batch, done);
  }
}

class Recorder implements TransportPort<ServerMessage> {
  readonly address = "s1";
  readonly sent: { to: string; message: ServerMessage }[] = [];
  handler: ((from: string, message: ServerMessage) => void) | null = null;
  send(to: string, message: ServerMessage): void {
    this.sent.push({ to, message });
  }
  flush(): void {}
  onMessage(handler: (from: string, message: ServerMessage) => void): void {
    this.handler = handler;
  }
}

class Manual implements Scheduler {
  now = 0;
  deferred: (() => void)[] = [];
  /** Timers armed and not cleared, fired only by fireTimers. */
  timers = new Map<number, { atMs: number; callback: () => void }>();
  private nextTimer = 1;
  nowMs(): number {
    return this.now;
  }
  setTimer(delayMs: number, callback: () => void): TimerHandle {
    const id = this.nextTimer++;
    this.timers.set(id, { atMs: this.now + delayMs, callback });
    return { id };
  }
  clearTimer(handle: TimerHandle): void {
    this.timers.delete(handle.id);
  }
  /** Fires, at `now`, every timer that was due by then. */
  fireTimers(now: number): void {
    this.now = now;
    for (const [id, timer] of [...this.timers]) {
      if (timer.atMs > now) continue;
      this.timers.delete(id);
      timer.callback();
    }
    this.run();
  }
  defer(callback: () => void): void {
    this.deferred.push(callback);
  }
  run(): void {
    while (this.deferred.length > 0) (this.deferred.shift() as () => void)();
  }
}

/** A request body: a new session's first transaction, with these writes and nothing else. */
function commandBody(writes: readonly unknown[]) {
  return {
    type: "command",
    leaderUnresponsive: false,
    command: {
      version: 1,
      session: 1,
      seq: 1,
      newSession: true,
      op: { type: "txn", txn: { conditions: [], reads: [], writes } },
    },
  } as const;
}

const members = Array.from({ length: 7 }, (_, i) => ({ serverId: `s${i + 1}`, incarnation: i + 1 }));

/** A server "s1" with one peer, on `storage`; `fatal` collects what it stopped for. */
function setup<S extends MemoryStorage<Command> = RecordingStorage>(storage?: S, requestBytesMax?: number) {
  const store = storage ?? (new RecordingStorage() as MemoryStorage<Command> as S);
  const transport = new Recorder();
  const scheduler = new Manual();
  const fatal: string[] = [];
  const server = new Server({
    serverId: "s1",
    peers: ["s2"],
    storage: store,
    transport,
    scheduler,
    random: new Prng(1),
    onFatal: (reason) => fatal.push(reason),
    ...(requestBytesMax === undefined ? {} : { requestBytesMax }),
  });
  return { storage: store, transport, scheduler, server, fatal };
}

describe("server", () => {
  it("writes every cell touched in one turn in one storage batch", () => {
    const { storage, scheduler, server } = setup();
    for (let i = 0; i < 50; i++) server.createCell(`vol-${i}`, members);
    scheduler.run();
    expect(storage.written.length).toBe(1);
    expect(storage.written[0]?.writes.length).toBe(50);
    expect(storage.hostedCells().length).toBe(50);
  });

  it("tells a caller when what it asked for is durable, and when it will not be", () => {
    class HeldStorage extends MemoryStorage<Command> {
      readonly held: (() => void)[] = [];
      fail = false;
      override write(batch: StorageBatch<Command>, done: (error: Error | null) => void): void {
        this.held.push(() => (this.fail ? done(new Error("disk full")) : super.write(batch, done)));
      }
    }
    const { storage, scheduler, server, fatal } = setup(new HeldStorage());
    const answers: string[] = [];
    // Nothing asked for yet: answered at the next turn.
    server.whenDurable((error) => answers.push(`idle ${error}`));
    scheduler.run();
    expect(answers).toEqual(["idle null"]);
    server.createCell("vol-1", members);
    server.whenDurable((error) => answers.push(`first ${error}`));
    scheduler.run();
    expect(storage.held.length).toBe(1);
    // A second creation while the first batch is in flight waits for a batch of its own.
    server.createCell("vol-2", members);
    server.whenDurable((error) => answers.push(`second ${error}`));
    scheduler.run();
    expect(answers).toEqual(["idle null"]);
    (storage.held.shift() as () => void)();
    scheduler.run();
    expect(answers).toEqual(["idle null", "first null"]);
    expect(storage.hostedCells()).toEqual(["vol-1"]);
    expect(storage.held.length).toBe(1);
    storage.fail = true;
    (storage.held.shift() as () => void)();
    expect(answers.at(-1)).toBe("second a storage batch could not be made durable: disk full");
    expect(fatal).toHaveLength(1);
    server.whenDurable((error) => answers.push(`stopped ${error}`));
    expect(answers.at(-1)).toBe("stopped the server is stopped");
  });

  it("loads a node from storage the first time its cell is touched after a restart", () => {
    const { storage, scheduler, server } = setup();
    server.createCell("vol-a", members);
    scheduler.run();
    server.stop();
    const transport = new Recorder();
    const restarted = new Server({
      serverId: "s1",
      peers: [],
      storage,
      transport,
      scheduler,
      random: new Prng(2),
    });
    expect(restarted.status().residentNodes).toBe(0);
    transport.handler?.("c1", { kind: "request", id: 1, cellKey: "vol-a", body: { type: "describe" } });
    scheduler.run();
    expect(restarted.status().residentNodes).toBe(1);
    const answer = transport.sent.find((s) => s.to === "c1")?.message;
    expect(answer?.kind === "response" && answer.body.type).toBe("status");
  });

  it("counts its nodes' campaigns by cause, and those they won", () => {
    const { transport, scheduler, server } = setup();
    server.createCell("vol-7", members);
    server.createCell("vol-1", [{ serverId: "s1", incarnation: 1 }]);
    scheduler.run();
    const body = commandBody([{ item: "x", op: "put", value: 1n }]);
    transport.handler?.("c1", { kind: "request", id: 1, cellKey: "vol-7", body } as ServerMessage);
    transport.handler?.("c1", { kind: "request", id: 2, cellKey: "vol-1", body } as ServerMessage);
    scheduler.run();
    const { counters } = server.status();
    // vol-7's campaign waits for promises from servers that are not there; vol-1's one node is a
    // majority alone.
    expect(counters.campaigns).toEqual({
      no_leader: 2,
      leader_suspected: 0,
      takeover: 0,
      after_backoff: 0,
      transfer: 0,
      caught_up: 0,
    });
    expect(counters.leadershipsWon).toBe(1);
    expect(server.status().leaders).toBe(1);
  });

  it("stops serving, and throws nothing, when the storage cannot load a node", () => {
    class FailingStorage extends MemoryStorage<Command> {
      override load(): never {
        throw new Error("checkpoint to lmdb failed (disk gone)");
      }
    }
    const { transport, scheduler, server, fatal } = setup(new FailingStorage());
    transport.handler?.("c1", {
      kind: "request",
      id: 1,
      cellKey: "vol-a",
      body: { type: "describe" },
    } as ServerMessage);
    expect(() => scheduler.run()).not.toThrow();
    expect(fatal).toEqual(["the storage could not load cell vol-a: checkpoint to lmdb failed (disk gone)"]);
    expect(server.isStopped).toBe(true);
  });

  it("counts every faulty cell in its status, and lists the first 1,000", () => {
    class DamagedStorage extends MemoryStorage<Command> {
      override load(): LoadResult<Command> {
        return { status: "corrupt", detail: "node record failed its checksum" };
      }
    }
    const { transport, scheduler, server } = setup(new DamagedStorage());
    const cells = statusCellsListedMax + 500;
    for (let i = 0; i < cells; i++) {
      transport.handler?.("c1", { kind: "request", id: i, cellKey: `vol-${i}`, body: { type: "describe" } });
    }
    scheduler.run();
    const status = server.status();
    expect(status.faultyCount).toBe(cells);
    expect(status.faultyCells).toHaveLength(statusCellsListedMax);
    expect(status.faultyCells[0]).toBe("vol-0");
    expect(status.stalledCount).toBe(0);
    const answer = transport.sent.find((s) => s.message.kind === "response")?.message as {
      body: { code?: string };
    };
    expect(answer.body.code).toBe("faulty");
  });

  it("loads its stored forwarding pointers in expiry order, so each is forgotten when it expires", () => {
    const storage = new RecordingStorage();
    const pointerTo = (cellKey: string, expiresAtMs: number) => ({ cellKey, epoch: 2, members, expiresAtMs });
    // Stored in another order than they expire in; one has expired already.
    storage.applyBatch({
      writes: [],
      removed: [],
      pointers: [pointerTo("vol-late", 50_000), pointerTo("vol-early", 20_000), pointerTo("vol-gone", -1)],
    });
    const { scheduler, server } = setup(storage);
    expect(server.status().forwardingPointers).toBe(2);
    expect(storage.pointers().map((p) => p.cellKey)).not.toContain("vol-gone");
    scheduler.fireTimers(30_000);
    expect(server.status().forwardingPointers).toBe(1);
    scheduler.fireTimers(60_000);
    expect(server.status().forwardingPointers).toBe(0);
  });

  it("drops a node's message that arrives from another sender than the node's server", () => {
    const { transport, scheduler, server } = setup();
    server.createCell("vol-a", members);
    scheduler.run();
    const ballot = makeBallot(5, 2);
    const prepare = (sender: string) =>
      transport.handler?.(sender, {
        kind: "paxos",
        message: {
          type: "prepare",
          cellKey: "vol-a",
          from: members[1],
          to: members[0],
          epoch: 1,
          ballot,
          fromSlot: 1,
        },
      } as ServerMessage);
    const promises = () =>
      transport.sent.filter((s) => s.message.kind === "paxos" && s.message.message.type === "promise").length;
    const dropped = server.status().counters.messagesDropped;
    prepare("c1"); // a client claiming to be s2's node
    scheduler.run();
    expect(server.status().counters.messagesDropped).toBe(dropped + 1);
    expect(promises()).toBe(0);
    // A client naming itself as the sender (it holds the colony key, so its frames authenticate):
    // not a server of the colony, so no replica hears it, and neither does the failure detector.
    transport.handler?.("c1", {
      kind: "paxos",
      message: {
        type: "prepare",
        cellKey: "vol-a",
        from: { serverId: "c1", incarnation: 999 },
        to: members[0],
        epoch: 1,
        ballot: makeBallot(9, 999),
        fromSlot: 1,
      },
    } as ServerMessage);
    transport.handler?.("c1", { kind: "heartbeat" });
    scheduler.run();
    expect(server.status().counters.messagesDropped).toBe(dropped + 3);
    expect(promises()).toBe(0);
    prepare("s2");
    scheduler.run();
    expect(promises()).toBe(1);
  });

  it("takes membership changes from clients only when told to, and only onto the colony's servers", () => {
    const refused = setup();
    refused.server.createCell("vol-a", members);
    refused.scheduler.run();
    const change = (transport: Recorder, scheduler: Manual, add: string) => {
      transport.sent.length = 0;
      transport.handler?.("c1", {
        kind: "request",
        id: 7,
        cellKey: "vol-a",
        body: { type: "change", change: { add, remove: members[6] ?? null } },
      });
      scheduler.run();
      const answer = transport.sent.find((s) => s.to === "c1")?.message;
      return answer?.kind === "response" && answer.body.type === "error"
        ? answer.body.message
        : "not refused";
    };
    // The server process's default: any holder of the colony key could otherwise remove members.
    expect(change(refused.transport, refused.scheduler, "s2")).toMatch(
      /takes no membership changes from clients/,
    );
    const allowed = new Server({
      serverId: "s1",
      peers: ["s2"],
      storage: new MemoryStorage<Command>(),
      transport: new Recorder(),
      scheduler: new Manual(),
      random: new Prng(1),
      membershipChanges: true,
    });
    const transport = (allowed as unknown as { transport: Recorder }).transport;
    const scheduler = (allowed as unknown as { scheduler: Manual }).scheduler;
    allowed.createCell("vol-a", members);
    scheduler.run();
    expect(change(transport, scheduler, "ghost")).toMatch(/only on a server of the colony, not on "ghost"/);
  });

  it("answers bad input with clear errors and never throws", () => {
    const { transport, scheduler, server } = setup();
    server.createCell("vol-a", members);
    scheduler.run();
    const ask = (id: number, cellKey: string, body: unknown) =>
      transport.handler?.("c1", { kind: "request", id, cellKey, body } as ServerMessage);
    ask(1, "", { type: "describe" });
    ask(2, "vol-missing", { type: "describe" });
    ask(3, "vol-a", commandBody([]));
    ask(4, "vol-a", {
      type: "read",
      consistency: "eventual",
      txn: { conditions: [], reads: ["x"], writes: [{ item: "x", op: "delete" }] },
      watermark: 0,
    });
    ask(5, "vol-a", {
      type: "read",
      consistency: "eventual",
      txn: { conditions: [], reads: ["x"], writes: [] },
      watermark: 99,
    });
    ask(6, "vol-a", null);
    ask(7, "vol-a", { type: "launch-missiles" });
    scheduler.run();
    const answers = new Map(
      transport.sent
        .filter((s) => s.message.kind === "response")
        .map((s) => [(s.message as { id: number }).id, s.message]),
    );
    const body = (id: number) =>
      (answers.get(id) as { body: { type: string; code?: string; message?: string } }).body;
    expect(body(1)).toMatchObject({ type: "error", code: "invalid" });
    expect(body(2)).toMatchObject({ type: "error", code: "unknown_cell" });
    expect(body(3)).toMatchObject({ type: "error", code: "invalid" });
    expect(body(3).message).toMatch(/no conditions, no reads and no writes/);
    expect(body(4)).toMatchObject({ type: "error", code: "invalid" });
    expect(body(5)).toMatchObject({ type: "error", code: "behind" });
    expect(body(6)).toMatchObject({ type: "error", code: "invalid" });
    expect(body(7).message).toMatch(/unknown request type "launch-missiles"/);
  });

  it("holds requests up to a bound on their bytes, answers the next overloaded, and frees the bytes as they end", () => {
    const { transport, scheduler, server } = setup(undefined, 3_000);
    server.createCell("vol-a", members);
    scheduler.run();
    // No peer answers, so the cell commits nothing: what is admitted stays held.
    const write = (id: number, session: number, valueBytes: number, items = 1) => {
      const body = commandBody(
        Array.from({ length: items }, (_, i) => ({
          item: `x${id}.${i}`,
          op: "put",
          value: new Uint8Array(valueBytes),
        })),
      );
      transport.handler?.("c1", {
        kind: "request",
        id,
        cellKey: "vol-a",
        body: { ...body, command: { ...body.command, session } },
      } as ServerMessage);
      scheduler.run();
    };
    const answer = (id: number) =>
      transport.sent.find((s) => s.to === "c1" && s.message.kind === "response" && s.message.id === id)
        ?.message as { body: { type: string; code?: string; message?: string } } | undefined;
    write(1, 11, 1_000);
    write(2, 12, 1_000);
    expect(answer(1)).toBeUndefined();
    expect(answer(2)).toBeUndefined();
    const held = server.status().pendingRequestBytes;
    expect(server.status().pendingRequests).toBe(2);
    expect(held).toBeGreaterThan(2_000);
    expect(held).toBeLessThan(2_200);
    write(3, 13, 1_000);
    expect(answer(3)?.body).toMatchObject({ type: "error", code: "overloaded" });
    expect(answer(3)?.body.message).toMatch(/holds \d+ bytes of requests; retry after a backoff/);
    write(4, 14, 2_000, 2);
    expect(answer(4)?.body).toMatchObject({ type: "error", code: "invalid" });
    expect(answer(4)?.body.message).toMatch(/more than server s1 holds for all requests \(3000\); split it/);
    expect(server.status()).toMatchObject({ pendingRequests: 2, pendingRequestBytes: held });
    // The cell gives up on them (its node cannot lead without peers); every held byte is given back.
    for (let at = 1_000; at <= limits.serverRequestExpiryMs + 2_000; at += 1_000) scheduler.fireTimers(at);
    expect(server.status()).toMatchObject({ pendingRequests: 0, pendingRequestBytes: 0 });
    write(5, 15, 1_000);
    expect(answer(5)).toBeUndefined();
    expect(server.status().pendingRequests).toBe(1);
    server.stop();
  });

  it("counts the messages its nodes send, by kind", () => {
    const { transport, scheduler, server } = setup();
    server.createCell("vol-a", members);
    scheduler.run();
    // A write to a cell without a known leader: s1's node campaigns, sending prepare to the others.
    transport.handler?.("c1", {
      kind: "request",
      id: 1,
      cellKey: "vol-a",
      body: commandBody([{ item: "x", op: "put", value: 1n }]),
    } as ServerMessage);
    scheduler.run();
    const sent = new Map<string, number>();
    for (const { message } of transport.sent) {
      if (message.kind !== "paxos") continue;
      const kind = paxosSendKind(message.message);
      sent.set(kind, (sent.get(kind) ?? 0) + 1);
    }
    expect(sent.get("prepare")).toBe(6);
    const counted = server.status().counters.paxosOut;
    for (const kind of paxosSendKinds) expect(counted[kind], kind).toBe(sent.get(kind) ?? 0);
  });

  // What a node of s1 hears from s2's node before a client says the leader is unresponsive: a
  // leader's heartbeat (a commit notice), or a candidate's prepare, which s1's node promises.
  /** s1 hears s2's node of vol-a (ballot 1 of it) send `message` at `now`. */
  const hearProposer = (
    transport: Recorder,
    scheduler: Manual,
    message: (ballot: number) => object,
    now: number,
  ): void => {
    const proposer = members[1] as (typeof members)[number];
    scheduler.now = now;
    transport.handler?.("s2", {
      kind: "paxos",
      message: {
        cellKey: "vol-a",
        from: proposer,
        to: members[0] as (typeof members)[number],
        epoch: 1,
        ...message(makeBallot(1, proposer.incarnation)),
      },
    } as ServerMessage);
    scheduler.run();
  };
  /** Client c1's write to `cellKey` at `now`, after clearing what s1 sent before. */
  const clientWrite = (
    transport: Recorder,
    scheduler: Manual,
    write: { id: number; cellKey: string; now: number; leaderUnresponsive: boolean },
  ): void => {
    scheduler.now = write.now;
    transport.sent.length = 0;
    transport.handler?.("c1", {
      kind: "request",
      id: write.id,
      cellKey: write.cellKey,
      body: {
        ...commandBody([{ item: "x", op: "put", value: 1n }]),
        leaderUnresponsive: write.leaderUnresponsive,
      },
    } as ServerMessage);
    scheduler.run();
  };
  /** Client c1's write to vol-a, saying the leader is unresponsive, at `now`: what s1 sent for it. */
  const claimUnresponsive = (transport: Recorder, scheduler: Manual, id: number, now: number) => {
    clientWrite(transport, scheduler, { id, cellKey: "vol-a", now, leaderUnresponsive: true });
    const prepares = transport.sent.filter(
      (s) => s.message.kind === "paxos" && s.message.message.type === "prepare",
    );
    const answer = transport.sent.find((s) => s.to === "c1")?.message;
    const relayed = transport.sent.find((s) => s.to === "s2" && s.message.kind === "request")?.message;
    return { prepares: prepares.length, answer, relayed: relayed?.kind === "request" ? relayed : null };
  };

  const proposerMessages = {
    "a leader's heartbeat": (ballot: number) => ({ type: "heartbeat" as const, ballot, commit: 0, round: 0 }),
    "a candidate's prepare": (ballot: number) => ({ type: "prepare" as const, ballot, fromSlot: 1 }),
  };
  for (const [heard, message] of Object.entries(proposerMessages)) {
    it(`relays a request that calls the leader unresponsive after ${heard}, and campaigns after its silence`, () => {
      const { transport, scheduler, server } = setup();
      server.createCell("vol-a", members);
      scheduler.run();
      const hear = (now: number) => hearProposer(transport, scheduler, message, now);
      const request = (id: number, now: number) => claimUnresponsive(transport, scheduler, id, now);
      const answerFrom = (from: string, relayed: { id: number }, index: number) => {
        transport.sent.length = 0;
        transport.handler?.(from, {
          kind: "response",
          id: relayed.id,
          cellKey: "vol-a",
          body: { type: "result", result: { kind: "stale_request" }, index },
        } as ServerMessage);
        scheduler.run();
        return transport.sent.filter((s) => s.to === "c1").map((s) => s.message);
      };
      hear(1_000);
      const declined = request(7, 1_000 + limits.relayProposerHeardMs);
      expect(declined.prepares).toBe(0);
      expect(declined.answer).toBeUndefined();
      // s2 reaches s1 and the client says it does not reach s2: s1 relays the request to s2,
      // unmarked (so s2 never relays it again), under an id of s1's own.
      expect(declined.relayed?.body).toMatchObject({ type: "command", leaderUnresponsive: false });
      const relayed = declined.relayed as NonNullable<typeof declined.relayed>;
      expect(server.status().counters).toMatchObject({ takeoversDeclined: 1, requestsRelayed: 1 });
      // Only the server it went to answers it; the answer goes back under the client's id, once.
      expect(answerFrom("s3", relayed, 5)).toEqual([]);
      expect(answerFrom("s2", relayed, 5)).toEqual([
        {
          kind: "response",
          id: 7,
          cellKey: "vol-a",
          body: expect.objectContaining({ type: "result", index: 5 }),
          relayedFrom: "s2",
        },
      ]);
      expect(answerFrom("s2", relayed, 5)).toEqual([]);
      expect(server.status().counters).toMatchObject({ relayAnswers: 1, messagesDropped: 2 });

      // A relay its leader never answers (below) is forgotten after serverRelayExpiryMs.
      hear(2_000);
      const unanswered = request(8, 2_000);
      expect(unanswered.relayed).not.toBeNull();

      // The proposer has not been heard for longer than relayProposerHeardMs (it may be cut off
      // from s1 too): the claim is still declined, and redirected to it rather than relayed.
      const redirected = request(10, 2_000 + limits.relayProposerHeardMs + 1);
      expect(redirected.prepares).toBe(0);
      expect(redirected.relayed).toBeNull();
      expect(redirected.answer?.kind === "response" && redirected.answer.body).toMatchObject({
        type: "redirect",
        leader: { serverId: "s2" },
      });

      // The proposer fell silent for leaderSilenceMs: the claim is taken, and s1's node campaigns.
      const taken = request(9, 2_000 + limits.leaderSilenceMs);
      expect(taken.prepares).toBe(6);
      expect(taken.relayed).toBeNull();
      expect(server.status().counters.requestsRelayed).toBe(2);

      scheduler.fireTimers(2_000 + limits.serverRelayExpiryMs + limits.heartbeatIntervalMs * 2);
      expect(server.status().counters.relaysExpired).toBe(1);
      expect(answerFrom("s2", unanswered.relayed as { id: number }, 6)).toEqual([]);
    });
  }

  it("campaigns for a request that calls the leader unresponsive when that leader's server is suspected", () => {
    const { transport, scheduler, server } = setup();
    server.createCell("vol-a", members);
    scheduler.run();
    // s2's node was heard as leader, but s2's server refuses connections: the failure detector
    // suspects it at once, so there is no one to relay to, and the node campaigns.
    hearProposer(transport, scheduler, proposerMessages["a leader's heartbeat"], 1_000);
    server.peerRefused("s2");
    const claim = claimUnresponsive(transport, scheduler, 1, 1_000);
    expect(claim.relayed).toBeNull();
    expect(claim.prepares).toBe(6);
    expect(server.status().counters.requestsRelayed).toBe(0);
  });

  it("gives silence as much longer as its own timers ran late before it takes a proposer or a peer for gone", () => {
    const { transport, scheduler, server } = setup();
    server.createCell("vol-a", members);
    server.createCell("vol-b", members);
    scheduler.run();
    const leader = members[1] as (typeof members)[number];
    // The heartbeat tick runs 700 ms late: the server's own event loop was held.
    const due = Math.min(...[...scheduler.timers.values()].map((t) => t.atMs));
    scheduler.fireTimers(due + 700);
    // s2's node leads both cells; s1 hears its heartbeats at 2,000 ms, and s2's server at 3,000.
    scheduler.now = 2_000;
    for (const cellKey of ["vol-a", "vol-b"]) {
      transport.handler?.("s2", {
        kind: "paxos",
        message: {
          cellKey,
          from: leader,
          to: members[0],
          epoch: 1,
          type: "heartbeat",
          ballot: makeBallot(1, leader.incarnation),
          commit: 0,
          round: 2,
        },
      } as ServerMessage);
    }
    scheduler.run();
    scheduler.now = 3_000;
    transport.handler?.("s2", { kind: "heartbeat" });
    scheduler.run();
    const request = (id: number, cellKey: string, now: number, leaderUnresponsive: boolean) => {
      clientWrite(transport, scheduler, { id, cellKey, now, leaderUnresponsive });
      // The cell's own prepares (a campaign of the other cell may be copying its own meanwhile).
      return transport.sent.filter(
        (m) =>
          m.message.kind === "paxos" &&
          m.message.message.type === "prepare" &&
          m.message.message.cellKey === cellKey,
      ).length;
    };
    // leaderSilenceMs of silence is not enough here, and neither is suspectAfterMs of s2's server.
    expect(request(1, "vol-a", 2_000 + limits.leaderSilenceMs, true)).toBe(0);
    expect(request(2, "vol-b", 3_000 + limits.suspectAfterMs + 1, false)).toBe(0);
    expect(server.status().counters.campaigns).toMatchObject({ takeover: 0, leader_suspected: 0 });
    // 700 ms more is.
    expect(request(3, "vol-a", 2_000 + limits.leaderSilenceMs + 700, true)).toBe(6);
    expect(request(4, "vol-b", 3_000 + limits.suspectAfterMs + 701, false)).toBe(6);
    expect(server.status().counters.campaigns).toMatchObject({ takeover: 1, leader_suspected: 1 });
  });

  it("counts how late its timers run, by bucket", () => {
    const { scheduler, server } = setup();
    const due = Math.min(...[...scheduler.timers.values()].map((t) => t.atMs));
    expect(due).toBeGreaterThan(0);
    expect(server.status().timerLateness.counts.every((n) => n === 0)).toBe(true);
    // The heartbeat tick runs 700 ms after it was due (a loop held by a long turn).
    scheduler.fireTimers(due + 700);
    const { counts, sumMs } = server.status().timerLateness;
    expect(sumMs).toBe(700);
    expect(counts[timerLatenessBucketsMs.indexOf(1000)]).toBe(1);
    expect(counts.reduce((a, b) => a + b, 0)).toBe(1);
  });

  it("tells a commit notice (a heartbeat of round 0) from the other heartbeats", () => {
    const envelope = { cellKey: "vol-a", from: members[0], to: members[1], epoch: 1, ballot: 5, commit: 3 };
    expect(paxosSendKind({ ...envelope, type: "heartbeat", round: 0 } as never)).toBe("commit_notice");
    expect(paxosSendKind({ ...envelope, type: "heartbeat", round: 2 } as never)).toBe("heartbeat");
    expect(
      paxosSendKind({ ...envelope, type: "accept", slot: 4, value: { kind: "noop", stampMs: 0 } } as never),
    ).toBe("accept");
  });

  it("sends one failure-detector heartbeat per peer per interval and nothing per cell while idle", () => {
    const { transport, scheduler, server } = setup();
    for (let i = 0; i < 100; i++) server.createCell(`vol-${i}`, members);
    scheduler.run();
    expect(transport.sent.filter((s) => s.message.kind === "paxos").length).toBe(0);
    expect(server.status().armedTimers).toBe(0);
  });
});

/** Timers that fire `earlyMs` before the instant they aimed at, as real timers against a separate clock may. */
class EarlyTimers implements Scheduler {
  now = 0;
  private readonly timers: { at: number; run: () => void }[] = [];
  constructor(private readonly earlyMs: number) {}
  nowMs(): number {
    return this.now;
  }
  setTimer(delayMs: number, callback: () => void): TimerHandle {
    this.timers.push({ at: this.now + delayMs - this.earlyMs, run: callback });
    return { id: this.timers.length };
  }
  clearTimer(): void {}
  defer(callback: () => void): void {
    callback();
  }
  advanceTo(endMs: number): void {
    for (let fired = 0; ; fired++) {
      if (fired > 1_000) throw new Error(`more than 1,000 timers fired by ${endMs} ms: a timer loop`);
      this.timers.sort((a, b) => a.at - b.at);
      const next = this.timers[0];
      if (next === undefined || next.at > endMs) break;
      this.timers.shift();
      this.now = Math.max(this.now, next.at);
      next.run();
    }
    this.now = endMs;
  }
}

describe("server heartbeats", () => {
  it("tick on multiples of the interval, once per interval even when timers fire early", () => {
    for (const [startMs, earlyMs] of [
      [0, 0],
      [1_000_000_123.4, 0],
      [1_000_000_123.4, 0.5],
    ] as const) {
      const transport = new Recorder();
      const scheduler = new EarlyTimers(earlyMs);
      scheduler.now = startMs;
      new Server({
        serverId: "s1",
        peers: ["s2", "s3"],
        storage: new MemoryStorage<Command>(),
        transport,
        scheduler,
        random: new Prng(1),
      });
      const ticks: number[] = [];
      const count = () =>
        transport.sent.filter((s) => s.message.kind === "heartbeat" && s.to === "s2").length;
      let seen = 0;
      const seconds = 30;
      for (let t = startMs; t < startMs + seconds * 1000; t += 1) {
        scheduler.advanceTo(t);
        if (count() > seen) {
          seen = count();
          ticks.push(scheduler.now);
        }
      }
      // 3.3 per second, each within a millisecond of a multiple of the interval.
      expect(ticks.length).toBeGreaterThanOrEqual(Math.floor((seconds * 1000) / 300) - 1);
      expect(ticks.length).toBeLessThanOrEqual(Math.ceil((seconds * 1000) / 300) + 1);
      for (const at of ticks) {
        const off = Math.min(at % 300, 300 - (at % 300));
        expect(off).toBeLessThanOrEqual(1);
      }
    }
  });
});

describe("a server without peers", () => {
  it("still evicts quiet nodes (its tick runs though it has no one to send heartbeats to)", () => {
    const scheduler = new EarlyTimers(0);
    const transport = new Recorder();
    const server = new Server({
      serverId: "s1",
      peers: ["s1"],
      storage: new MemoryStorage<Command>(),
      transport,
      scheduler,
      random: new Prng(1),
      residentIdleMs: 1_000,
    });
    server.createCell("vol-alone", [{ serverId: "s1", incarnation: 1 }]);
    expect(server.status().residentNodes).toBe(1);
    scheduler.advanceTo(5_000);
    expect(server.status().residentNodes).toBe(0);
    expect(server.counters.nodesEvicted).toBe(1);
    expect(transport.sent.filter((s) => s.message.kind === "heartbeat")).toEqual([]);
  });
});
