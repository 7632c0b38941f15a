/**
 * Every message a server sends or receives, as bytes: replica messages and failure-detector
 * heartbeats between servers (kinds 1 and 2), client requests and responses (kinds 3 and 4,
 * src/cell/wire.ts). The transport carries these bytes in authenticated frames.
 */
import { clientMessageKind, commandCodec, readClientMessage, writeClientMessage } from "../cell/index.ts";
import { ByteReader, ByteWriter, DecodeError } from "../core/index.ts";
import { readPaxosMessage, writePaxosMessage } from "../paxos/index.ts";
import type { ServerMessage } from "./server.ts";

const serverMessageKind = { paxos: 1, heartbeat: 2 } as const;

export function writeServerMessage(writer: ByteWriter, message: ServerMessage): void {
  switch (message.kind) {
    case "paxos":
      writer.byte(serverMessageKind.paxos);
      writePaxosMessage(writer, message.message, commandCodec);
      return;
    case "heartbeat":
      writer.byte(serverMessageKind.heartbeat);
      return;
    case "request":
    case "response":
      writeClientMessage(writer, message);
      return;
  }
}

export function readServerMessage(reader: ByteReader): ServerMessage {
  const kind = reader.byte();
  switch (kind) {
    case serverMessageKind.paxos:
      return { kind: "paxos", message: readPaxosMessage(reader, commandCodec) };
    case serverMessageKind.heartbeat:
      return { kind: "heartbeat" };
    case clientMessageKind.request:
    case clientMessageKind.response:
    case clientMessageKind.relayedResponse:
      return readClientMessage(reader, kind);
    default:
      throw new DecodeError(`unknown message kind ${kind}`);
  }
}

/** One writer reused by every encoding (encoding never re-enters itself). */
const scratch = new ByteWriter(1024);
/** A writer that grew past this is dropped after use rather than kept. */
const scratchBytesKept = 64 * 1024;
let scratchWriter = scratch;

export function encodeServerMessage(message: ServerMessage): Uint8Array {
  const writer = scratchWriter.clear();
  writeServerMessage(writer, message);
  const bytes = writer.finish();
  scratchWriter = writer.capacity > scratchBytesKept ? scratch.clear() : writer;
  return bytes;
}

/** Throws DecodeError on malformed bytes; the caller drops and counts the message. */
export function decodeServerMessage(bytes: Uint8Array): ServerMessage {
  const reader = new ByteReader(bytes);
  const message = readServerMessage(reader);
  reader.end();
  return message;
}

/** The codec the transport adapters take. */
export const serverMessageCodec = Object.freeze({
  encode: encodeServerMessage,
  decode: decodeServerMessage,
  write: writeServerMessage,
});
