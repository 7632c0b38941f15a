/**
 * Binary encoding of the replica's messages and durable records, for the wire (src/transport)
 * and the disk (src/storage). Generic in the command type: the cell supplies how one command is
 * written and read. Decoding checks every count against a bound before allocating and throws
 * DecodeError on anything malformed; it never trusts a length it has not bounded.
 *
 * Layout (all integers are canonical varints unless said otherwise):
 *   node id      string serverId, uint incarnation
 *   log value    byte tag (0 noop, 1 commands, 2 reconfigure), f64 stampMs, then
 *                commands: uint stampBallot, uint count, commands; reconfigure: optional add
 *                (byte 0/1, string), optional remove (byte 0/1, node id)
 *   log entry    uint slot, uint ballot, log value
 *   membership   uint epoch, uint nextIncarnation, uint count, per configuration: uint fromSlot,
 *                uint epoch, uint count, node ids
 *   snapshot     uint index, membership, bytes state
 *   message      byte version, byte type, string cellKey, node id from, node id to, uint epoch,
 *                then the fields of its type in the order of types.ts
 */
import {
  assert,
  ByteReader,
  ByteWriter,
  type CellKey,
  DecodeError,
  limits,
  type NodeId,
  utf8Length,
} from "../core/index.ts";
import { ballotProblem } from "./ballot.ts";
import type { PersistedNode } from "./replica.ts";
import type {
  Configuration,
  LogEntry,
  LogValue,
  MembershipChange,
  MembershipState,
  PaxosMessage,
  PaxosMessageType,
  Snapshot,
} from "./types.ts";

/** How one command is written and read; `read` throws DecodeError on malformed input. */
export interface CommandCodec<C> {
  write(writer: ByteWriter, command: C): void;
  read(reader: ByteReader): C;
}

/** Version byte leading every encoded message; a reader refuses other versions. */
export const PAXOS_WIRE_VERSION = 1;
/** Version byte leading every stored node record. */
export const PAXOS_RECORD_VERSION = 1;

/** The most log entries one message or record may carry. */
export const encodedEntriesMax = 4096;
/** The most configurations a membership may list (each change adds one until pruned). */
export const encodedConfigurationsMax = 256;
/** The most bytes of state machine state in a snapshot. */
export const snapshotStateBytesMax = limits.messageBytesMax;

assert(
  encodedEntriesMax >= limits.logRetainedEntries + limits.snapshotIntervalEntries + limits.pipelineDepth,
  "a message must be able to carry every entry a node keeps above its snapshot",
);
assert(encodedEntriesMax >= limits.catchUpSegmentEntriesMax, "a catch-up segment must fit one message");

/** The longest server id a message may carry, in UTF-8 bytes. */
export const serverIdBytesMax = 256;

const valueTag = { noop: 0, commands: 1, reconfigure: 2 } as const;

const messageTag: Readonly<Record<PaxosMessageType, number>> = {
  prepare: 1,
  promise: 2,
  accept: 3,
  accepted: 4,
  nack: 5,
  heartbeat: 6,
  heartbeat_ack: 7,
  catchup_request: 8,
  catchup: 9,
  campaign: 10,
};
const messageTypeByTag: readonly (PaxosMessageType | undefined)[] = (() => {
  const byTag: (PaxosMessageType | undefined)[] = [];
  for (const [type, tag] of Object.entries(messageTag)) byTag[tag] = type as PaxosMessageType;
  return byTag;
})();

function count(reader: ByteReader, max: number, what: string): number {
  const n = reader.uint();
  if (n > max) throw new DecodeError(`${n} ${what} exceed the limit of ${max}`);
  // Every element takes at least one byte: a count beyond the input is malformed.
  if (n > reader.remaining) throw new DecodeError(`truncated input: ${n} ${what} announced`);
  return n;
}

// ---------------------------------------------------------------- node ids

export function writeNodeId(writer: ByteWriter, node: NodeId): void {
  writer.string(node.serverId).uint(node.incarnation);
}

export function readNodeId(reader: ByteReader): NodeId {
  const serverId = reader.string(serverIdBytesMax);
  if (serverId.length === 0) throw new DecodeError("empty server id");
  const incarnation = reader.uint();
  if (incarnation < 1) throw new DecodeError("node incarnation 0");
  return sharedNodeId(serverId, incarnation);
}

