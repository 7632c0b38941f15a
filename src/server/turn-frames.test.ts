import { describe, expect, it } from "vitest";
import type { Command } from "../cell/index.ts";
import { Prng, type Scheduler, type TimerHandle } from "../core/index.ts";
import { MemoryStorage, type StorageBatch } from "../storage/index.ts";
import type { TransportPort } from "../transport/index.ts";
import { Server, type ServerMessage } from "./server.ts";

/** What the servers did, in order: each flush (the peers it sent frames to) and each storage write. */
type Event =
  | { readonly server: string; readonly kind: "flush"; readonly to: readonly string[] }
  | {
      readonly server: string;
      readonly kind: "write";
    };

interface Frame {
  readonly from: string;
  readonly to: string;
  readonly messages: readonly ServerMessage[];
}

class Hub {
  readonly events: Event[] = [];
  readonly frames: Frame[] = [];
  readonly handlers = new Map<string, (from: string, message: ServerMessage) => void>();
  readonly responses: ServerMessage[] = [];
}

class HubTransport implements TransportPort<ServerMessage> {
  private pending = new Map<string, ServerMessage[]>();
  constructor(
    readonly address: string,
    private readonly hub: Hub,
  ) {}
  send(to: string, message: ServerMessage): void {
    let messages = this.pending.get(to);
    if (messages === undefined) {
      messages = [];
      this.pending.set(to, messages);
    }
    messages.push(message);
  }
  flush(): void {
    // An empty flush is recorded too: every storage write then sits between two flushes.
    this.hub.events.push({ server: this.address, kind: "flush", to: [...this.pending.keys()] });
    for (const [to, messages] of this.pending) this.hub.frames.push({ from: this.address, to, messages });
    this.pending = new Map();
  }
  onMessage(handler: (from: string, message: ServerMessage) => void): void {
    this.hub.handlers.set(this.address, handler);
  }
}

class RecordingStorage extends MemoryStorage<Command> {
  constructor(
    private readonly server: string,
    private readonly hub: Hub,
  ) {
    super();
  }
  override write(batch: StorageBatch<Command>, done: (error: Error | null) => void): void {
    this.hub.events.push({ server: this.server, kind: "write" });
    super.write(batch, done);
  }
}

/** Deferred work runs when asked; timers never fire (the run is shorter than any of them). */
class Deferred implements Scheduler {
  readonly queue: (() => void)[] = [];
  nowMs(): number {
    return 0;
  }
  setTimer(): TimerHandle {
    return { id: 0 };
  }
  clearTimer(): void {}
  defer(callback: () => void): void {
    this.queue.push(callback);
  }
}

const serverIds = ["s1", "s2", "s3", "s4", "s5", "s6", "s7"];
const members = serverIds.map((serverId, i) => ({ serverId, incarnation: i + 1 }));

/** Seven servers, `cells` cells each led by the server its first write went to, and a write to each. */
function colony(cells: number) {
  const hub = new Hub();
  const scheduler = new Deferred();
  hub.handlers.set("c1", (_from, message) => hub.responses.push(message));
  const servers = serverIds.map(
    (serverId, i) =>
      new Server({
        serverId,
        peers: serverIds,
        storage: new RecordingStorage(serverId, hub),
        transport: new HubTransport(serverId, hub),
        scheduler,
        random: new Prng(i + 1),
      }),
  );
  // Odd cells list their members backwards: a leader's first followers then differ from cell to
  // cell, so a server's accepts and its acceptances go to some of the same peers.
  for (let c = 0; c < cells; c++) {
    const listed = c % 2 === 0 ? members : [...members].reverse();
    for (const server of servers) server.createCell(`vol-${c}`, listed);
  }
  /** Deliver every frame sent so far, then run the turns they started: as under load, a turn handles what several peers sent. */
  const step = (): boolean => {
    const frames = hub.frames.splice(0);
    for (const frame of frames) {
      const handler = hub.handlers.get(frame.to);
      for (const message of frame.messages) handler?.(frame.from, message);
    }
    const turns = scheduler.queue.splice(0);
    for (const turn of turns) turn();
    return frames.length > 0 || turns.length > 0;
  };
  /** Step until nothing moves (bounded). */
  const settle = () => {
    for (let rounds = 0; rounds < 1_000; rounds++) if (!step()) return;
    throw new Error("the colony did not settle within 1,000 rounds");
  };
  settle();
  const sessionSeq = new Map<number, number>();
  /** A client's write to cell `c`, sent to the server that leads it (or will, after its first write). */
  const request = (c: number) => {
    const seq = (sessionSeq.get(c) ?? 0) + 1;
    sessionSeq.set(c, seq);
    const leader = serverIds[c % serverIds.length] as string;
    hub.handlers.get(leader)?.("c1", {
      kind: "request",
      id: c * 1_000 + seq,
      cellKey: `vol-${c}`,
      body: {
        type: "command",
        leaderUnresponsive: false,
        command: {
          version: 1,
          session: c + 1,
          seq,
          newSession: seq === 1,
          op: {
            type: "txn",
            txn: { conditions: [], reads: [], writes: [{ item: "x", op: "put", value: 1n }] },
          },
        },
      },
    } as ServerMessage);
  };
  return { hub, servers, request, step, settle };
}

describe("a turn's frames", () => {
  it("send a peer that gets messages after the turn's storage write all of its messages then, in one frame", () => {
    const cells = 14;
    const { hub, request, step, settle } = colony(cells);
    // The first write to each cell elects its leader (two cells per server).
    for (let c = 0; c < cells; c++) request(c);
    settle();
    hub.events.length = 0;
    // Then writes that overlap: a new half of the cells is written at every step, so a server's
    // turn holds its followers' acceptances of one write and its own accepts of the next.
    for (let round = 0; round < 12; round++) {
      for (let c = round % 2; c < cells; c += 2) request(c);
      step();
    }
    settle();
    const results = hub.responses.filter((m) => m.kind === "response" && m.body.type === "result");
    expect(results.length).toBe(cells + 6 * cells);

    // For each storage write, the flush just before it (same server, same turn) and the flush
    // just after it (the batch's messages that waited for it): no peer may be in both.
    let checked = 0;
    let leadingAndFollowing = 0;
    for (let i = 0; i < hub.events.length; i++) {
      const event = hub.events[i] as Event;
      if (event.kind !== "write") continue;
      const before = hub.events[i - 1];
      const after = hub.events[i + 1];
      if (before?.kind !== "flush" || before.server !== event.server) continue;
      if (after?.kind !== "flush" || after.server !== event.server) continue;
      checked += 1;
      const early = new Set(before.to.filter((to) => to !== "c1"));
      const late = after.to.filter((to) => early.has(to));
      expect(late, `${event.server}: a peer got two frames around one storage write`).toEqual([]);
      if (early.size > 0) leadingAndFollowing += 1;
    }
    // The check saw turns with frames on both sides of a write (a leader's own accepts go early).
    expect(checked).toBeGreaterThan(10);
    expect(leadingAndFollowing).toBeGreaterThan(0);
  });
});
