/**
 * Canonical binary encoding of the cell's values, commands and results (docs/PROTOCOL.md section 15,
 * "Encoding"). One logical value has exactly one encoding; decoders reject everything else with a
 * DecodeError and never throw anything else, whatever the input bytes.
 *
 * Command decoding bounds lengths by the message size, not by the data-model limits: a command
 * that breaks a limit still decodes, so that apply can reject it deterministically with a message
 * for people. Encoders throw RangeError for what cannot be encoded at all (a JS number where a
 * value belongs, a string with an unpaired surrogate, an unknown tag): validate commands first.
 */
import { assert, ByteReader, ByteWriter, DecodeError, limits } from "../core/index.ts";
import type { CommandCodec } from "../paxos/index.ts";
import { utf8ByteLength, wellFormedUtf8Length } from "./text.ts";
import {
  type Command,
  type CommandResult,
  type Condition,
  type ItemRead,
  type LeaseOp,
  type LeaseResult,
  OPERATION_FORMAT_VERSION,
  type Operation,
  type Transaction,
  type TxnResult,
  type Value,
  type Write,
} from "./types.ts";

/** Bytes of a rejection's detail text in a result; longer details are clipped when made. */
export const resultDetailBytesMax = 512;
/** Magnitude bytes of a lease fencing token (2^256 grants: never reached). */
const leaseTokenBytesMax = 32;
/** Bound on every length inside a command: the message that carries it. */
const commandPartBytesMax = limits.messageBytesMax;

/** The results that carry no data (shared, frozen). */
export const staleRequest: CommandResult = Object.freeze({ kind: "stale_request" });
export const sessionExpired: CommandResult = Object.freeze({ kind: "session_expired" });
export const sessionsFull: CommandResult = Object.freeze({ kind: "sessions_full" });

// ---- tags (part of the format: never renumber)
const valueTag = { false: 0, true: 1, integer: 2, bytes: 3 } as const;
/** In a read, the item was missing. Only valid where a value may be absent. */
const missingTag = 4;
const operationTag = { txn: 1, lease: 2 } as const;
const conditionTags = ["exists", "missing", "equals", "lt", "le", "gt", "ge"] as const;
const writeTags = ["put", "delete", "add"] as const;
const leaseTags = ["acquire", "renew", "release"] as const;
const resultTag = { txn: 1, lease: 2, stale_request: 3, session_expired: 4, sessions_full: 5 } as const;
const txnStatusTag = { committed: 1, condition_failed: 2, rejected: 3 } as const;
const txnRejectReasons = ["type_mismatch", "value_too_large", "cell_full", "invalid"] as const;
const leaseStatusTag = { granted: 1, released: 2, held: 3, not_held: 4, rejected: 5 } as const;
const leaseRejectReasons = ["cell_full", "invalid"] as const;

// ---- sizes

/** Bytes of an unsigned varint. */
export function varintBytes(value: number): number {
  let bytes = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 0x80);
    bytes++;
  }
  return bytes;
}

/** Bytes of a length-prefixed UTF-8 string. */
export function textBytes(text: string): number {
  const length = utf8ByteLength(text);
  return varintBytes(length) + length;
}

/** Bytes of the minimal magnitude of an integer (0 for 0n). */
export function magnitudeBytes(value: bigint): number {
  const magnitude = value < 0n ? -value : value;
  if (magnitude <= 0xffffffffn) {
    const small = Number(magnitude);
    if (small === 0) return 0;
    if (small < 0x100) return 1;
    if (small < 0x10000) return 2;
    if (small < 0x1000000) return 3;
    return 4;
  }
  return (magnitude.toString(16).length + 1) >> 1;
}

/** Bytes of an encoded integer: sign byte, length, magnitude. */
export function integerBytes(value: bigint): number {
  const magnitude = magnitudeBytes(value);
  return 1 + varintBytes(magnitude) + magnitude;
}

/** Bytes of an encoded value (tag included). */
export function valueBytes(value: Value): number {
  if (typeof value === "boolean") return 1;
  if (typeof value === "bigint") return 1 + integerBytes(value);
  return 1 + varintBytes(value.length) + value.length;
}

