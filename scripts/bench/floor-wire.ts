/**
 * The wire of the replication floor (`npm run bench -- floor`, scripts/bench/floor-replica.ts):
 * length-prefixed frames over TCP, and the client the load's worker processes use.
 *
 * frame    u32 body length | body
 * body     u8 type | ...
 *   1 request  client -> leader     u32 id | u16 entry length | entry (key and value)
 *   2 accept   leader -> follower   u32 first sequence number | u32 count | (u16 length | entry)*
 *   3 ack      follower -> leader   u32 sequence number the follower's journal holds through
 *   4 reply    leader -> client     u32 id
 *   5 hello    replica -> replica   u8 the dialling replica's index
 */
import { connect, type Socket } from "node:net";

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