/**
 * Decoded node ids, shared: every replica message names two, and a server's messages name the
 * same few (its peers' servers, a cell's small incarnation numbers) over and over. NodeIds are
 * never changed, so one object serves every message that names the node; equal ids are then
 * usually the same object, which nodeIdEquals checks first. Incarnations below
 * sharedIncarnationsMax of up to sharedServersMax servers are kept; the table starts over when
 * more servers are named.
 */
const sharedNodeIds = new Map<string, NodeId[]>();
const sharedServersMax = 1024;
const sharedIncarnationsMax = 64;

function sharedNodeId(serverId: string, incarnation: number): NodeId {
  if (incarnation >= sharedIncarnationsMax) return { serverId, incarnation };
  let row = sharedNodeIds.get(serverId);
  if (row === undefined) {
    if (sharedNodeIds.size >= sharedServersMax) sharedNodeIds.clear();
    row = [];
    sharedNodeIds.set(serverId, row);
  }
  let node = row[incarnation];
  if (node === undefined) {
    node = { serverId, incarnation };
    row[incarnation] = node;
  }
  return node;
}

// ---------------------------------------------------------------- log values and entries

export function writeChange(writer: ByteWriter, change: MembershipChange): void {
  if (change.add === null) writer.byte(0);
  else writer.byte(1).string(change.add);
  if (change.remove === null) writer.byte(0);
  else {
    writer.byte(1);
    writeNodeId(writer, change.remove);
  }
}

export function readChange(reader: ByteReader): MembershipChange {
  const add = reader.bool() ? reader.string(serverIdBytesMax) : null;
  const remove = reader.bool() ? readNodeId(reader) : null;
  return { add, remove };
}

/**
 * The encodings of log values recently written or read, keyed by identity (log values are never
 * mutated). A leader sends one value to every member, and the turn's messages are encoded
 * destination by destination, so the value is encoded once and copied for the other members and
 * for its own journal record. A follower's value arrives encoded: its bytes are kept as they are
 * read, and its journal record copies them instead of encoding the value again. At most
 * recentValuesMax values are remembered: then the memory starts over (a turn's values are
 * written within the turn, so a few thousand cover the largest turns).
 */
const recentValuesMax = 4096;
let recentEncodings = new Map<object, Uint8Array>();

function remember(value: object, bytes: Uint8Array): void {
  if (recentEncodings.size >= recentValuesMax) recentEncodings = new Map();
  recentEncodings.set(value, bytes);
}

export function writeLogValue<C>(writer: ByteWriter, value: LogValue<C>, codec: CommandCodec<C>): void {
  const known = recentEncodings.get(value);
  if (known !== undefined) {
    writer.raw(known);
    return;
  }
  const start = writer.size;
  encodeLogValue(writer, value, codec);
  remember(value, writer.copyFrom(start));
}

function encodeLogValue<C>(writer: ByteWriter, value: LogValue<C>, codec: CommandCodec<C>): void {
  switch (value.kind) {
    case "noop":
      writer.byte(valueTag.noop).f64(value.stampMs);
      return;
    case "commands":
      writer.byte(valueTag.commands).f64(value.stampMs).uint(value.stampBallot).uint(value.commands.length);
      for (let i = 0; i < value.commands.length; i++) codec.write(writer, value.commands[i] as C);
      return;
    case "reconfigure":
      writer.byte(valueTag.reconfigure).f64(value.stampMs);
      writeChange(writer, value.change);
      return;
  }
}

/**
 * An accept's value, whose bytes are remembered for the journal record that will hold it (and
 * for the accepts a new leader may send it in).
 */
function readAcceptedValue<C>(reader: ByteReader, codec: CommandCodec<C>): LogValue<C> {
  const start = reader.position;
  const value = readLogValue(reader, codec);
  remember(value, reader.copyFrom(start));
  return value;
}

