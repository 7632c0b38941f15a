/**
 * The wire of the replication floors (`npm run bench -- floor`, scripts/bench/floor-replica.ts and
 * floor-cells-replica.ts): length-prefixed frames over TCP, the client the load's worker
 * processes use, and what both kinds of replica process share (arguments, journal, connections).
 *
 * frame    u32 body length | body
 * body     u8 type | ...
 *   1 request  client -> leader     u32 id | u16 entry length | entry (key and value)
 *   2 accept   leader -> follower   u32 first sequence number | u32 count | (u16 length | entry)*
 *   3 ack      follower -> leader   u32 sequence number the follower's journal holds through
 *   4 reply    leader -> client     u32 id
 *   5 hello    replica -> replica   u8 the dialling replica's index
 *  16 cells    replica -> replica   per-cell records (floor-cells-replica.ts)
 */
import { closeSync, constants, openSync, writeSync } from "node:fs";
import { connect, createServer, type Socket } from "node:net";
import { join } from "node:path";

export const frameType = { request: 1, accept: 2, ack: 3, reply: 4, hello: 5 } as const;

/** Largest frame body either side accepts; a larger length prefix closes the connection. */
export const frameBodyMax = 16 * 1024 * 1024;

/** Calls `onBody` with each frame body read from `socket`, in order. */
export function readFrames(socket: Socket, onBody: (body: Buffer) => void): void {
  let held: Buffer | null = null;
  socket.on("data", (chunk: Buffer) => {
    let data = held === null ? chunk : Buffer.concat([held, chunk]);
    held = null;
    while (data.length >= 4) {
      const length = data.readUInt32LE(0);
      if (length > frameBodyMax) {
        socket.destroy(new Error(`a frame of ${length} bytes exceeds ${frameBodyMax}`));
        return;
      }
      if (data.length < 4 + length) break;
      onBody(data.subarray(4, 4 + length));
      data = data.subarray(4 + length);
    }
    if (data.length > 0) held = Buffer.from(data);
  });
}

/** A frame of `type` whose body continues with `rest` bytes written by `fill` at offset 5. */
export function frame(type: number, rest: number, fill: (buffer: Buffer) => void): Buffer {
  const buffer = Buffer.allocUnsafe(5 + rest);
  buffer.writeUInt32LE(1 + rest, 0);
  buffer[4] = type;
  fill(buffer);
  return buffer;
}

/** FNV-1a of a key: which replica leads it. */
export function leaderOf(key: string, replicas: number): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) hash = Math.imul(hash ^ key.charCodeAt(i), 0x01000193) >>> 0;
  return hash % replicas;
}

export function dial(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.off("error", reject);
      socket.setNoDelay(true);
      resolve(socket);
    });
    socket.once("error", reject);
  });
}

/** A client of the floor: one connection per replica, each write sent to its key's leader. */
export class FloorClient {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: () => void; reject: (error: Error) => void }>();

  private constructor(private readonly sockets: readonly Socket[]) {
    for (const socket of sockets) {
      readFrames(socket, (body) => {
        if (body[0] !== frameType.reply) return;
        const id = body.readUInt32LE(1);
        const waiter = this.waiting.get(id);
        this.waiting.delete(id);
        waiter?.resolve();
      });
      socket.on("error", () => {});
      socket.on("close", () => {
        const error = new Error("a replica of the floor closed its connection");
        for (const waiter of this.waiting.values()) waiter.reject(error);
        this.waiting.clear();
      });
    }
  }

  static async connect(ports: readonly number[]): Promise<FloorClient> {
    return new FloorClient(await Promise.all(ports.map((port) => dial(port))));
  }

  write(key: string, value: Uint8Array): Promise<void> {
    const id = this.nextId;
    this.nextId = (this.nextId + 1) >>> 0 || 1;
    const keyBytes = Buffer.byteLength(key);
    const entryBytes = 2 + keyBytes + value.length;
    const buffer = frame(frameType.request, 6 + entryBytes, (b) => {
      b.writeUInt32LE(id, 5);
      b.writeUInt16LE(entryBytes, 9);
      b.writeUInt16LE(keyBytes, 11);
      b.write(key, 13, "latin1");
      b.set(value, 13 + keyBytes);
    });
    const socket = this.sockets[leaderOf(key, this.sockets.length)] as Socket;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      socket.write(buffer);
    });
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
  }
}

