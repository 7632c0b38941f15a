/**
 * One process of the per-cell replication floor (`npm run bench -- floor --per-cell`): the
 * message pattern of a steady-state 7-node cell (an established leader, no failures), with the
 * least work per message that pattern allows, and nothing else of a database: no elections, no
 * retransmission, no sessions, no lmdb, no evictions. It tells what a write costs on this machine
 * when every write travels as its own cell's messages, as in Physalia, rather than in one
 * replication stream per leader, as in the plain floor (floor-replica.ts).
 *
 * Each key is a cell; the replica its key hashes to leads it. Per cell, one slot in flight; the
 * requests that arrive meanwhile go together in the next slot. A slot's accept goes at once to
 * 3 followers, which journal it and acknowledge it; with the leader's own journal that is 4 of 7.
 * Once it is chosen the leader answers the requests. As Physalia's leaders do (limits.ts:
 * commitNoticeDelayMs, acceptDeferMs), it tells those 3 followers the commit index 10 ms later
 * (a notice) unless the cell's next accept carries it first, and holds the accepts of the other
 * 3 followers for up to 40 ms, then sends them with the commit index past their slots, so that
 * those followers journal and apply them without acknowledging. Per write: 6 accepts, 3
 * acknowledgements, up to 3 notices, about what Physalia sends in its `throughput` run (5.98,
 * 3.91 and 2.93). Every replica applies each chosen slot to its copy of the cell (a map of
 * items). Unlike Physalia's, a leader does not route around a slow follower: it waits for all 3.
 *
 * Frames between replicas carry an HMAC-SHA256 tag under a key, checked on receipt (the
 * project's FrameKey). In each event-loop turn a replica journals what it proposed and accepted
 * in one O_DSYNC write, and only then sends its acknowledgements.
 *
 *   floor-cells-replica.ts <index> <directory> <port>,<port>,... [journal MiB, default 64]
 *   (prints "ready" once it has dialled every other replica)
 *
 * A frame between replicas (after u32 length | u8 type 16) holds records of any cells, each
 *   u8 1 (accept) | u16 key length | key | u32 slot | u32 commit | u16 value length | value
 *   u8 2 (vote)   | u16 key length | key | u32 slot
 *   u8 3 (notice) | u16 key length | key | u32 commit
 * and ends with its 32-byte tag over everything after the length: one frame per peer and turn,
 * as Physalia's transport sends.
 * A value is one or more commands: u16 item length | item | u16 bytes length | bytes.
 */
import type { Socket } from "node:net";
import { ByteWriter } from "../../src/core/index.ts";
import { FrameKey } from "../../src/transport/frame.ts";
import { FloorJournal, frame, frameType, type Incoming, replicaArguments, runReplica } from "./floor-wire.ts";

const args = replicaArguments("floor-cells-replica.ts");
const self = args.self;
const replicas = args.ports.length;
const majority = Math.floor(replicas / 2) + 1;
const prompt = majority - 1;
/** As Physalia's limits: commitNoticeDelayMs and acceptDeferMs. */
const noticeDelayMs = 10;
const deferMs = 40;
const cellsFrame = 16;
const record = { accept: 1, vote: 2, notice: 3 } as const;
const tagBytes = 32;
const padBytes = 64;
/** The same key in every replica: this is a benchmark, not a colony. */
const key = new FrameKey(Buffer.alloc(32, 7));

// ---- journal: a turn's records gathered here, then written in one O_DSYNC write.
const journal = new FloorJournal(args.directory, self, args.journalMiB);
const journalTurn = new ByteWriter(1024 * 1024);

function flushJournal(): void {
  if (journalTurn.size === 0) return;
  journal.append(journalTurn.view());
  journalTurn.clear();
}