export function readLogValue<C>(reader: ByteReader, codec: CommandCodec<C>): LogValue<C> {
  const tag = reader.byte();
  const stampMs = reader.f64();
  switch (tag) {
    case valueTag.noop:
      return { kind: "noop", stampMs };
    case valueTag.commands: {
      const stampBallot = reader.uint();
      const n = count(reader, limits.batchCommandsMax, "commands in one entry");
      const commands = new Array<C>(n);
      for (let i = 0; i < n; i++) commands[i] = codec.read(reader);
      return { kind: "commands", stampMs, stampBallot, commands };
    }
    case valueTag.reconfigure:
      return { kind: "reconfigure", stampMs, change: readChange(reader) };
    default:
      throw new DecodeError(`unknown log value tag ${tag}`);
  }
}

/** A ballot, refused with DecodeError when it is no ballot (ballot.ts, ballotProblem). */
function readBallot(reader: ByteReader): number {
  const ballot = reader.uint();
  const problem = ballotProblem(ballot);
  if (problem !== null) throw new DecodeError(problem);
  return ballot;
}

export function writeLogEntry<C>(writer: ByteWriter, entry: LogEntry<C>, codec: CommandCodec<C>): void {
  writer.uint(entry.slot).uint(entry.ballot);
  writeLogValue(writer, entry.value, codec);
}

export function readLogEntry<C>(reader: ByteReader, codec: CommandCodec<C>): LogEntry<C> {
  const slot = reader.uint();
  if (slot < 1) throw new DecodeError("log entry for slot 0");
  const ballot = readBallot(reader);
  return { slot, ballot, value: readLogValue(reader, codec) };
}

function writeEntries<C>(writer: ByteWriter, entries: readonly LogEntry<C>[], codec: CommandCodec<C>): void {
  assert(entries.length <= encodedEntriesMax, () => `${entries.length} entries exceed ${encodedEntriesMax}`);
  writer.uint(entries.length);
  for (let i = 0; i < entries.length; i++) writeLogEntry(writer, entries[i] as LogEntry<C>, codec);
}

function readEntries<C>(reader: ByteReader, codec: CommandCodec<C>): LogEntry<C>[] {
  const n = count(reader, encodedEntriesMax, "log entries");
  const entries = new Array<LogEntry<C>>(n);
  for (let i = 0; i < n; i++) {
    const entry = readLogEntry(reader, codec);
    if (i > 0 && entry.slot <= (entries[i - 1] as LogEntry<C>).slot)
      throw new DecodeError("log entries out of slot order");
    entries[i] = entry;
  }
  return entries;
}

// ---------------------------------------------------------------- membership and snapshots

export function writeMembership(writer: ByteWriter, membership: MembershipState): void {
  writer.uint(membership.epoch).uint(membership.nextIncarnation).uint(membership.configurations.length);
  for (const configuration of membership.configurations) {
    writer.uint(configuration.fromSlot).uint(configuration.epoch).uint(configuration.members.length);
    for (const member of configuration.members) writeNodeId(writer, member);
  }
}

export function readMembership(reader: ByteReader): MembershipState {
  const epoch = reader.uint();
  const nextIncarnation = reader.uint();
  const n = count(reader, encodedConfigurationsMax, "configurations");
  if (n === 0) throw new DecodeError("a membership without configurations");
  const configurations: Configuration[] = [];
  for (let i = 0; i < n; i++) {
    const fromSlot = reader.uint();
    const configurationEpoch = reader.uint();
    const size = count(reader, limits.membersMax, "members");
    if (size === 0) throw new DecodeError("a configuration without members");
    const members: NodeId[] = [];
    for (let j = 0; j < size; j++) members.push(readNodeId(reader));
    const previous = configurations[i - 1];
    if (previous !== undefined && fromSlot <= previous.fromSlot)
      throw new DecodeError("configurations out of slot order");
    configurations.push({ fromSlot, epoch: configurationEpoch, members });
  }
  return { epoch, nextIncarnation, configurations };
}

export function writeSnapshot(writer: ByteWriter, snapshot: Snapshot): void {
  writer.uint(snapshot.index);
  writeMembership(writer, snapshot.membership);
  writer.bytes(snapshot.state);
}

export function readSnapshot(reader: ByteReader): Snapshot {
  const index = reader.uint();
  const membership = readMembership(reader);
  const state = reader.bytes(snapshotStateBytesMax);
  return { index, membership, state };
}

// ---------------------------------------------------------------- messages

/** `coveredThrough` is Infinity when a promise covers every slot above its base. */
function writeCoverage(writer: ByteWriter, coveredThrough: number): void {
  writer.uint(coveredThrough === Number.POSITIVE_INFINITY ? 0 : coveredThrough + 1);
}