function conditionBytes(condition: Condition): number {
  const head = 1 + textBytes(condition.item);
  switch (condition.op) {
    case "exists":
    case "missing":
      return head;
    case "equals":
      return head + valueBytes(condition.value);
    default:
      return head + integerBytes(condition.value);
  }
}

function writeBytes(write: Write): number {
  const head = 1 + textBytes(write.item);
  switch (write.op) {
    case "put":
      return head + valueBytes(write.value);
    case "delete":
      return head;
    default:
      return head + integerBytes(write.delta);
  }
}

/** Bytes of an encoded transaction (its conditions, reads and writes). */
export function transactionBytes(txn: Transaction): number {
  let bytes =
    varintBytes(txn.conditions.length) + varintBytes(txn.reads.length) + varintBytes(txn.writes.length);
  for (const condition of txn.conditions) bytes += conditionBytes(condition);
  for (const item of txn.reads) bytes += textBytes(item);
  for (const write of txn.writes) bytes += writeBytes(write);
  return bytes;
}

function leaseOpBytes(lease: LeaseOp): number {
  const head = 1 + textBytes(lease.name) + textBytes(lease.holder);
  return lease.op === "release" ? head : head + varintBytes(lease.durationMs);
}

/** Bytes of an encoded operation, as it sits inside a command. */
export function operationBytes(op: Operation): number {
  switch (op.type) {
    case "txn":
      return 1 + transactionBytes(op.txn);
    case "lease":
      return 1 + leaseOpBytes(op.lease);
    default:
      return op.bytes.length;
  }
}

/** Exact length of encodeCommand(command), computed without encoding. */
export function commandBytes(command: Command): number {
  return commandBytesWith(command, operationBytes(command.op));
}

/** commandBytes, given operationBytes(command.op). */
function commandBytesWith(command: Command, opLength: number): number {
  return (
    varintBytes(command.version) +
    varintBytes(command.session) +
    varintBytes(command.seq) +
    1 +
    varintBytes(opLength) +
    opLength
  );
}

function readsBytes(reads: readonly ItemRead[] | null): number {
  if (reads === null) return 1;
  let bytes = 1 + varintBytes(reads.length);
  for (let i = 0; i < reads.length; i++) {
    const read = reads[i] as ItemRead;
    bytes += textBytes(read.item) + (read.value === null ? 1 : valueBytes(read.value));
  }
  return bytes;
}

function txnResultBytes(result: TxnResult): number {
  switch (result.status) {
    case "committed": {
      if (result.added === null) return 2 + readsBytes(result.reads);
      let bytes = 2 + readsBytes(result.reads) + varintBytes(result.added.length);
      const added = result.added;
      for (let i = 0; i < added.length; i++) {
        const add = added[i] as (typeof added)[number];
        bytes += textBytes(add.item) + integerBytes(add.value);
      }
      return bytes;
    }
    case "condition_failed":
      return 1 + varintBytes(result.condition) + readsBytes(result.reads);
    default:
      return 2 + (result.item === null ? 1 : 1 + textBytes(result.item)) + textBytes(result.detail);
  }
}

function leaseResultBytes(result: LeaseResult): number {
  switch (result.status) {
    case "granted":
      return 1 + textBytes(result.holder) + varintBytes(result.expiresAtMs) + integerBytes(result.token);
    case "held":
      return 1 + textBytes(result.holder) + varintBytes(result.expiresAtMs);
    case "rejected":
      return 2 + textBytes(result.detail);
    default:
      return 1;
  }
}

/** Exact length of encodeResult(result), computed without encoding. */
export function resultBytes(result: CommandResult): number {
  switch (result.kind) {
    case "txn":
      return 1 + txnResultBytes(result.result);
    case "lease":
      return 1 + leaseResultBytes(result.result);
    default:
      return 1;
  }
}

// ---- writing

/** A writer sized for `expectedBytes` (any estimate is fine: the writer grows as needed). */
export function writerFor(expectedBytes: number): ByteWriter {
  return new ByteWriter(expectedBytes);
}

/** Sign byte, length, little-endian magnitude (ByteWriter.bigint). */
export function writeInteger(writer: ByteWriter, value: bigint): void {
  writer.bigint(value);
}