// ---- outgoing frames: records laid out after room for the pad, the tag left room after them.
class Outgoing {
  buffer = Buffer.allocUnsafe(64 * 1024);
  used = 0;
  constructor() {
    this.reset();
  }
  reset(): void {
    // [pad 64][u32 length][u8 type]: the tag covers the type and the records.
    this.used = padBytes + 5;
  }
  get empty(): boolean {
    return this.used === padBytes + 5;
  }
  reserve(bytes: number): void {
    if (this.used + bytes + tagBytes <= this.buffer.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.used + bytes + tagBytes));
    this.buffer.copy(grown, 0, 0, this.used);
    this.buffer = grown;
  }
  /** The frame, tagged: a copy, so the buffer can be reused at once. */
  take(): Buffer {
    const b = this.buffer;
    b[padBytes + 4] = cellsFrame;
    // The tag covers [type .. records]: the inner pad goes right before the type (over the
    // length, written afterwards), so they are tagged where they lie.
    const padded = b.subarray(4);
    key.padInto(padded);
    key.tagPadded(padded, this.used - 4, b, this.used);
    const end = this.used + tagBytes;
    b.writeUInt32LE(end - padBytes - 4, padBytes);
    const frame = Buffer.from(b.subarray(padBytes, end));
    this.reset();
    return frame;
  }
}

const out = args.ports.map(() => ({
  /** What goes at the end of this turn. */
  now: new Outgoing(),
  /** Accepts held for a follower outside the majority, sent every deferMs. */
  deferred: new Outgoing(),
}));
const peers = new Array<Socket | null>(replicas).fill(null);
function outTo(peer: number): (typeof out)[number] {
  return out[peer] as (typeof out)[number];
}

function putKey(o: Outgoing, type: number, cellKey: string): void {
  o.reserve(3 + cellKey.length);
  o.buffer[o.used] = type;
  o.buffer.writeUInt16LE(cellKey.length, o.used + 1);
  o.buffer.write(cellKey, o.used + 3, "latin1");
  o.used += 3 + cellKey.length;
}

function putAccept(o: Outgoing, cellKey: string, slot: number, commit: number, value: Buffer): void {
  putKey(o, record.accept, cellKey);
  o.reserve(10 + value.length);
  o.buffer.writeUInt32LE(slot, o.used);
  o.buffer.writeUInt32LE(commit, o.used + 4);
  o.buffer.writeUInt16LE(value.length, o.used + 8);
  o.buffer.set(value, o.used + 10);
  o.used += 10 + value.length;
}

function putNumber(o: Outgoing, type: number, cellKey: string, n: number): void {
  putKey(o, type, cellKey);
  o.reserve(4);
  o.buffer.writeUInt32LE(n, o.used);
  o.used += 4;
}

// ---- the cells this replica holds a node of
interface Waiting {
  readonly id: number;
  readonly client: Socket;
}
interface Cell {
  readonly key: string;
  readonly items: Map<string, Buffer>;
  // as a follower: accepted slots not yet applied, in slot order
  readonly accepted: { slot: number; value: Buffer }[];
  applied: number;
  // as the leader
  nextSlot: number;
  inflightSlot: number;
  inflightVotes: number;
  inflightValue: Buffer | null;
  inflightClients: Waiting[];
  queued: Buffer[];
  queuedClients: Waiting[];
  /** A commit its prompt followers have not been told (no later accept carried it). */
  noticeOwed: number;
}
const cells = new Map<string, Cell>();
function cellOf(cellKey: string): Cell {
  let cell = cells.get(cellKey);
  if (cell === undefined) {
    cell = {
      key: cellKey,
      items: new Map(),
      accepted: [],
      applied: 0,
      nextSlot: 1,
      inflightSlot: 0,
      inflightVotes: 0,
      inflightValue: null,
      inflightClients: [],
      queued: [],
      queuedClients: [],
      noticeOwed: 0,
    };
    cells.set(cellKey, cell);
  }
  return cell;
}

