/**
 * The simulator's kernel: one global event queue in simulated time, clocks per actor (offset and
 * rate), a network with loss, duplication, delay, reordering, partitions (including asymmetric
 * ones) and clogging, and disks that lose unsynced writes on a crash and may tear the last one.
 * Everything derives from one seed; every event feeds the trace hash.
 */
import {
  type Address,
  assert,
  type Prng,
  type RunningHash,
  type Scheduler,
  type TimerHandle,
} from "../core/index.ts";
import type { LoadResult, StorageBatch, StoragePort } from "../storage/index.ts";
import { MemoryStorage } from "../storage/index.ts";
import type { TransportPort } from "../transport/index.ts";

interface QueuedEvent {
  readonly atMs: number;
  readonly seq: number;
  readonly run: () => void;
  cancelled: boolean;
}

/** Binary min-heap of events ordered by (time, insertion order). */
export class EventQueue {
  private readonly heap: QueuedEvent[] = [];
  private seq = 0;
  nowMs = 0;
  executed = 0;

  get size(): number {
    return this.heap.length;
  }

  schedule(atMs: number, run: () => void): QueuedEvent {
    const event: QueuedEvent = { atMs: Math.max(atMs, this.nowMs), seq: this.seq++, run, cancelled: false };
    const heap = this.heap;
    heap.push(event);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(heap[i] as QueuedEvent, heap[parent] as QueuedEvent)) break;
      [heap[i], heap[parent]] = [heap[parent] as QueuedEvent, heap[i] as QueuedEvent];
      i = parent;
    }
    return event;
  }

  private pop(): QueuedEvent | undefined {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop();
    if (heap.length > 0 && last !== undefined) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < heap.length && before(heap[l] as QueuedEvent, heap[m] as QueuedEvent)) m = l;
        if (r < heap.length && before(heap[r] as QueuedEvent, heap[m] as QueuedEvent)) m = r;
        if (m === i) break;
        [heap[i], heap[m]] = [heap[m] as QueuedEvent, heap[i] as QueuedEvent];
        i = m;
      }
    }
    return top;
  }

  /** Run events until `untilMs` (inclusive) or until `stop()` says so or `eventsMax` ran. */
  runUntil(untilMs: number, eventsMax: number, stop: () => boolean = () => false): void {
    let ran = 0;
    while (this.heap.length > 0 && ran < eventsMax) {
      const next = this.heap[0] as QueuedEvent;
      if (next.atMs > untilMs) break;
      this.pop();
      if (next.cancelled) continue;
      this.nowMs = next.atMs;
      next.run();
      ran += 1;
      this.executed += 1;
      if (stop()) return;
    }
    if (this.nowMs < untilMs && (this.heap.length === 0 || (this.heap[0] as QueuedEvent).atMs > untilMs)) {
      this.nowMs = untilMs;
    }
  }
}

function before(a: QueuedEvent, b: QueuedEvent): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.seq < b.seq);
}

/** A clock of one actor: local = offset + global * rate. */
export class SimClock {
  constructor(
    private readonly queue: EventQueue,
    public offsetMs: number,
    public rate: number,
  ) {
    assert(rate > 0, "a clock rate must be positive");
  }

  nowMs(): number {
    return Math.floor(this.offsetMs + this.queue.nowMs * this.rate);
  }

  /** Global delay for a local delay. */
  toGlobal(localDelayMs: number): number {
    return localDelayMs / this.rate;
  }
}

/**
 * The scheduler port of one actor incarnation. `kill()` makes every pending callback of this
 * incarnation a no-op (a crashed process runs nothing).
 */
export class SimScheduler implements Scheduler {
  private alive = true;
  private nextId = 1;
  private readonly timers = new Map<number, QueuedEvent>();

  constructor(
    private readonly queue: EventQueue,
    readonly clock: SimClock,
  ) {}

  nowMs(): number {
    return this.clock.nowMs();
  }

  setTimer(delayMs: number, callback: () => void): TimerHandle {
    const id = this.nextId++;
    const event = this.queue.schedule(this.queue.nowMs + this.clock.toGlobal(Math.max(0, delayMs)), () => {
      this.timers.delete(id);
      if (this.alive) callback();
    });
    this.timers.set(id, event);
    return { id };
  }

  clearTimer(handle: TimerHandle): void {
    const event = this.timers.get(handle.id);
    if (event !== undefined) event.cancelled = true;
    this.timers.delete(handle.id);
  }

  defer(callback: () => void): void {
    this.queue.schedule(this.queue.nowMs, () => {
      if (this.alive) callback();
    });
  }