/** A length-prefixed UTF-8 string; throws RangeError for text with an unpaired surrogate. */
export function writeText(writer: ByteWriter, text: string, what: string): void {
  if (typeof text !== "string" || wellFormedUtf8Length(text) < 0) {
    throw new RangeError(`cannot encode ${what}: not well-formed Unicode text`);
  }
  writer.string(text);
}

export function writeValue(writer: ByteWriter, value: Value): void {
  if (typeof value === "boolean") {
    writer.byte(value ? valueTag.true : valueTag.false);
  } else if (typeof value === "bigint") {
    writer.byte(valueTag.integer);
    writeInteger(writer, value);
  } else if (value instanceof Uint8Array) {
    writer.byte(valueTag.bytes);
    writer.bytes(value);
  } else {
    throw new RangeError(
      `cannot encode ${typeof value} as a value: values are Uint8Array, bigint or boolean`,
    );
  }
}

function writeBigintField(writer: ByteWriter, value: bigint, what: string): void {
  if (typeof value !== "bigint") {
    throw new RangeError(`cannot encode ${what}: ${typeof value} is not a bigint`);
  }
  writeInteger(writer, value);
}

function tagOf(tags: readonly string[], name: string, what: string): number {
  const tag = tags.indexOf(name);
  if (tag < 0) throw new RangeError(`cannot encode ${what} ${JSON.stringify(name)}: unknown`);
  return tag;
}

function writeTransaction(writer: ByteWriter, txn: Transaction): void {
  writer.uint(txn.conditions.length);
  for (const condition of txn.conditions) {
    writer.byte(tagOf(conditionTags, condition.op, "condition"));
    writeText(writer, condition.item, "a condition's item key");
    if (condition.op === "equals") writeValue(writer, condition.value);
    else if (condition.op !== "exists" && condition.op !== "missing") {
      writeBigintField(writer, condition.value, "a comparison value");
    }
  }
  writer.uint(txn.reads.length);
  for (const item of txn.reads) writeText(writer, item, "a read's item key");
  writer.uint(txn.writes.length);
  for (const write of txn.writes) {
    writer.byte(tagOf(writeTags, write.op, "write"));
    writeText(writer, write.item, "a write's item key");
    if (write.op === "put") writeValue(writer, write.value);
    else if (write.op === "add") writeBigintField(writer, write.delta, "an add delta");
  }
}

function writeLeaseOp(writer: ByteWriter, lease: LeaseOp): void {
  writer.byte(tagOf(leaseTags, lease.op, "lease operation"));
  writeText(writer, lease.name, "a lease name");
  writeText(writer, lease.holder, "a lease holder");
  if (lease.op !== "release") writer.uint(lease.durationMs);
}

/** The operation alone (what sits length-prefixed inside a command). */
export function encodeOperation(op: Operation): Uint8Array {
  const writer = writerFor(operationBytes(op));
  writeOperation(writer, op);
  return writer.finish();
}

/** Writes encodeOperation(op)'s bytes into `writer`, without a buffer of their own. */
export function writeOperation(writer: ByteWriter, op: Operation): void {
  switch (op.type) {
    case "txn":
      writer.byte(operationTag.txn);
      writeTransaction(writer, op.txn);
      break;
    case "lease":
      writer.byte(operationTag.lease);
      writeLeaseOp(writer, op.lease);
      break;
    case "unknown":
      writer.raw(op.bytes);
      break;
    default:
      throw new RangeError(`cannot encode operation type ${JSON.stringify((op as { type: unknown }).type)}`);
  }
}

/**
 * Envelope: uint version, uint session, uint seq, bool newSession, then the operation as a
 * length-prefixed byte string, so a command of an unknown version still decodes.
 */
export function encodeCommand(command: Command): Uint8Array {
  const writer = writerFor(commandBytes(command));
  writeCommandBody(writer, command, false);
  return writer.finish();
}

/**
 * Writes encodeCommand(command)'s bytes into `writer`, after their length when `prefixed`
 * (commandCodec), with the operation written in place rather than encoded apart and copied.
 * Throws what encodeCommand throws: a bad envelope before anything is written, an operation that
 * cannot be encoded partway through (whoever catches it drops what the writer holds).
 */
