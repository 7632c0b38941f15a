/**
 * A forwarding pointer's fields after its cell key, as both the lmdb pointer record and the
 * journal write them: uint epoch | uint member count | node* | f64 expiresAtMs.
 */
import {
  assert,
  type ByteReader,
  type ByteWriter,
  type CellKey,
  DecodeError,
  limits,
  type NodeId,
} from "../core/index.ts";
import { readNodeId, writeNodeId } from "../paxos/index.ts";
import type { ForwardingPointer } from "./port.ts";

export function writePointerFields(writer: ByteWriter, pointer: ForwardingPointer): void {
  assert(pointer.members.length <= limits.membersMax, () => `${pointer.members.length} members in a pointer`);
  writer.uint(pointer.epoch).uint(pointer.members.length);
  for (const member of pointer.members) writeNodeId(writer, member);
  writer.f64(pointer.expiresAtMs);
}

export function readPointerFields(reader: ByteReader, cellKey: CellKey): ForwardingPointer {
  const epoch = reader.uint();
  const count = reader.uint();
  if (count > limits.membersMax) throw new DecodeError(`${count} members exceed ${limits.membersMax}`);
  const members: NodeId[] = [];
  for (let i = 0; i < count; i++) members.push(readNodeId(reader));
  return { cellKey, epoch, members, expiresAtMs: reader.f64() };
}
