/**
 * The `servers` benchmark's process (started by scripts/bench/servers.ts with the server's Node.js
 * flags): 7 `Server`s in this one process over an in-memory bus, storage that keeps nothing and
 * acknowledges at once, and closed-loop writers sending requests straight to the cells' leaders.
 * No sockets, no disk: what is measured is the CPU of the servers, replicas and state machines
 * per commit. With `disk`, each server has its own lmdb storage instead (journal, checkpoints on
 * a worker thread, fsync), in a temporary directory removed at the end, so that what storage
 * costs per commit is measured in one process, where a CPU profile can see it. It prints one
 * JSON line with what completed in the measured window.
 *
 *   node <server flags> --import tsx scripts/bench/servers-run.ts '<ServersRunOptions as JSON>'
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ClientRequest, type Command, commandCodec } from "../../src/cell/index.ts";
import { checkpointWorkerModule } from "../../src/cli/server-process.ts";
import { type Address, Prng, type Scheduler, type TimerHandle } from "../../src/core/index.ts";
import {
  decodeServerMessage,
  encodeServerMessage,
  Server,
  type ServerMessage,
} from "../../src/server/index.ts";
import { LmdbStorage, type StoragePort } from "../../src/storage/index.ts";
import type { TransportPort } from "../../src/transport/index.ts";

export interface ServersRunOptions {
  readonly cells: number;
  readonly writers: number;
  /** Encode and decode every message, as the TCP transport does (frames and HMAC excepted). */
  readonly wire: boolean;
  /** Each server on its own lmdb storage (journal, checkpoints, fsync) instead of keeping nothing. */
  readonly disk: boolean;
  readonly warmupSeconds: number;
  readonly seconds: number;
}

export interface ServersRunResult {
  readonly commits: number;
  /** Answers other than a commit (redirects while leadership settles), each retried. */
  readonly retries: number;
  readonly windowMs: number;
  readonly cpuUs: number;
  readonly messages: number;
}

const options = JSON.parse(process.argv[2] as string) as ServersRunOptions;

/** Real time, with timers run by the loop below and deferred work run before them. */
class LoopScheduler implements Scheduler {
  deferred: (() => void)[] = [];
  private readonly timers = new Map<number, { readonly atMs: number; readonly callback: () => void }>();
  private nextId = 1;

  nowMs(): number {
    return performance.now();
  }
  setTimer(delayMs: number, callback: () => void): TimerHandle {
    const id = this.nextId++;
    this.timers.set(id, { atMs: performance.now() + delayMs, callback });
    return { id };
  }
  clearTimer(handle: TimerHandle): void {
    this.timers.delete(handle.id);
  }
  defer(callback: () => void): void {
    this.deferred.push(callback);
  }
  runDeferred(): void {
    while (this.deferred.length > 0) {
      const due = this.deferred;
      this.deferred = [];
      for (const callback of due) callback();
    }
  }
  fireDue(): void {
    const now = performance.now();
    for (const [id, timer] of this.timers) {
      if (timer.atMs > now) continue;
      this.timers.delete(id);
      timer.callback();
    }
  }
}

/** Keeps nothing: every node stays resident for the run, and a batch is durable at once. */
const discarding: StoragePort<Command> = {
  load: () => ({ status: "absent" }),
  hostedCells: () => [],
  pointers: () => [],
  write: (_batch, done) => done(null),
};

interface Envelope {
  readonly to: Address;
  readonly from: Address;
  readonly message: ServerMessage | Uint8Array;
}

const scheduler = new LoopScheduler();
let bus: Envelope[] = [];
let messages = 0;
const receivers = new Map<Address, (from: Address, message: ServerMessage) => void>();
const post = (to: Address, from: Address, message: ServerMessage) => {
  messages += 1;
  bus.push({ to, from, message: options.wire ? encodeServerMessage(message).slice() : message });
};

class Bus implements TransportPort<ServerMessage> {
  constructor(readonly address: Address) {}
  send(to: Address, message: ServerMessage): void {
    post(to, this.address, message);
  }
  flush(): void {}
  onMessage(handler: (from: Address, message: ServerMessage) => void): void {
    receivers.set(this.address, handler);
  }
}

const ids = Array.from({ length: 7 }, (_, i) => `s${i + 1}`);
const members = ids.map((serverId, i) => ({ serverId, incarnation: i + 1 }));
const dataRoot = options.disk ? mkdtempSync(join(tmpdir(), "physalia-servers-")) : null;
const storages: StoragePort<Command>[] = [];
for (const id of ids) {
  storages.push(
    dataRoot === null
      ? discarding
      : await LmdbStorage.open({
          path: join(dataRoot, id),
          codec: commandCodec,
          checkpointWorker: checkpointWorkerModule,
        }),
  );
}
const servers = ids.map(
  (id, i) =>
    new Server({
      serverId: id,
      peers: ids.filter((peer) => peer !== id),
      storage: storages[i] as StoragePort<Command>,
      transport: new Bus(id),
      scheduler,
      random: new Prng(7),
      // Discarding storage keeps nothing, so a node must never be evicted (it could not be
      // loaded); on disk every node stays resident too, so that both measure the same work.
      residentIdleMs: Number.MAX_SAFE_INTEGER,
    }),
);
const cellKeys = Array.from({ length: options.cells }, (_, i) => `bench-${i}`);
for (const server of servers) for (const cellKey of cellKeys) server.createCell(cellKey, members);