function writeCommandBody(writer: ByteWriter, command: Command, prefixed: boolean): void {
  const known = command.version === OPERATION_FORMAT_VERSION;
  if (known === (command.op.type === "unknown")) {
    throw new RangeError(
      known
        ? `an operation of type "unknown" cannot be encoded under version ${OPERATION_FORMAT_VERSION}`
        : `this build writes operations of version ${OPERATION_FORMAT_VERSION} only, not ${command.version}`,
    );
  }
  if (typeof command.newSession !== "boolean") {
    throw new RangeError("cannot encode newSession: not a boolean");
  }
  const opLength = operationBytes(command.op);
  if (prefixed) writer.uint(commandBytesWith(command, opLength));
  writer
    .uint(command.version)
    .uint(command.session)
    .uint(command.seq)
    .bool(command.newSession)
    .uint(opLength);
  const opStart = writer.size;
  writeOperation(writer, command.op);
  // The length prefix was computed, not measured: the two must agree byte for byte.
  assert(writer.size - opStart === opLength, "an operation's computed length matches its encoding");
}

function writeReads(writer: ByteWriter, reads: readonly ItemRead[] | null): void {
  if (reads === null) {
    writer.byte(0);
    return;
  }
  writer.byte(1).uint(reads.length);
  for (const read of reads) {
    writeText(writer, read.item, "a read's item key");
    if (read.value === null) writer.byte(missingTag);
    else writeValue(writer, read.value);
  }
}

export function writeResult(writer: ByteWriter, result: CommandResult): void {
  switch (result.kind) {
    case "txn": {
      writer.byte(resultTag.txn);
      const txn = result.result;
      writer.byte(txnStatusTag[txn.status]);
      switch (txn.status) {
        case "committed":
          writeReads(writer, txn.reads);
          if (txn.added === null) {
            writer.byte(0);
            break;
          }
          writer.byte(1).uint(txn.added.length);
          for (const add of txn.added) {
            writeText(writer, add.item, "an added item key");
            writeInteger(writer, add.value);
          }
          break;
        case "condition_failed":
          writer.uint(txn.condition);
          writeReads(writer, txn.reads);
          break;
        case "rejected":
          writer.byte(tagOf(txnRejectReasons, txn.reason, "rejection reason"));
          if (txn.item === null) writer.byte(0);
          else {
            writer.byte(1);
            writeText(writer, txn.item, "a rejected item key");
          }
          writeText(writer, txn.detail, "a rejection detail");
          break;
      }
      return;
    }
    case "lease": {
      writer.byte(resultTag.lease);
      const lease = result.result;
      writer.byte(leaseStatusTag[lease.status]);
      switch (lease.status) {
        case "granted":
          writeText(writer, lease.holder, "a lease holder");
          writer.uint(lease.expiresAtMs);
          writeInteger(writer, lease.token);
          break;
        case "held":
          writeText(writer, lease.holder, "a lease holder");
          writer.uint(lease.expiresAtMs);
          break;
        case "rejected":
          writer.byte(tagOf(leaseRejectReasons, lease.reason, "rejection reason"));
          writeText(writer, lease.detail, "a rejection detail");
          break;
        default:
          break;
      }
      return;
    }
    default:
      writer.byte(resultTag[result.kind]);
  }
}

export function encodeResult(result: CommandResult): Uint8Array {
  const writer = writerFor(resultBytes(result));
  writeResult(writer, result);
  return writer.finish();
}

export function encodeValue(value: Value): Uint8Array {
  const writer = writerFor(valueBytes(value));
  writeValue(writer, value);
  return writer.finish();
}

// ---- reading

/** An integer as written by writeInteger / ByteWriter.bigint, canonical, in linear time. */
export function readInteger(reader: ByteReader, magnitudeBytesMax: number): bigint {
  return reader.bigint(magnitudeBytesMax);
}

/** A value whose byte string and integer magnitude are at most `bytesMax` bytes. */
export function readValue(reader: ByteReader, bytesMax: number): Value {
  return readValueAfterTag(reader, reader.byte(), bytesMax);
}

function readValueAfterTag(reader: ByteReader, tag: number, bytesMax: number): Value {
  switch (tag) {
    case valueTag.false:
      return false;
    case valueTag.true:
      return true;
    case valueTag.integer:
      return readInteger(reader, bytesMax);
    case valueTag.bytes:
      return reader.bytes(bytesMax);
    default:
      throw new DecodeError(`invalid value tag ${tag}`);
  }
}