/** A replica's command line: `<script> <index> <directory> <port>,<port>,... [journal MiB]`. */
export interface ReplicaArguments {
  readonly self: number;
  readonly directory: string;
  readonly ports: readonly number[];
  readonly journalMiB: number;
}

export function replicaArguments(script: string): ReplicaArguments {
  const [indexArg, directory, portsArg, journalArg] = process.argv.slice(2);
  if (indexArg === undefined || directory === undefined || portsArg === undefined) {
    console.error(`usage: ${script} <index> <directory> <port>,<port>,... [journal MiB]`);
    process.exit(2);
  }
  return {
    self: Number(indexArg),
    directory,
    ports: portsArg.split(",").map(Number),
    journalMiB: Number(journalArg ?? 64),
  };
}

/** A replica's journal: a preallocated file written with O_DSYNC at increasing offsets, wrapping around. */
export class FloorJournal {
  private readonly fd: number;
  private readonly bytes: number;
  private offset = 0;

  constructor(directory: string, self: number, mib: number) {
    this.bytes = mib * 1024 * 1024;
    this.fd = openSync(
      join(directory, `journal-${self}`),
      constants.O_RDWR | constants.O_CREAT | constants.O_DSYNC,
    );
    const zeros = Buffer.alloc(1024 * 1024);
    for (let at = 0; at < this.bytes; at += zeros.length) writeSync(this.fd, zeros, 0, zeros.length, at);
  }

  /** One O_DSYNC write of `buffer`: durable when this returns. */
  append(buffer: Uint8Array): void {
    if (this.offset + buffer.length > this.bytes) this.offset = 0;
    let written = 0;
    while (written < buffer.length)
      written += writeSync(this.fd, buffer, written, buffer.length - written, this.offset + written);
    this.offset += buffer.length;
  }

  close(): void {
    closeSync(this.fd);
  }
}

/** A connection a replica's listener accepted: a client's, or a peer's once it said hello. */
export interface Incoming {
  readonly socket: Socket;
  peer: number | null;
}

/**
 * Runs a replica's connections. Everything it receives comes on connections its listener
 * accepted (clients' requests, and the frames of each peer that said hello), and goes to
 * `onBody`; the connections it dials to every other replica (`peers`, filled in) only send.
 * Prints "ready" once every other replica is dialled; on SIGTERM, calls `onStop` and exits.
 */
export function runReplica(
  args: ReplicaArguments,
  peers: (Socket | null)[],
  onBody: (from: Incoming, body: Buffer) => void,
  onStop: () => void,
): void {
  const server = createServer((socket) => {
    socket.setNoDelay(true);
    socket.on("error", () => {});
    const incoming: Incoming = { socket, peer: null };
    readFrames(socket, (body) => {
      if (body[0] === frameType.hello) incoming.peer = body[1] as number;
      else onBody(incoming, body);
    });
  });
  server.listen(args.ports[args.self], "127.0.0.1");
  const dialPeers = async () => {
    for (let i = 0; i < args.ports.length; i++) {
      if (i === args.self) continue;
      for (let attempt = 0; ; attempt++) {
        try {
          const socket = await dial(args.ports[i] as number);
          socket.write(frame(frameType.hello, 1, (b) => b.writeUInt8(args.self, 5)));
          socket.on("error", () => {});
          peers[i] = socket;
          break;
        } catch (error) {
          if (attempt >= 200) throw error;
          await new Promise((resolve) => setTimeout(resolve, 25));
        }
      }
    }
  };
  dialPeers().then(
    () => console.log("ready"),
    (error: unknown) => {
      console.error(`replica ${args.self}: ${(error as Error).message}`);
      process.exit(1);
    },
  );
  process.on("SIGTERM", () => {
    onStop();
    process.exit(0);
  });
}