// Writers: each puts a 16-byte value under one of 4 items of a random cell, as `throughput`'s do.
// Sessions are kept as the SDK keeps them: a pool per cell, one session per writer in the cell.
interface Session {
  readonly id: number;
  seq: number;
  busy: boolean;
}
const client = "client";
const value = new Uint8Array(16).fill(0x61);
const random = new Prng(3);
const pools = new Map<string, Session[]>();
const leaders = new Map<string, Address>();
const inFlight = new Map<
  number,
  { readonly writer: number; readonly session: Session; readonly request: ClientRequest }
>();
let nextSessionId = 1;
let nextRequestId = 1;
let measuring = false;
let commits = 0;
let retries = 0;

function send(writer: number, session: Session, request: ClientRequest): void {
  const id = nextRequestId++;
  const sent = { ...request, id };
  inFlight.set(id, { writer, session, request: sent });
  post(leaders.get(request.cellKey) ?? (ids[random.below(ids.length)] as string), client, sent);
}

function write(writer: number): void {
  const cellKey = cellKeys[random.below(cellKeys.length)] as string;
  let pool = pools.get(cellKey);
  if (pool === undefined) {
    pool = [];
    pools.set(cellKey, pool);
  }
  let session = pool.find((s) => !s.busy);
  if (session === undefined) {
    session = { id: nextSessionId++, seq: 0, busy: false };
    pool.push(session);
  }
  session.busy = true;
  session.seq += 1;
  send(writer, session, putRequest(cellKey, session, `k${session.seq & 3}`));
}

/** The command request of a session's next put (its id is set when it is sent). */
function putRequest(cellKey: string, session: Session, item: string): ClientRequest {
  return {
    kind: "request",
    id: 0,
    cellKey,
    body: {
      type: "command",
      leaderUnresponsive: false,
      command: {
        version: 1,
        session: session.id,
        seq: session.seq,
        newSession: session.seq === 1,
        op: { type: "txn", txn: { conditions: [], reads: [], writes: [{ item, op: "put", value }] } },
      },
    },
  };
}

receivers.set(client, (_from, message) => {
  if (message.kind !== "response") return;
  const sent = inFlight.get(message.id);
  if (sent === undefined) return;
  inFlight.delete(message.id);
  const body = message.body;
  const cellKey = sent.request.cellKey;
  if (body.type === "result" && body.result.kind === "txn" && body.result.result.status === "committed") {
    sent.session.busy = false;
    if (sent.writer === primer) {
      primed += 1;
      return;
    }
    if (measuring) commits += 1;
    write(sent.writer);
    return;
  }
  // Anything else (a redirect while leadership settles, an error): the same request again, to
  // the leader named or to a random member, as the SDK retries it.
  if (measuring) retries += 1;
  if (body.type === "redirect" && body.leader !== null) leaders.set(cellKey, body.leader.serverId);
  else leaders.delete(cellKey);
  send(sent.writer, sent.session, sent.request);
});

function pump(): void {
  scheduler.runDeferred();
  const delivering = bus;
  bus = [];
  for (const envelope of delivering) {
    const message =
      envelope.message instanceof Uint8Array ? decodeServerMessage(envelope.message) : envelope.message;
    receivers.get(envelope.to)?.(envelope.from, message);
  }
  scheduler.fireDue();
}

/**
 * One pump; on lmdb storage, then a turn of the event loop, through which the storage
 * acknowledges its batches and hears its checkpoint worker.
 */
async function step(): Promise<void> {
  pump();
  if (dataRoot !== null) await new Promise<void>((resolve) => setImmediate(resolve));
}

// Every cell elects its leader first, one write each, so that the window measures commits of
// cells that have one, whatever their number (a first write to a cell starts an election).
let primed = 0;
const primer = options.writers;
for (const cellKey of cellKeys) {
  const session: Session = { id: nextSessionId++, seq: 1, busy: true };
  pools.set(cellKey, [session]);
  send(primer, session, putRequest(cellKey, session, "k0"));
}
const primeDeadline = performance.now() + 120_000;
while (primed < cellKeys.length) {
  if (performance.now() > primeDeadline)
    throw new Error(`only ${primed} of ${cellKeys.length} cells elected a leader in 120 s`);
  await step();
}

for (let writer = 0; writer < options.writers; writer++) write(writer);
const warmupEnd = performance.now() + options.warmupSeconds * 1000;
while (performance.now() < warmupEnd) {
  await step();
}
measuring = true;
const messagesBefore = messages;
const cpuBefore = process.cpuUsage();
const started = performance.now();
const end = started + options.seconds * 1000;
while (performance.now() < end) {
  await step();
}
const cpu = process.cpuUsage(cpuBefore);
const result: ServersRunResult = {
  commits,
  retries,
  windowMs: performance.now() - started,
  cpuUs: cpu.user + cpu.system,
  messages: messages - messagesBefore,
};
for (const server of servers) server.stop();
for (const storage of storages) if (storage instanceof LmdbStorage) await storage.close();
if (dataRoot !== null) rmSync(dataRoot, { recursive: true, force: true });
console.log(JSON.stringify(result));
process.exit(0);