/** Applies a value's commands to the cell's items. */
function apply(cell: Cell, value: Buffer): void {
  let at = 0;
  while (at < value.length) {
    const itemLength = value.readUInt16LE(at);
    const item = value.toString("latin1", at + 2, at + 2 + itemLength);
    at += 2 + itemLength;
    const length = value.readUInt16LE(at);
    cell.items.set(item, value.subarray(at + 2, at + 2 + length));
    at += 2 + length;
  }
}

function applyThrough(cell: Cell, commit: number): void {
  while (cell.accepted.length > 0 && (cell.accepted[0] as { slot: number }).slot <= commit) {
    const next = cell.accepted.shift() as { slot: number; value: Buffer };
    if (next.slot > cell.applied) {
      apply(cell, next.value);
      cell.applied = next.slot;
    }
  }
}

/** The followers a leader sends its accept to at once, and those that get it once chosen. */
const followers = Array.from({ length: replicas - 1 }, (_, i) => (self + 1 + i) % replicas);

// ---- notices and deferred accepts, sent on timers
const noticesOwed: Cell[] = [];
let noticeTimer: NodeJS.Timeout | null = null;
let deferTimer: NodeJS.Timeout | null = null;
function armTimers(): void {
  if (noticeTimer === null) noticeTimer = setTimeout(sendNotices, noticeDelayMs);
  if (deferTimer === null) deferTimer = setTimeout(sendDeferred, deferMs);
}
/** The commits no accept has carried to the prompt followers since. */
function sendNotices(): void {
  noticeTimer = null;
  for (const cell of noticesOwed.splice(0)) {
    if (cell.noticeOwed === 0) continue;
    for (let i = 0; i < prompt; i++)
      putNumber(outTo(followers[i] as number).now, record.notice, cell.key, cell.noticeOwed);
    cell.noticeOwed = 0;
  }
  sendFrames();
}
function sendDeferred(): void {
  deferTimer = null;
  for (let peer = 0; peer < replicas; peer++) {
    const held = outTo(peer).deferred;
    if (!held.empty) peers[peer]?.write(held.take());
  }
}

// ---- the turn
const proposing: Cell[] = [];
let acksOwed: { leader: number; cellKey: string; slot: number }[] = [];
const replies = new Map<Socket, Buffer[]>();
let turnScheduled = false;
function scheduleTurn(): void {
  if (turnScheduled) return;
  turnScheduled = true;
  setImmediate(turn);
}

function propose(cell: Cell): void {
  const value = cell.queued.length === 1 ? (cell.queued[0] as Buffer) : Buffer.concat(cell.queued);
  cell.inflightSlot = cell.nextSlot++;
  cell.inflightValue = value;
  cell.inflightVotes = 0;
  cell.inflightClients = cell.queuedClients;
  cell.queued = [];
  cell.queuedClients = [];
  const commit = cell.inflightSlot - 1;
  cell.noticeOwed = 0;
  for (let i = 0; i < prompt; i++)
    putAccept(outTo(followers[i] as number).now, cell.key, cell.inflightSlot, commit, value);
  journalTurn.uint(cell.inflightSlot).raw(value);
}

function turn(): void {
  turnScheduled = false;
  for (const cell of proposing) propose(cell);
  const proposed = proposing.splice(0);
  // What this turn proposed and accepted is in the journal before anything acknowledges it.
  flushJournal();
  for (const cell of proposed) vote(cell, self);
  for (const { leader, cellKey, slot } of acksOwed) putNumber(outTo(leader).now, record.vote, cellKey, slot);
  acksOwed = [];
  sendFrames();
  for (const [client, list] of replies)
    if (!client.destroyed) client.write(list.length === 1 ? (list[0] as Buffer) : Buffer.concat(list));
  replies.clear();
}

function sendFrames(): void {
  for (let peer = 0; peer < replicas; peer++) {
    const now = outTo(peer).now;
    if (!now.empty) peers[peer]?.write(now.take());
  }
}