  kill(): void {
    this.alive = false;
    for (const event of this.timers.values()) event.cancelled = true;
    this.timers.clear();
  }

  get isAlive(): boolean {
    return this.alive;
  }
}

export interface NetworkFaults {
  /** Probability a frame is lost. */
  lossRate: number;
  /** Probability a frame is delivered twice. */
  duplicateRate: number;
  /** Base one-way delay and uniform jitter (jitter reorders frames). */
  delayMsMin: number;
  delayMsJitter: number;
}

/**
 * The simulated network. Messages sent to one destination in one turn travel as one frame;
 * the fate of a frame (lost, duplicated, delayed) is drawn from the network's generator.
 */
export class SimNetwork {
  readonly faults: NetworkFaults = { lossRate: 0, duplicateRate: 0, delayMsMin: 1, delayMsJitter: 1 };
  /** Blocked directed links "from>to". */
  private readonly blocked = new Set<string>();
  /** Extra delay per directed link (clogging), until a global time. */
  private readonly clogged = new Map<string, { extraMs: number; untilMs: number }>();
  private readonly handlers = new Map<Address, (from: Address, message: unknown) => void>();
  framesSent = 0;
  framesLost = 0;
  messagesDelivered = 0;

  constructor(
    private readonly queue: EventQueue,
    private readonly random: Prng,
    private readonly trace: RunningHash,
    private readonly describe: (message: unknown) => string,
  ) {}

  attach(address: Address, handler: (from: Address, message: unknown) => void): void {
    this.handlers.set(address, handler);
  }

  detach(address: Address): void {
    this.handlers.delete(address);
  }

  block(from: Address, to: Address): void {
    this.blocked.add(`${from}>${to}`);
  }

  clog(from: Address, to: Address, extraMs: number, untilMs: number): void {
    this.clogged.set(`${from}>${to}`, { extraMs, untilMs });
  }

  heal(): void {
    this.blocked.clear();
    this.clogged.clear();
    this.faults.lossRate = 0;
    this.faults.duplicateRate = 0;
  }

  isBlocked(from: Address, to: Address): boolean {
    return this.blocked.has(`${from}>${to}`);
  }

  sendFrame(from: Address, to: Address, messages: readonly unknown[]): void {
    if (messages.length === 0) return;
    this.framesSent += 1;
    const link = `${from}>${to}`;
    const random = this.random;
    const lost = this.blocked.has(link) || random.chance(this.faults.lossRate);
    const copies = lost ? 0 : random.chance(this.faults.duplicateRate) ? 2 : 1;
    if (copies === 0) this.framesLost += 1;
    for (let copy = 0; copy < copies; copy++) {
      let delay = this.faults.delayMsMin + random.float() * this.faults.delayMsJitter;
      const clog = this.clogged.get(link);
      if (clog !== undefined && clog.untilMs > this.queue.nowMs) delay += clog.extraMs;
      this.queue.schedule(this.queue.nowMs + delay, () => {
        const handler = this.handlers.get(to);
        if (handler === undefined) return;
        for (const message of messages) {
          this.messagesDelivered += 1;
          this.trace
            .addNumber(Math.round(this.queue.nowMs * 1000))
            .addString(from)
            .addString(to);
          if (message instanceof Uint8Array) this.trace.addBytes(message);
          else this.trace.addString(this.describe(message));
          handler(from, message);
        }
      });
    }
  }
}

/** What a codec returns for a message the receiving transport drops (sim/corrupt-wire.ts). */
export const droppedOnWire = Symbol("dropped on the wire");

/** How messages become bytes and back (the real wire codec, so the simulator runs it too). */
export interface MessageCodec<M> {
  encode(message: M): Uint8Array;
  /** Throws on malformed bytes. */
  decode(bytes: Uint8Array): M | typeof droppedOnWire;
}

/**
 * The transport port of one actor over the simulated network. With a codec, every message is
 * encoded when sent and decoded when delivered, as on a real connection: no object is shared
 * between sender and receiver, and the codec is exercised by every simulated run.
 */
export class SimTransport<M> implements TransportPort<M> {
  private readonly pending = new Map<Address, unknown[]>();
  private handler: ((from: Address, message: M) => void) | null = null;
  private open = true;

  constructor(
    readonly address: Address,
    private readonly network: SimNetwork,
    private readonly codec: MessageCodec<M> | null = null,
  ) {
    network.attach(address, (from, message) => {
      if (!this.open || this.handler === null) return;
      const codec = this.codec;
      const decoded = codec === null ? (message as M) : codec.decode(message as Uint8Array);
      if (decoded === droppedOnWire) return;
      this.handler(from, decoded);
    });
  }