function readCoverage(reader: ByteReader): number {
  const n = reader.uint();
  return n === 0 ? Number.POSITIVE_INFINITY : n - 1;
}

const nackReasons = ["ballot", "epoch"] as const;

export function writePaxosMessage<C>(
  writer: ByteWriter,
  message: PaxosMessage<C>,
  codec: CommandCodec<C>,
): void {
  writer.byte(PAXOS_WIRE_VERSION).byte(messageTag[message.type]).string(message.cellKey);
  writeNodeId(writer, message.from);
  writeNodeId(writer, message.to);
  writer.uint(message.epoch);
  switch (message.type) {
    case "prepare":
      writer.uint(message.ballot).uint(message.fromSlot);
      return;
    case "promise":
      writer.uint(message.ballot).uint(message.base);
      writeCoverage(writer, message.coveredThrough);
      writer.uint(message.applied);
      writeEntries(writer, message.entries, codec);
      return;
    case "accept":
      writer.uint(message.ballot).uint(message.slot);
      writeLogValue(writer, message.value, codec);
      writer.uint(message.commit);
      return;
    case "accepted":
      writer.uint(message.ballot).uint(message.slot).uint(message.applied);
      return;
    case "nack":
      writer
        .uint(message.ballot)
        .uint(message.promised)
        .byte(nackReasons.indexOf(message.reason))
        .uint(message.applied);
      return;
    case "heartbeat":
      writer.uint(message.ballot).uint(message.commit).uint(message.round);
      return;
    case "heartbeat_ack":
      writer.uint(message.ballot).uint(message.round).uint(message.applied).bool(message.ok);
      return;
    case "catchup_request":
      writer.uint(message.fromSlot).bool(message.needSnapshot);
      return;
    case "catchup":
      writeEntries(writer, message.entries, codec);
      if (message.snapshot === null) writer.byte(0);
      else {
        writer.byte(1);
        writeSnapshot(writer, message.snapshot);
      }
      writer.uint(message.applied);
      return;
    case "campaign":
      writer.uint(message.ballot);
      return;
  }
}

/** A cell key: a non-empty string of at most `cellKeyBytesMax` bytes. */
export function readCellKey(reader: ByteReader): CellKey {
  const cellKey = reader.string(limits.cellKeyBytesMax);
  if (cellKey.length === 0) throw new DecodeError("empty cell key");
  return cellKey;
}

export function readPaxosMessage<C>(reader: ByteReader, codec: CommandCodec<C>): PaxosMessage<C> {
  const version = reader.byte();
  if (version !== PAXOS_WIRE_VERSION)
    throw new DecodeError(`paxos message version ${version}; this build speaks ${PAXOS_WIRE_VERSION}`);
  const tag = reader.byte();
  const type = messageTypeByTag[tag];
  if (type === undefined) throw new DecodeError(`unknown paxos message type ${tag}`);
  const cellKey = readCellKey(reader);
  const from = readNodeId(reader);
  const to = readNodeId(reader);
  const epoch = reader.uint();
  // Literals in the field order the replica builds its messages in, so both share one shape.
  switch (type) {
    case "prepare":
      return { type, cellKey, from, to, epoch, ballot: readBallot(reader), fromSlot: reader.uint() };
    case "promise":
      return {
        type,
        cellKey,
        from,
        to,
        epoch,
        ballot: readBallot(reader),
        base: reader.uint(),
        coveredThrough: readCoverage(reader),
        applied: reader.uint(),
        entries: readEntries(reader, codec),
      };
    case "accept":
      return {
        type,
        cellKey,
        from,
        to,
        epoch,
        ballot: readBallot(reader),
        slot: reader.uint(),
        value: readAcceptedValue(reader, codec),
        commit: reader.uint(),
      };
    case "accepted":
      return {
        type,
        cellKey,
        from,
        to,
        epoch,
        ballot: readBallot(reader),
        slot: reader.uint(),
        applied: reader.uint(),
      };
    case "nack": {
      const ballot = readBallot(reader);
      const promised = readBallot(reader);
      const reason = nackReasons[reader.byte()];
      if (reason === undefined) throw new DecodeError("unknown nack reason");
      return { type, cellKey, from, to, epoch, ballot, promised, reason, applied: reader.uint() };
    }
    case "heartbeat":
      return {
        type,
        cellKey,
        from,
        to,
        epoch,
        ballot: readBallot(reader),
        commit: reader.uint(),
        round: reader.uint(),
      };
    case "heartbeat_ack":
      return {
        type,
        cellKey,
        from,
        to,
        epoch,
        ballot: readBallot(reader),
        round: reader.uint(),
        applied: reader.uint(),
        ok: reader.bool(),
      };
    case "catchup_request":
      return { type, cellKey, from, to, epoch, fromSlot: reader.uint(), needSnapshot: reader.bool() };
    case "catchup":
      return {
        type,
        cellKey,
        from,
        to,
        epoch,
        entries: readEntries(reader, codec),
        snapshot: reader.bool() ? readSnapshot(reader) : null,
        applied: reader.uint(),
      };
    case "campaign":
      return { type, cellKey, from, to, epoch, ballot: readBallot(reader) };
  }
}