function vote(cell: Cell, voter: number): void {
  cell.inflightVotes |= 1 << voter;
  let votes = 0;
  for (let v = cell.inflightVotes; v !== 0; v &= v - 1) votes += 1;
  if (votes < majority) return;
  const slot = cell.inflightSlot;
  const value = cell.inflightValue as Buffer;
  apply(cell, value);
  cell.applied = slot;
  for (let i = prompt; i < followers.length; i++)
    putAccept(outTo(followers[i] as number).deferred, cell.key, slot, slot, value);
  if (cell.noticeOwed === 0) noticesOwed.push(cell);
  cell.noticeOwed = slot;
  armTimers();
  for (const w of cell.inflightClients) {
    let list = replies.get(w.client);
    if (list === undefined) {
      list = [];
      replies.set(w.client, list);
    }
    list.push(frame(frameType.reply, 4, (b) => b.writeUInt32LE(w.id, 5)));
  }
  cell.inflightSlot = 0;
  cell.inflightValue = null;
  cell.inflightClients = [];
  if (cell.queued.length > 0) proposing.push(cell);
  scheduleTurn();
}

// ---- receiving
let rejected = 0;

function onBody(from: Incoming, body: Buffer): void {
  const type = body[0];
  if (type === frameType.request) {
    const id = body.readUInt32LE(1);
    const entryLength = body.readUInt16LE(5);
    const keyLength = body.readUInt16LE(7);
    const cellKey = body.toString("latin1", 9, 9 + keyLength);
    const bytes = body.subarray(9 + keyLength, 7 + entryLength);
    const cell = cellOf(cellKey);
    // One command: item "k<id mod 4>", as the load's writers use 4 items per cell.
    const command = Buffer.allocUnsafe(2 + 2 + 2 + bytes.length);
    command.writeUInt16LE(2, 0);
    command.write(`k${id & 3}`, 2, "latin1");
    command.writeUInt16LE(bytes.length, 4);
    command.set(bytes, 6);
    cell.queued.push(command);
    cell.queuedClients.push({ id, client: from.socket });
    if (cell.inflightSlot === 0 && cell.queued.length === 1) proposing.push(cell);
    scheduleTurn();
    return;
  }
  const sender = from.peer;
  if (sender === null || body.length < 1 + tagBytes) return;
  const records = body.length - tagBytes;
  if (!key.verify(body.subarray(0, records), body.subarray(records))) {
    rejected += 1;
    return;
  }
  if (type !== cellsFrame) {
    rejected += 1;
    return;
  }
  let at = 1;
  while (at < records) {
    const kind = body[at];
    const keyLength = body.readUInt16LE(at + 1);
    const cellKey = body.toString("latin1", at + 3, at + 3 + keyLength);
    at += 3 + keyLength;
    const cell = cellOf(cellKey);
    if (kind === record.accept) {
      const slot = body.readUInt32LE(at);
      const commit = body.readUInt32LE(at + 4);
      const length = body.readUInt16LE(at + 8);
      const value = body.subarray(at + 10, at + 10 + length);
      journalTurn.raw(body.subarray(at, at + 10 + length));
      at += 10 + length;
      if (slot > cell.applied) cell.accepted.push({ slot, value });
      if (commit < slot) acksOwed.push({ leader: sender, cellKey, slot });
      applyThrough(cell, commit);
    } else if (kind === record.vote) {
      const slot = body.readUInt32LE(at);
      at += 4;
      if (cell.inflightSlot === slot) vote(cell, sender);
    } else if (kind === record.notice) {
      const commit = body.readUInt32LE(at);
      at += 4;
      applyThrough(cell, commit);
    } else {
      rejected += 1;
      return;
    }
  }
  scheduleTurn();
}

runReplica(args, peers, onBody, () => {
  if (rejected > 0) console.error(`replica ${self}: ${rejected} frames rejected`);
  journal.close();
});
