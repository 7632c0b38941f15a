/**
 * Binary encoding of the client protocol (protocol.ts): requests and responses as they travel
 * between clients and servers. A message starts with its kind byte; kinds 1 and 2 belong to the
 * servers' own messages (src/server/wire.ts), so both speak one tag space on one connection.
 * Decoding bounds every length and count and throws DecodeError on anything malformed.
 */
import { ByteReader, ByteWriter, DecodeError, limits, type NodeId } from "../core/index.ts";
import {
  type MembershipResult,
  type ReplicaStatus,
  readChange,
  readNodeId,
  serverIdBytesMax,
  writeChange,
  writeNodeId,
} from "../paxos/index.ts";
import {
  commandCodec,
  operationBytes,
  readOperation,
  readResult,
  writeOperation,
  writeResult,
} from "./codec.ts";
import type { ClientRequest, ClientResponse, ErrorCode, RequestBody, ResponseBody } from "./protocol.ts";
import type { Operation, Transaction, TxnResult } from "./types.ts";

/** `relayedResponse`: a response with the server it was relayed from (ClientResponse.relayedFrom). */
export const clientMessageKind = { request: 3, response: 4, relayedResponse: 5 } as const;

const requestTag = { command: 1, linearizableRead: 2, eventualRead: 3, change: 4, describe: 5 } as const;
const responseTag = { result: 1, read: 2, membership: 3, redirect: 4, error: 5, status: 6 } as const;
const errorCodes: readonly ErrorCode[] = [
  "overloaded",
  "unknown_cell",
  "stalled",
  "behind",
  "invalid",
  "faulty",
];
const roles: readonly ReplicaStatus["role"][] = [
  "follower",
  "candidate",
  "leader",
  "retired",
  "joining",
  "learner",
];
/** Human-readable texts in responses (reasons, messages) are cut to this many bytes. */
const textBytesMax = 4096;

function writeNullableNode(writer: ByteWriter, node: NodeId | null): void {
  if (node === null) writer.byte(0);
  else {
    writer.byte(1);
    writeNodeId(writer, node);
  }
}

function readNullableNode(reader: ByteReader): NodeId | null {
  return reader.bool() ? readNodeId(reader) : null;
}

function writeNodes(writer: ByteWriter, nodes: readonly NodeId[]): void {
  writer.uint(nodes.length);
  for (const node of nodes) writeNodeId(writer, node);
}

function readNodes(reader: ByteReader): NodeId[] {
  const n = reader.uint();
  if (n > limits.membersMax) throw new DecodeError(`${n} members exceed the limit of ${limits.membersMax}`);
  const nodes: NodeId[] = [];
  for (let i = 0; i < n; i++) nodes.push(readNodeId(reader));
  return nodes;
}

function writeTransactionBytes(writer: ByteWriter, txn: Transaction): void {
  const op: Operation = { type: "txn", txn };
  writer.uint(operationBytes(op));
  writeOperation(writer, op);
}

function readTransactionBytes(reader: ByteReader): Transaction {
  const op = reader.nested(limits.messageBytesMax, readOperation);
  if (op.type !== "txn") throw new DecodeError(`a read carries a transaction, not a ${op.type} operation`);
  return op.txn;
}

function writeBody(writer: ByteWriter, body: RequestBody): void {
  switch (body.type) {
    case "command":
      writer.byte(requestTag.command).bool(body.leaderUnresponsive);
      commandCodec.write(writer, body.command);
      return;
    case "read":
      if (body.consistency === "linearizable") {
        writer.byte(requestTag.linearizableRead).bool(body.leaderUnresponsive);
      } else {
        writer.byte(requestTag.eventualRead).uint(body.watermark);
      }
      writeTransactionBytes(writer, body.txn);
      return;
    case "change":
      writer.byte(requestTag.change);
      writeChange(writer, body.change);
      return;
    case "describe":
      writer.byte(requestTag.describe);
      return;
  }
}

function readBody(reader: ByteReader): RequestBody {
  const tag = reader.byte();
  switch (tag) {
    case requestTag.command: {
      const leaderUnresponsive = reader.bool();
      return { type: "command", leaderUnresponsive, command: commandCodec.read(reader) };
    }
    case requestTag.linearizableRead: {
      const leaderUnresponsive = reader.bool();
      return {
        type: "read",
        consistency: "linearizable",
        leaderUnresponsive,
        txn: readTransactionBytes(reader),
      };
    }
    case requestTag.eventualRead: {
      const watermark = reader.uint();
      return { type: "read", consistency: "eventual", watermark, txn: readTransactionBytes(reader) };
    }
    case requestTag.change:
      return { type: "change", change: readChange(reader) };
    case requestTag.describe:
      return { type: "describe" };
    default:
      throw new DecodeError(`unknown request type ${tag}`);
  }
}

function writeMembershipResult(writer: ByteWriter, result: MembershipResult): void {
  if (result.status === "applied") {
    writer.byte(1).uint(result.epoch);
    writeNullableNode(writer, result.added);
    writer.uint(result.fromSlot);
  } else {
    writer.byte(2).string(result.reason);
  }
}

function readMembershipResult(reader: ByteReader): MembershipResult {
  const tag = reader.byte();
  if (tag === 1) {
    const epoch = reader.uint();
    const added = readNullableNode(reader);
    return { status: "applied", epoch, added, fromSlot: reader.uint() };
  }
  if (tag === 2) return { status: "rejected", reason: reader.string(textBytesMax) };
  throw new DecodeError(`unknown membership result ${tag}`);
}

