/**
 * One process of the replication floor (`npm run bench -- floor`): the least work that makes a
 * write durable on a majority of 7 journals through 7 processes, with nothing of a database
 * around it: no ballots, no state machine, no authentication, no lmdb. Each replica leads the
 * keys that hash to it (floor-wire.ts). In each event-loop turn a replica
 *   1. sends the writes its clients sent it since the last turn, as one accept frame, to each of
 *      the other 6 replicas;
 *   2. appends those writes and the accepts it received from other leaders to its journal, in one
 *      O_DSYNC write (a preallocated file, as Physalia's journal);
 *   3. acknowledges to each leader what its journal now holds;
 * and answers a write once its own journal and 3 followers' hold it (4 of 7). Every journal gets
 * every write, as in a 7-node cell. Physalia's commit path does all of this and more; the floor
 * tells how much of a write's cost and latency on this machine is this part.
 *
 *   floor-replica.ts <index> <directory> <port>,<port>,... [journal MiB, default 64]
 *   (prints "ready" once it has dialled every other replica)
 */
import type { Socket } from "node:net";
import { FloorJournal, frame, frameType, type Incoming, replicaArguments, runReplica } from "./floor-wire.ts";

const args = replicaArguments("floor-replica.ts");
const self = args.self;
const replicas = args.ports.length;
const majority = Math.floor(replicas / 2) + 1;
const journal = new FloorJournal(args.directory, self, args.journalMiB);

// ---- leader side
interface Waiting {
  readonly seq: number;
  readonly id: number;
  readonly client: Socket;
}
let proposed: Buffer[] = [];
let proposedClients: { id: number; client: Socket }[] = [];
let nextSeq = 1;
/** Highest sequence number each replica's journal holds of this replica's writes (self included). */
const durable = new Array<number>(replicas).fill(0);
const waiting: Waiting[] = [];
let waitingHead = 0;

// ---- follower side: accepts received this turn, by leader. An ack covers every sequence number
// up to the last accepted: one connection per leader delivers its accepts in order, and every
// replica has dialled every other ("ready") before the benchmark lets a client write.
const accepted = new Map<number, { through: number; entries: Buffer[] }>();
const peers = new Array<Socket | null>(replicas).fill(null);

let turnScheduled = false;
function scheduleTurn(): void {
  if (turnScheduled) return;
  turnScheduled = true;
  setImmediate(turn);
}

function turn(): void {
  turnScheduled = false;
  const records: Buffer[] = [];
  let lastProposed = 0;
  if (proposed.length > 0) {
    const count = proposed.length;
    let bytes = 0;
    for (const entry of proposed) bytes += 2 + entry.length;
    const firstSeq = nextSeq;
    const accept = frame(frameType.accept, 8 + bytes, (b) => {
      b.writeUInt32LE(firstSeq, 5);
      b.writeUInt32LE(count, 9);
      let at = 13;
      for (const entry of proposed) {
        b.writeUInt16LE(entry.length, at);
        b.set(entry, at + 2);
        at += 2 + entry.length;
      }
    });
    for (const peer of peers) peer?.write(accept);
    records.push(accept);
    proposedClients.forEach((c, i) => {
      waiting.push({ seq: firstSeq + i, id: c.id, client: c.client });
    });
    nextSeq += count;
    lastProposed = nextSeq - 1;
    proposed = [];
    proposedClients = [];
  }
  for (const { entries } of accepted.values()) for (const entry of entries) records.push(entry);
  if (records.length > 0)
    journal.append(records.length === 1 ? (records[0] as Buffer) : Buffer.concat(records));
  if (lastProposed > 0) durable[self] = lastProposed;
  for (const [leader, { through }] of accepted) {
    const ack = frame(frameType.ack, 4, (b) => b.writeUInt32LE(through, 5));
    peers[leader]?.write(ack);
  }
  accepted.clear();
  answerCommitted();
}

/** Answers every waiting write a majority of journals holds. */
function answerCommitted(): void {
  const sorted = [...durable].sort((a, b) => b - a);
  const committed = sorted[majority - 1] as number;
  const replies = new Map<Socket, Buffer[]>();
  while (waitingHead < waiting.length && (waiting[waitingHead] as Waiting).seq <= committed) {
    const w = waiting[waitingHead] as Waiting;
    waitingHead += 1;
    let list = replies.get(w.client);
    if (list === undefined) {
      list = [];
      replies.set(w.client, list);
    }
    list.push(frame(frameType.reply, 4, (b) => b.writeUInt32LE(w.id, 5)));
  }
  if (waitingHead > 1024 && waitingHead * 2 > waiting.length) {
    waiting.splice(0, waitingHead);
    waitingHead = 0;
  }
  for (const [client, list] of replies) if (!client.destroyed) client.write(Buffer.concat(list));
}

function onBody(from: Incoming, body: Buffer): void {
  switch (body[0]) {
    case frameType.request: {
      const id = body.readUInt32LE(1);
      const length = body.readUInt16LE(5);
      proposed.push(Buffer.from(body.subarray(7, 7 + length)));
      proposedClients.push({ id, client: from.socket });
      scheduleTurn();
      return;
    }
    case frameType.accept: {
      const leader = from.peer;
      if (leader === null) return;
      const first = body.readUInt32LE(1);
      const count = body.readUInt32LE(5);
      let entry = accepted.get(leader);
      if (entry === undefined) {
        entry = { through: 0, entries: [] };
        accepted.set(leader, entry);
      }
      entry.through = first + count - 1;
      entry.entries.push(Buffer.from(body));
      scheduleTurn();
      return;
    }
    case frameType.ack: {
      const follower = from.peer;
      if (follower === null) return;
      const through = body.readUInt32LE(1);
      if (through > (durable[follower] as number)) durable[follower] = through;
      answerCommitted();
      return;
    }
  }
}

// Clients' requests, and from each peer its accepts (as a leader) and acks (as a follower).
runReplica(args, peers, onBody, () => journal.close());