  send(to: Address, message: M): void {
    if (!this.open) return;
    let frame = this.pending.get(to);
    if (frame === undefined) {
      frame = [];
      this.pending.set(to, frame);
    }
    frame.push(this.codec === null ? message : this.codec.encode(message));
  }

  flush(): void {
    if (!this.open) return;
    for (const [to, messages] of this.pending) this.network.sendFrame(this.address, to, messages);
    this.pending.clear();
  }

  onMessage(handler: (from: Address, message: M) => void): void {
    this.handler = handler;
  }

  close(): void {
    this.open = false;
    this.pending.clear();
    this.network.detach(this.address);
  }
}

/**
 * A simulated disk: durable state plus at most one batch being written. A crash loses the batch
 * in flight, or, when the disk tears, keeps a random prefix of its node writes.
 */
export class SimDisk<C> implements StoragePort<C> {
  readonly durable = new MemoryStorage<C>();
  private inFlight: { batch: StorageBatch<C>; event: { cancelled: boolean } } | null = null;
  writeLatencyMs = 0.2;
  batches = 0;
  tornWrites = 0;
  lostWrites = 0;

  constructor(
    private readonly queue: EventQueue,
    private readonly random: Prng,
  ) {}

  /** Cells whose stored node record is damaged (bit rot): they load as corrupt. */
  private readonly damaged = new Set<string>();

  load(cellKey: string): LoadResult<C> {
    if (this.damaged.has(cellKey))
      return { status: "corrupt", detail: `cell ${cellKey}: node record fails its checksum (simulated)` };
    return this.durable.load(cellKey);
  }

  /** Damages the stored node record of a cell, as the lmdb adapter would find it. */
  damage(cellKey: string): boolean {
    if (this.durable.load(cellKey).status !== "found") return false;
    this.damaged.add(cellKey);
    return true;
  }

  hostedCells(): string[] {
    return this.durable.hostedCells();
  }

  pointers(nowMs?: number) {
    return this.durable.pointers(nowMs);
  }

  write(batch: StorageBatch<C>, done: (error: Error | null) => void): void {
    assert(this.inFlight === null, "one storage batch at a time");
    this.batches += 1;
    const event = this.queue.schedule(
      this.queue.nowMs + this.writeLatencyMs * (0.5 + this.random.float()),
      () => {
        this.inFlight = null;
        // As on lmdb: a founding write replaces a damaged record, and a removal deletes it
        // whatever incarnation it names; any other write to it fails the batch.
        const needsIntact = batch.writes.filter(
          (write) => write.snapshot === null || write.founding !== true,
        );
        for (const { cellKey } of needsIntact) {
          if (!this.damaged.has(cellKey)) continue;
          done(new Error(`cell ${cellKey}: node record fails its checksum; the write needs it intact`));
          return;
        }
        for (const write of batch.writes) this.damaged.delete(write.cellKey);
        const removed = batch.removed.map((removal) => {
          if (!this.damaged.has(removal.cellKey)) return removal;
          this.damaged.delete(removal.cellKey);
          const stored = this.durable.load(removal.cellKey);
          return stored.status === "found"
            ? { ...removal, incarnation: stored.node.node.incarnation }
            : removal;
        });
        this.durable.applyBatch({ ...batch, removed });
        done(null);
      },
    );
    this.inFlight = { batch, event };
  }

  /** Power loss: the batch in flight is lost, or torn (a prefix of its node writes survives). */
  crash(tearProbability: number): void {
    const inFlight = this.inFlight;
    this.inFlight = null;
    if (inFlight === null) return;
    inFlight.event.cancelled = true;
    if (this.random.chance(tearProbability) && inFlight.batch.writes.length > 0) {
      this.tornWrites += 1;
      const writes = inFlight.batch.writes;
      const keep = this.random.below(writes.length);
      for (let i = 0; i < keep; i++) this.durable.applyWrite(writes[i] as (typeof writes)[number]);
      // The last write itself is torn: a prefix of its entries, maybe without its promise.
      const torn = writes[keep];
      if (torn !== undefined) {
        const entries = torn.entries.slice(0, this.random.below(torn.entries.length + 1));
        this.durable.applyWrite({ ...torn, promised: null, snapshot: null, truncateThrough: 0, entries });
      }
    } else {
      this.lostWrites += 1;
    }
  }
}