function writeStatus(writer: ByteWriter, status: ReplicaStatus): void {
  writer.string(status.cellKey);
  writeNodeId(writer, status.node);
  writer.byte(roles.indexOf(status.role));
  writeNullableNode(writer, status.leader);
  writer.uint(status.epoch);
  writeNodes(writer, status.members);
  writer.uint(status.promised).uint(status.applied).uint(status.committed);
  if (status.stalled === null) writer.byte(0);
  else writer.byte(1).string(status.stalled);
  writer.bool(status.quiet);
}

function readStatus(reader: ByteReader): ReplicaStatus {
  const cellKey = reader.string(limits.cellKeyBytesMax);
  const node = readNodeId(reader);
  const role = roles[reader.byte()];
  if (role === undefined) throw new DecodeError("unknown replica role");
  const leader = readNullableNode(reader);
  const epoch = reader.uint();
  const members = readNodes(reader);
  const promised = reader.uint();
  const applied = reader.uint();
  const committed = reader.uint();
  const stalled = reader.bool() ? reader.string(textBytesMax) : null;
  const quiet = reader.bool();
  return { cellKey, node, role, leader, epoch, members, promised, applied, committed, stalled, quiet };
}

function writeResponseBody(writer: ByteWriter, body: ResponseBody): void {
  switch (body.type) {
    case "result":
      writer.byte(responseTag.result).uint(body.index);
      writeResult(writer, body.result);
      return;
    case "read":
      writer.byte(responseTag.read).uint(body.index);
      writeResult(writer, { kind: "txn", result: body.result });
      return;
    case "membership":
      writer.byte(responseTag.membership).uint(body.index);
      writeMembershipResult(writer, body.result);
      return;
    case "redirect":
      writer.byte(responseTag.redirect);
      writeNullableNode(writer, body.leader);
      if (body.members === null) writer.byte(0);
      else {
        writer.byte(1);
        writeNodes(writer, body.members);
      }
      if (body.epoch === null) writer.byte(0);
      else writer.byte(1).uint(body.epoch);
      writer.string(body.reason);
      return;
    case "error":
      writer.byte(responseTag.error).byte(errorCodes.indexOf(body.code)).string(body.message);
      return;
    case "status":
      writer.byte(responseTag.status);
      writeStatus(writer, body.status);
      return;
  }
}

function readResponseBody(reader: ByteReader): ResponseBody {
  const tag = reader.byte();
  switch (tag) {
    case responseTag.result: {
      const index = reader.uint();
      return { type: "result", index, result: readResult(reader) };
    }
    case responseTag.read: {
      const index = reader.uint();
      const result = readResult(reader);
      if (result.kind !== "txn")
        throw new DecodeError(`a read answers a transaction result, not ${result.kind}`);
      return { type: "read", index, result: result.result as TxnResult };
    }
    case responseTag.membership: {
      const index = reader.uint();
      return { type: "membership", index, result: readMembershipResult(reader) };
    }
    case responseTag.redirect: {
      const leader = readNullableNode(reader);
      const members = reader.bool() ? readNodes(reader) : null;
      const epoch = reader.bool() ? reader.uint() : null;
      return { type: "redirect", leader, members, epoch, reason: reader.string(textBytesMax) };
    }
    case responseTag.error: {
      const code = errorCodes[reader.byte()];
      if (code === undefined) throw new DecodeError("unknown error code");
      return { type: "error", code, message: reader.string(textBytesMax) };
    }
    case responseTag.status:
      return { type: "status", status: readStatus(reader) };
    default:
      throw new DecodeError(`unknown response type ${tag}`);
  }
}

/** Writes a request or response, its kind byte first. */
export function writeClientMessage(writer: ByteWriter, message: ClientRequest | ClientResponse): void {
  const relayedFrom = message.kind === "response" ? message.relayedFrom : undefined;
  const kind =
    relayedFrom === undefined ? clientMessageKind[message.kind] : clientMessageKind.relayedResponse;
  writer.byte(kind).uint(message.id).string(message.cellKey);
  if (message.kind === "request") writeBody(writer, message.body);
  else {
    if (relayedFrom !== undefined) writer.string(relayedFrom);
    writeResponseBody(writer, message.body);
  }
}

/** Reads a request or response whose kind byte has been read already. */
export function readClientMessage(reader: ByteReader, kind: number): ClientRequest | ClientResponse {
  const id = reader.uint();
  const cellKey = reader.string(limits.cellKeyBytesMax);
  if (kind === clientMessageKind.request) return { kind: "request", id, cellKey, body: readBody(reader) };
  if (kind === clientMessageKind.response)
    return { kind: "response", id, cellKey, body: readResponseBody(reader) };
  if (kind === clientMessageKind.relayedResponse) {
    const relayedFrom = reader.string(serverIdBytesMax);
    if (relayedFrom.length === 0) throw new DecodeError("a relayed response names no server");
    return { kind: "response", id, cellKey, relayedFrom, body: readResponseBody(reader) };
  }
  throw new DecodeError(`unknown message kind ${kind}`);
}

export function encodeClientMessage(message: ClientRequest | ClientResponse): Uint8Array {
  const writer = new ByteWriter(128);
  writeClientMessage(writer, message);
  return writer.finish();
}

export function decodeClientMessage(bytes: Uint8Array): ClientRequest | ClientResponse {
  const reader = new ByteReader(bytes);
  const message = readClientMessage(reader, reader.byte());
  reader.end();
  return message;
}