function readTag<T>(reader: ByteReader, tags: readonly T[], what: string): T {
  const tag = reader.byte();
  const name = tags[tag];
  if (name === undefined) throw new DecodeError(`invalid ${what} tag ${tag}`);
  return name;
}

/** A count of elements that each take at least one byte: bounded by what is left. */
function readCount(reader: ByteReader, what: string): number {
  const count = reader.uint();
  if (count > reader.remaining) throw new DecodeError(`${what} count ${count} exceeds the remaining input`);
  return count;
}

/** The empty parts of decoded transactions (most have no conditions, or no reads): one, frozen. */
const noneDecoded: readonly never[] = Object.freeze([]);

/**
 * `count` items read by `read`, in an array created at its final size (one pushed onto an empty
 * literal would get room for 17), or the shared empty one: this runs for every command a node
 * receives.
 */
function readList<T>(reader: ByteReader, count: number, read: (reader: ByteReader) => T): readonly T[] {
  if (count === 0) return noneDecoded;
  const list = new Array<T>(count);
  for (let i = 0; i < count; i++) list[i] = read(reader);
  return list;
}

function readCondition(reader: ByteReader): Condition {
  const op = readTag(reader, conditionTags, "condition");
  const item = reader.string(commandPartBytesMax);
  switch (op) {
    case "exists":
    case "missing":
      return { item, op };
    case "equals":
      return { item, op, value: readValue(reader, commandPartBytesMax) };
    default:
      return { item, op, value: readInteger(reader, commandPartBytesMax) };
  }
}

function readItem(reader: ByteReader): string {
  return reader.string(commandPartBytesMax);
}

function readWrite(reader: ByteReader): Write {
  const op = readTag(reader, writeTags, "write");
  const item = reader.string(commandPartBytesMax);
  switch (op) {
    case "put":
      return { item, op, value: readValue(reader, commandPartBytesMax) };
    case "delete":
      return { item, op };
    default:
      return { item, op, delta: readInteger(reader, commandPartBytesMax) };
  }
}

function readTransaction(reader: ByteReader): Transaction {
  const conditions = readList(reader, readCount(reader, "condition"), readCondition);
  const reads = readList(reader, readCount(reader, "read"), readItem);
  const writes = readList(reader, readCount(reader, "write"), readWrite);
  return { conditions, reads, writes };
}

function readLeaseOp(reader: ByteReader): LeaseOp {
  const op = readTag(reader, leaseTags, "lease operation");
  const name = reader.string(commandPartBytesMax);
  const holder = reader.string(commandPartBytesMax);
  if (op === "release") return { op, name, holder };
  return { op, name, holder, durationMs: reader.uint() };
}

/** Decode an operation of the current format version. */
export function decodeOperation(bytes: Uint8Array): Operation {
  const reader = new ByteReader(bytes);
  const op = readOperation(reader);
  reader.end();
  return op;
}

/** An operation of the current format version. */
export function readOperation(reader: ByteReader): Operation {
  const tag = reader.byte();
  let op: Operation;
  if (tag === operationTag.txn) op = { type: "txn", txn: readTransaction(reader) };
  else if (tag === operationTag.lease) op = { type: "lease", lease: readLeaseOp(reader) };
  else throw new DecodeError(`invalid operation tag ${tag}`);
  return op;
}

export function decodeCommand(bytes: Uint8Array): Command {
  const reader = new ByteReader(bytes);
  const command = readCommand(reader);
  reader.end();
  return command;
}

function readCommand(reader: ByteReader): Command {
  const version = reader.uint();
  const session = reader.uint();
  const seq = reader.uint();
  const newSession = reader.bool();
  // A known operation is decoded in place; an unknown one keeps a copy of its bytes.
  let op: Operation;
  if (version === OPERATION_FORMAT_VERSION) {
    op = reader.nested(commandPartBytesMax, readOperation);
  } else {
    op = { type: "unknown", bytes: reader.bytes(commandPartBytesMax) };
  }
  return { version, session, seq, newSession, op };
}