/** A whole message as bytes (for tests and tools; the server writes many into one writer). */
export function encodePaxosMessage<C>(message: PaxosMessage<C>, codec: CommandCodec<C>): Uint8Array {
  const writer = new ByteWriter(64 + utf8Length(message.cellKey));
  writePaxosMessage(writer, message, codec);
  return writer.finish();
}

export function decodePaxosMessage<C>(bytes: Uint8Array, codec: CommandCodec<C>): PaxosMessage<C> {
  const reader = new ByteReader(bytes);
  const message = readPaxosMessage(reader, codec);
  reader.end();
  return message;
}

// ---------------------------------------------------------------- durable records

/**
 * A node's durable header: who it is, what it promised, its snapshot. Entries are stored one
 * record per slot beside it, so accepting a value rewrites only that slot's record.
 */
export interface NodeHeader {
  readonly node: NodeId;
  readonly promised: number;
  readonly snapshot: Snapshot;
}

export function encodeNodeHeader(header: NodeHeader): Uint8Array {
  const writer = new ByteWriter(128 + header.snapshot.state.length);
  writer.byte(PAXOS_RECORD_VERSION);
  writeNodeId(writer, header.node);
  writer.uint(header.promised);
  writeSnapshot(writer, header.snapshot);
  return writer.finish();
}

export function decodeNodeHeader(bytes: Uint8Array): NodeHeader {
  const reader = new ByteReader(bytes);
  const version = reader.byte();
  if (version !== PAXOS_RECORD_VERSION)
    throw new DecodeError(`node record version ${version}; this build reads ${PAXOS_RECORD_VERSION}`);
  const node = readNodeId(reader);
  const promised = reader.uint();
  const snapshot = readSnapshot(reader);
  reader.end();
  return { node, promised, snapshot };
}

export function encodeStoredEntry<C>(entry: LogEntry<C>, codec: CommandCodec<C>): Uint8Array {
  const writer = new ByteWriter(64);
  writeStoredEntry(writer, entry, codec);
  return writer.finish();
}

/** encodeStoredEntry's bytes, appended to a writer. */
export function writeStoredEntry<C>(writer: ByteWriter, entry: LogEntry<C>, codec: CommandCodec<C>): void {
  writer.byte(PAXOS_RECORD_VERSION);
  writeLogEntry(writer, entry, codec);
}

export function decodeStoredEntry<C>(bytes: Uint8Array, codec: CommandCodec<C>): LogEntry<C> {
  const reader = new ByteReader(bytes);
  const version = reader.byte();
  if (version !== PAXOS_RECORD_VERSION)
    throw new DecodeError(`log entry record version ${version}; this build reads ${PAXOS_RECORD_VERSION}`);
  const entry = readLogEntry(reader, codec);
  reader.end();
  return entry;
}

/** Reassembles a node from its header and its stored entries (any order; above the snapshot). */
export function persistedNode<C>(header: NodeHeader, entries: readonly LogEntry<C>[]): PersistedNode<C> {
  const above = entries.filter((entry) => entry.slot > header.snapshot.index);
  above.sort((a, b) => a.slot - b.slot);
  return { node: header.node, promised: header.promised, snapshot: header.snapshot, entries: above };
}