function readReads(reader: ByteReader): ItemRead[] | null {
  if (!reader.bool()) return null;
  const count = reader.uint();
  if (count > limits.transactionItemsMax) {
    throw new DecodeError(`${count} reads exceed the limit of ${limits.transactionItemsMax}`);
  }
  const reads = new Array<ItemRead>(count);
  for (let i = 0; i < count; i++) {
    const item = reader.string(limits.itemKeyBytesMax);
    const tag = reader.byte();
    const value = tag === missingTag ? null : readValueAfterTag(reader, tag, limits.itemValueBytesMax);
    reads[i] = { item, value };
  }
  return reads;
}

function readTxnResult(reader: ByteReader): TxnResult {
  const status = reader.byte();
  switch (status) {
    case txnStatusTag.committed: {
      const reads = readReads(reader);
      if (!reader.bool()) return { status: "committed", reads, added: null };
      const count = reader.uint();
      if (count > limits.transactionItemsMax) {
        throw new DecodeError(`${count} added items exceed the limit of ${limits.transactionItemsMax}`);
      }
      const added = new Array<{ item: string; value: bigint }>(count);
      for (let i = 0; i < count; i++) {
        const item = reader.string(limits.itemKeyBytesMax);
        added[i] = { item, value: readInteger(reader, limits.itemValueBytesMax) };
      }
      return { status: "committed", reads, added };
    }
    case txnStatusTag.condition_failed: {
      const condition = reader.uint();
      return { status: "condition_failed", condition, reads: readReads(reader) };
    }
    case txnStatusTag.rejected: {
      const reason = readTag(reader, txnRejectReasons, "rejection reason");
      const item = reader.bool() ? reader.string(limits.itemKeyBytesMax) : null;
      return { status: "rejected", reason, item, detail: reader.string(resultDetailBytesMax) };
    }
    default:
      throw new DecodeError(`invalid transaction status tag ${status}`);
  }
}

function readLeaseResult(reader: ByteReader): LeaseResult {
  const status = reader.byte();
  switch (status) {
    case leaseStatusTag.granted: {
      const holder = reader.string(limits.leaseNameBytesMax);
      const expiresAtMs = reader.uint();
      return { status: "granted", holder, expiresAtMs, token: readInteger(reader, leaseTokenBytesMax) };
    }
    case leaseStatusTag.released:
      return { status: "released" };
    case leaseStatusTag.held: {
      const holder = reader.string(limits.leaseNameBytesMax);
      return { status: "held", holder, expiresAtMs: reader.uint() };
    }
    case leaseStatusTag.not_held:
      return { status: "not_held" };
    case leaseStatusTag.rejected: {
      const reason = readTag(reader, leaseRejectReasons, "rejection reason");
      return { status: "rejected", reason, detail: reader.string(resultDetailBytesMax) };
    }
    default:
      throw new DecodeError(`invalid lease status tag ${status}`);
  }
}

export function readResult(reader: ByteReader): CommandResult {
  const kind = reader.byte();
  switch (kind) {
    case resultTag.txn:
      return { kind: "txn", result: readTxnResult(reader) };
    case resultTag.lease:
      return { kind: "lease", result: readLeaseResult(reader) };
    case resultTag.stale_request:
      return staleRequest;
    case resultTag.session_expired:
      return sessionExpired;
    case resultTag.sessions_full:
      return sessionsFull;
    default:
      throw new DecodeError(`invalid result kind tag ${kind}`);
  }
}

export function decodeResult(bytes: Uint8Array): CommandResult {
  const reader = new ByteReader(bytes);
  const result = readResult(reader);
  reader.end();
  return result;
}

export function decodeValue(bytes: Uint8Array): Value {
  const reader = new ByteReader(bytes);
  const value = readValue(reader, limits.itemValueBytesMax);
  reader.end();
  return value;
}

/**
 * Commands inside the replica's messages and records (src/paxos/codec.ts): each is its
 * canonical encoding, length-prefixed, so a command of an unknown version travels intact.
 */
export const commandCodec: CommandCodec<Command> = Object.freeze({
  write(writer: ByteWriter, command: Command): void {
    writeCommandBody(writer, command, true);
  },
  read(reader: ByteReader): Command {
    return reader.nested(commandPartBytesMax, readCommand);
  },
});
