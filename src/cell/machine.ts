/**
 * The cell state machine: typed items, transactions, leases and exactly-once sessions.
 * Pure and deterministic: the only time it knows is the proposer's stamp in each entry, and
 * `apply` is total (every command, valid or not, has a specified outcome; nothing throws).
 * docs/PROTOCOL.md section 15 specifies every case.
 */
import {
  assert,
  ByteReader,
  bytesEqual,
  DecodeError,
  hashBytes,
  InvariantError,
  limits,
} from "../core/index.ts";
import type { ApplyContext, StateMachine } from "../paxos/index.ts";
import {
  commandBytes,
  magnitudeBytes,
  readInteger,
  readResult,
  readValue,
  resultBytes,
  resultDetailBytesMax,
  sessionExpired,
  sessionsFull,
  staleRequest,
  valueBytes,
  writeInteger,
  writeResult,
  writerFor,
  writeText,
  writeValue,
} from "./codec.ts";
import { clipText, quote, utf8ByteLength } from "./text.ts";
import type {
  Command,
  CommandResult,
  Condition,
  ItemRead,
  LeaseOp,
  LeaseResult,
  LeaseState,
  Transaction,
  TxnResult,
  Value,
} from "./types.ts";
import {
  type CommandProblem,
  unsupportedVersionReason,
  validateEnvelope,
  validateOperation,
  validateTransaction,
} from "./validate.ts";

/**
 * Largest stamp and cell time (2^52 ms, about 142,000 years). Later stamps are clamped, so that
 * time + lease duration and time + session retention stay exact integers.
 */
export const stampMsMax = 2 ** 52;
/** Bytes a lease counts in the cell's size beside its name and holder (expiry and token). */
export const leaseOverheadBytes = 16;
/** First byte of every snapshot; bump on any change of the snapshot layout. */
export const snapshotFormat = 1;
/** Magnitude bytes of the lease token counter in a snapshot (2^256 grants: never reached). */
const leaseTokenBytesMax = 32;

/** Size an item counts in the cell: UTF-8 key bytes plus encoded value bytes (tag included). */
export function itemBytes(key: string, value: Value): number {
  return utf8ByteLength(key) + valueBytes(value);
}

/** Size a lease counts in the cell: UTF-8 name and holder bytes plus leaseOverheadBytes. */
export function leaseBytes(name: string, holder: string): number {
  return utf8ByteLength(name) + utf8ByteLength(holder) + leaseOverheadBytes;
}

interface LeaseEntry {
  readonly holder: string;
  expiresAtMs: number;
  readonly token: bigint;
}

interface SessionEntry {
  seq: number;
  /** What a retry of `seq` gets: the original result, without reads if they did not fit. */
  result: CommandResult;
  lastUsedMs: number;
}

/** What the cell remembers of one client session. */
export interface SessionState {
  readonly session: number;
  readonly seq: number;
  readonly lastUsedMs: number;
  readonly result: CommandResult;
}

const noReads: readonly ItemRead[] = Object.freeze([]);
const noAdds: readonly { readonly item: string; readonly value: bigint }[] = Object.freeze([]);
const notHeld: LeaseResult = Object.freeze({ status: "not_held" });
const released: LeaseResult = Object.freeze({ status: "released" });

/** The table every cell without items, leases or sessions reads from; never written to. */
const emptyTable: ReadonlyMap<unknown, unknown> = new Map();

export class CellMachine implements StateMachine<Command, CommandResult> {
  // The tables are created on first use: a resident node of an untouched cell holds none of them.
  private itemTable: Map<string, Value> | null = null;
  private leaseTable: Map<string, LeaseEntry> | null = null;
  private sessionTable: Map<number, SessionEntry> | null = null;

  // Reads go through these getters and never allocate; writes use the `...ForWrite` methods.
  private get items(): ReadonlyMap<string, Value> {
    return this.itemTable ?? (emptyTable as ReadonlyMap<string, Value>);
  }
  private get leases(): ReadonlyMap<string, LeaseEntry> {
    return this.leaseTable ?? (emptyTable as ReadonlyMap<string, LeaseEntry>);
  }
  private get sessions(): ReadonlyMap<number, SessionEntry> {
    return this.sessionTable ?? (emptyTable as ReadonlyMap<number, SessionEntry>);
  }
  private itemsForWrite(): Map<string, Value> {
    if (this.itemTable === null) this.itemTable = new Map();
    return this.itemTable;
  }
  private leasesForWrite(): Map<string, LeaseEntry> {
    if (this.leaseTable === null) this.leaseTable = new Map();
    return this.leaseTable;
  }
  private sessionsForWrite(): Map<number, SessionEntry> {
    if (this.sessionTable === null) this.sessionTable = new Map();
    return this.sessionTable;
  }

  /** Sum of itemBytes over items and leaseBytes over leases, kept up to date by every change. */
  private bytes = 0;
  /** The last fencing token granted (0n before the first grant). */
  private tokenLast = 0n;
  /**
   * The cell's time (ms): what leases and sessions are measured against. It advances by the
   * stamped time elapsed between entries of one ballot (one proposer's clock), never goes back,
   * and stands still when the ballot changes: clocks of different servers are never compared.
   */
  private time = 0;
  /** The largest stamp seen since the ballot last changed. */
  private stampLast = 0;
  /** The ballot of the last entry applied (0 before the first, and for entries without one). */
  private ballotLast = 0;

  // ---- StateMachine

  unsupported(command: Command): string | null {
    const version = typeof command === "object" && command !== null ? command.version : undefined;
    return unsupportedVersionReason(version);
  }

  apply(command: Command, context: ApplyContext): CommandResult {
    const now = this.advanceClock(context.stampMs, context.stampBallot);
    const envelopeProblem = validateEnvelope(command);
    if (envelopeProblem !== null) return invalid(isLeaseCommand(command), envelopeProblem);

    const known = this.sessions.get(command.session);
    if (known !== undefined) {
      if (command.seq < known.seq) return staleRequest;
      if (command.seq === known.seq) return known.result;
    } else if (!command.newSession) {
      return sessionExpired;
    } else if (this.sessions.size >= limits.sessionsPerCellMax && !this.evictIdleSession(now)) {
      return sessionsFull;
    }

    const result = this.execute(command, now);
    const stored = resultToStore(result);
    if (known !== undefined) {
      known.seq = command.seq;
      known.result = stored;
      known.lastUsedMs = now;
    } else {
      this.sessionsForWrite().set(command.session, { seq: command.seq, result: stored, lastUsedMs: now });
    }
    return result;
  }

  commandBytes(command: Command): number {
    return commandBytes(command);
  }

  /**
   * Layout (all integers as canonical varints, bigints sign + magnitude):
   * format byte, timeMs, stampLastMs, stampBallotLast, leaseTokenLast,
   * item count, then (key, value) by ascending key (UTF-16 code unit order),
   * lease count, then (name, holder, expiresAtMs, token) by ascending name,
   * session count, then (session, seq, lastUsedMs, stored result) by ascending session.
   */
  snapshot(): Uint8Array {
    const writer = writerFor(this.bytes + 64 + this.sessions.size * 32);
    writer.byte(snapshotFormat).uint(this.time).uint(this.stampLast).uint(this.ballotLast);
    writeInteger(writer, this.tokenLast);
    const keys = [...this.items.keys()].sort();
    writer.uint(keys.length);
    for (const key of keys) {
      writeText(writer, key, "an item key");
      writeValue(writer, this.items.get(key) as Value);
    }
    const names = [...this.leases.keys()].sort();
    writer.uint(names.length);
    for (const name of names) {
      const lease = this.leases.get(name) as LeaseEntry;
      writeText(writer, name, "a lease name");
      writeText(writer, lease.holder, "a lease holder");
      writer.uint(lease.expiresAtMs);
      writeInteger(writer, lease.token);
    }
    const sessions = [...this.sessions.keys()].sort((a, b) => a - b);
    writer.uint(sessions.length);
    for (const session of sessions) {
      const entry = this.sessions.get(session) as SessionEntry;
      writer.uint(session).uint(entry.seq).uint(entry.lastUsedMs);
      writeResult(writer, entry.result);
    }
    return writer.finish();
  }

  /** Replaces the whole state; on malformed bytes throws DecodeError and changes nothing. */
  restore(snapshot: Uint8Array): void {
    const reader = new ByteReader(snapshot);
    const format = reader.byte();
    if (format !== snapshotFormat) {
      throw new DecodeError(
        `snapshot format ${format} is not supported: this build reads format ${snapshotFormat}`,
      );
    }
    const time = reader.uint();
    const stampLast = reader.uint();
    const ballotLast = reader.uint();
    if (time > stampMsMax || stampLast > stampMsMax) {
      throw new DecodeError(`snapshot time ${time} or stamp ${stampLast} exceeds ${stampMsMax}`);
    }
    const tokenLast = readInteger(reader, leaseTokenBytesMax);
    if (tokenLast < 0n) throw new DecodeError("snapshot lease token counter is negative");

    let bytes = 0;
    const items = new Map<string, Value>();
    const itemCount = readCount(reader, "item");
    let previous: string | null = null;
    for (let i = 0; i < itemCount; i++) {
      const key = reader.string(limits.itemKeyBytesMax);
      if (key.length === 0) throw new DecodeError("snapshot holds an empty item key");
      if (previous !== null && !(previous < key)) {
        throw new DecodeError("snapshot items are not in ascending key order");
      }
      const value = readValue(reader, limits.itemValueBytesMax);
      items.set(key, value);
      bytes += itemBytes(key, value);
      previous = key;
    }

    const leases = new Map<string, LeaseEntry>();
    const tokens = new Set<bigint>();
    const leaseCount = readCount(reader, "lease");
    previous = null;
    for (let i = 0; i < leaseCount; i++) {
      const name = reader.string(limits.leaseNameBytesMax);
      const holder = reader.string(limits.leaseNameBytesMax);
      if (name.length === 0 || holder.length === 0) {
        throw new DecodeError("snapshot holds an empty lease name or holder");
      }
      if (previous !== null && !(previous < name)) {
        throw new DecodeError("snapshot leases are not in ascending name order");
      }
      const expiresAtMs = reader.uint();
      if (expiresAtMs > time + limits.leaseDurationMsMax) {
        throw new DecodeError(`snapshot lease expiry ${expiresAtMs} is later than any grant could set`);
      }
      const token = readInteger(reader, leaseTokenBytesMax);
      if (token < 1n || token > tokenLast || tokens.has(token)) {
        throw new DecodeError(`snapshot lease token ${token} is not a distinct grant in [1, ${tokenLast}]`);
      }
      tokens.add(token);
      leases.set(name, { holder, expiresAtMs, token });
      bytes += leaseBytes(name, holder);
      previous = name;
    }
    if (bytes > limits.cellBytesMax) {
      throw new DecodeError(
        `snapshot cell of ${bytes} bytes exceeds the limit of ${limits.cellBytesMax} bytes`,
      );
    }

    const sessions = new Map<number, SessionEntry>();
    const sessionCount = reader.uint();
    if (sessionCount > limits.sessionsPerCellMax) {
      throw new DecodeError(
        `snapshot holds ${sessionCount} sessions, more than ${limits.sessionsPerCellMax}`,
      );
    }
    let previousSession = 0;
    for (let i = 0; i < sessionCount; i++) {
      const session = reader.uint();
      if (session <= previousSession) throw new DecodeError("snapshot sessions are not in ascending order");
      const seq = reader.uint();
      if (seq < 1) throw new DecodeError("snapshot session has sequence number 0");
      const lastUsedMs = reader.uint();
      if (lastUsedMs > time) {
        throw new DecodeError("snapshot session was used after the snapshot's time");
      }
      const result = readResult(reader);
      if (result.kind !== "txn" && result.kind !== "lease") {
        throw new DecodeError(`snapshot session holds a ${result.kind} result, which is never stored`);
      }
      if (resultToStore(result) !== result) {
        throw new DecodeError("snapshot session result is too large to keep with its reads");
      }
      sessions.set(session, { seq, result, lastUsedMs });
      previousSession = session;
    }
    reader.end();

    this.itemTable = items.size > 0 ? items : null;
    this.leaseTable = leases.size > 0 ? leases : null;
    this.sessionTable = sessions.size > 0 ? sessions : null;
    this.bytes = bytes;
    this.tokenLast = tokenLast;
    this.time = time;
    this.stampLast = stampLast;
    this.ballotLast = ballotLast;
  }

  // ---- reads outside the log

  /**
   * The outcome a read-only transaction would have now (committed with reads, or
   * condition_failed), without touching sessions or time. A transaction that is invalid or has
   * writes is rejected as invalid: writes go through the log.
   */
  evaluateRead(txn: Transaction): TxnResult {
    const problem = validateTransaction(txn);
    if (problem !== null) return invalidTxn(problem);
    if (txn.writes.length > 0) {
      return {
        status: "rejected",
        reason: "invalid",
        item: null,
        detail: `a read takes no writes, and this transaction has ${txn.writes.length}; propose it through the log`,
      };
    }
    return this.executeTxn(txn);
  }

  /** The value of an item (a copy), or null when missing. */
  readItem(key: string): Value | null {
    const value = this.items.get(key);
    return value === undefined ? null : copyValue(value);
  }

  /** The lease as the cell holds it, expired or not, or null. Compare expiresAtMs with your time. */
  readLease(name: string): LeaseState | null {
    const lease = this.leases.get(name);
    if (lease === undefined) return null;
    return { name, holder: lease.holder, expiresAtMs: lease.expiresAtMs, token: lease.token };
  }

  /** What the cell remembers of a session, or null. */
  readSession(session: number): SessionState | null {
    const entry = this.sessions.get(session);
    if (entry === undefined) return null;
    return { session, seq: entry.seq, lastUsedMs: entry.lastUsedMs, result: entry.result };
  }

  get itemCount(): number {
    return this.items.size;
  }

  get leaseCount(): number {
    return this.leases.size;
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  /** The cell's size as limited by cellBytesMax (docs/PROTOCOL.md section 15, "Cell size"). */
  get cellBytes(): number {
    return this.bytes;
  }

  /** The cell's time: the largest stamp applied so far. */
  get timeMs(): number {
    return this.time;
  }

  /** The largest stamp seen since the ballot last changed. */
  get stampLastMs(): number {
    return this.stampLast;
  }

  /** The ballot of the last entry applied (0 before the first, or when entries carry none). */
  get stampBallotLast(): number {
    return this.ballotLast;
  }

  /** The last fencing token granted (0n before the first grant). */
  get leaseTokenLast(): bigint {
    return this.tokenLast;
  }

  /** A short hash of the snapshot: equal states have equal digests. */
  digest(): string {
    return hashBytes(this.snapshot());
  }

  /** Recomputes what is maintained incrementally and checks every invariant (O(cell)). */
  checkInvariants(): void {
    let bytes = 0;
    for (const [key, value] of this.items) {
      assert(
        key.length > 0 && utf8ByteLength(key) <= limits.itemKeyBytesMax,
        () => `bad item key ${quote(key)}`,
      );
      assert(valueSizeOk(value), () => `item ${quote(key)} holds a value beyond the limits`);
      bytes += itemBytes(key, value);
    }
    for (const [name, lease] of this.leases) {
      assert(
        lease.token >= 1n && lease.token <= this.tokenLast,
        () => `lease ${quote(name)} has a future token`,
      );
      bytes += leaseBytes(name, lease.holder);
    }
    assert(bytes === this.bytes, () => `cell size drifted: maintained ${this.bytes}, recomputed ${bytes}`);
    assert(bytes <= limits.cellBytesMax, () => `cell of ${bytes} bytes exceeds ${limits.cellBytesMax}`);
    assert(emptyTable.size === 0, "the shared empty table was written to");
    assert(this.sessions.size <= limits.sessionsPerCellMax, "too many sessions");
    for (const [session, entry] of this.sessions) {
      assert(entry.lastUsedMs <= this.time, () => `session ${session} used in the future`);
      assert(entry.result.kind === "txn" || entry.result.kind === "lease", "stored result of a wrong kind");
      assert(
        resultToStore(entry.result) === entry.result,
        () => `session ${session} keeps reads that do not fit`,
      );
    }
    assert(this.time <= stampMsMax && this.stampLast <= stampMsMax, "cell time beyond stampMsMax");
  }

  // ---- execution

  /**
   * Moves the cell's time by the stamped time elapsed since the previous entry of the same
   * ballot. A stamp that goes back moves nothing (and is forgotten: time goes on from the
   * largest stamp). A new ballot moves nothing and starts measuring from its own stamp. A stamp
   * that is not a finite number >= 0 is no reading: it changes nothing. Fractions are rounded
   * down; stamps above stampMsMax count as stampMsMax.
   */
  private advanceClock(stampMs: number, stampBallot: number | undefined): number {
    if (typeof stampMs !== "number" || !(stampMs >= 0) || stampMs === Number.POSITIVE_INFINITY)
      return this.time;
    const stamp = Math.min(Math.floor(stampMs), stampMsMax);
    const ballot =
      typeof stampBallot === "number" && Number.isSafeInteger(stampBallot) && stampBallot > 0
        ? stampBallot
        : 0;
    if (ballot !== this.ballotLast) {
      this.ballotLast = ballot;
      this.stampLast = stamp;
    } else if (stamp > this.stampLast) {
      this.time = Math.min(stampMsMax, this.time + (stamp - this.stampLast));
      this.stampLast = stamp;
    }
    return this.time;
  }

  /** Evicts the least recently used session if it has been idle for sessionRetentionMs. */
  private evictIdleSession(now: number): boolean {
    let oldest = 0;
    let oldestUsedMs = Number.POSITIVE_INFINITY;
    for (const [session, entry] of this.sessions) {
      if (entry.lastUsedMs < oldestUsedMs || (entry.lastUsedMs === oldestUsedMs && session < oldest)) {
        oldest = session;
        oldestUsedMs = entry.lastUsedMs;
      }
    }
    if (oldestUsedMs + limits.sessionRetentionMs > now) return false;
    this.sessionsForWrite().delete(oldest);
    return true;
  }

  private execute(command: Command, now: number): CommandResult {
    const op = command.op;
    const problem = validateOperation(op);
    if (problem !== null) return invalid(isLeaseCommand(command), problem);
    if (op.type === "txn") return { kind: "txn", result: this.executeTxn(op.txn) };
    if (op.type === "lease") return { kind: "lease", result: this.executeLease(op.lease, now) };
    return invalid(false, { code: "unknown_operation", message: "unknown operation", item: null });
  }

  /** Reads and conditions, then the writes; a transaction without writes changes nothing. */
  private executeTxn(txn: Transaction): TxnResult {
    const reads = this.readAll(txn.reads);
    const conditions = txn.conditions;
    for (let i = 0; i < conditions.length; i++) {
      if (!this.holds(conditions[i] as Condition)) return { status: "condition_failed", condition: i, reads };
    }
    const writes = txn.writes;
    if (writes.length === 0) return { status: "committed", reads, added: noAdds };

    // A transaction writes each item at most once (validated), so every write sees the state
    // before the transaction: compute all new values first, then apply them all or none. The
    // common single write keeps its value in a local (no array).
    let single: Value | undefined;
    const next: (Value | undefined)[] | null = writes.length > 1 ? new Array(writes.length) : null;
    let added: { item: string; value: bigint }[] | null = null;
    let growth = 0;
    for (let i = 0; i < writes.length; i++) {
      const write = writes[i] as Transaction["writes"][number];
      const key = write.item;
      const old = this.items.get(key);
      let value: Value | undefined;
      if (write.op === "put") {
        value = write.value;
      } else if (write.op === "add") {
        if (old !== undefined && typeof old !== "bigint") {
          return rejectedTxn(
            "type_mismatch",
            key,
            `writes[${i}] (add ${quote(key)}): the item holds ${kindOf(old)}, not an integer; ` +
              "add applies to integers only (a missing item counts as 0); nothing was written",
          );
        }
        const sum = (old ?? 0n) + write.delta;
        const sumBytes = magnitudeBytes(sum);
        if (sumBytes > limits.itemValueBytesMax) {
          return rejectedTxn(
            "value_too_large",
            key,
            `writes[${i}] (add ${quote(key)}): the sum's magnitude would take ${sumBytes} bytes, over the limit of ` +
              `${limits.itemValueBytesMax} bytes; nothing was written`,
          );
        }
        value = sum;
        // An array literal is allocated at its exact size; an empty one grows a larger store.
        if (added === null) added = [{ item: key, value: sum }];
        else added.push({ item: key, value: sum });
      }
      if (next === null) single = value;
      else next[i] = value;
      if (old !== undefined || value !== undefined) {
        const keyBytes = utf8ByteLength(key);
        if (value !== undefined) growth += keyBytes + valueBytes(value);
        if (old !== undefined) growth -= keyBytes + valueBytes(old);
      }
    }
    if (growth > 0 && this.bytes + growth > limits.cellBytesMax) {
      return rejectedTxn(
        "cell_full",
        null,
        `the transaction would grow the cell from ${this.bytes} to ${this.bytes + growth} bytes, over the limit ` +
          `of ${limits.cellBytesMax} bytes; delete items or release leases first; nothing was written`,
      );
    }
    for (let i = 0; i < writes.length; i++) {
      const key = (writes[i] as Transaction["writes"][number]).item;
      const value = next === null ? single : next[i];
      if (value === undefined) this.itemsForWrite().delete(key);
      else this.itemsForWrite().set(key, value instanceof Uint8Array ? new Uint8Array(value) : value);
    }
    this.bytes += growth;
    if (this.bytes < 0 || this.bytes > limits.cellBytesMax) {
      throw new InvariantError(`cell size ${this.bytes} out of bounds`);
    }
    return { status: "committed", reads, added: added ?? noAdds };
  }

  private readAll(keys: readonly string[]): readonly ItemRead[] {
    if (keys.length === 0) return noReads;
    const reads: ItemRead[] = [];
    for (const item of keys) {
      const value = this.items.get(item);
      reads.push({ item, value: value === undefined ? null : copyValue(value) });
    }
    return reads;
  }

  private holds(condition: Condition): boolean {
    const current = this.items.get(condition.item);
    switch (condition.op) {
      case "exists":
        return current !== undefined;
      case "missing":
        return current === undefined;
      case "equals":
        return current !== undefined && valuesEqual(current, condition.value);
      case "lt":
        return typeof current === "bigint" && current < condition.value;
      case "le":
        return typeof current === "bigint" && current <= condition.value;
      case "gt":
        return typeof current === "bigint" && current > condition.value;
      case "ge":
        return typeof current === "bigint" && current >= condition.value;
      default:
        return false;
    }
  }

  private executeLease(lease: LeaseOp, now: number): LeaseResult {
    const entry = this.leases.get(lease.name);
    const live = entry !== undefined && now < entry.expiresAtMs;
    switch (lease.op) {
      case "acquire": {
        if (live) {
          if (entry.holder !== lease.holder) {
            return { status: "held", holder: entry.holder, expiresAtMs: entry.expiresAtMs };
          }
          entry.expiresAtMs = now + lease.durationMs;
          return granted(entry);
        }
        const size = leaseBytes(lease.name, lease.holder);
        const growth = entry === undefined ? size : size - leaseBytes(lease.name, entry.holder);
        if (growth > 0 && this.bytes + growth > limits.cellBytesMax) {
          return {
            status: "rejected",
            reason: "cell_full",
            detail: clipText(
              `granting lease ${quote(lease.name)} would grow the cell from ${this.bytes} to ` +
                `${this.bytes + growth} bytes, over the limit of ${limits.cellBytesMax} bytes; ` +
                "release leases or delete items first",
              resultDetailBytesMax,
            ),
          };
        }
        this.tokenLast += 1n;
        const fresh: LeaseEntry = {
          holder: lease.holder,
          expiresAtMs: now + lease.durationMs,
          token: this.tokenLast,
        };
        this.leasesForWrite().set(lease.name, fresh);
        this.bytes += growth;
        assert(this.bytes <= limits.cellBytesMax, () => `cell size ${this.bytes} over the limit`);
        return granted(fresh);
      }
      case "renew":
        if (!live || entry.holder !== lease.holder) return notHeld;
        entry.expiresAtMs = now + lease.durationMs;
        return granted(entry);
      case "release":
        if (entry === undefined || entry.holder !== lease.holder) return notHeld;
        this.leasesForWrite().delete(lease.name);
        this.bytes -= leaseBytes(lease.name, entry.holder);
        return released;
      default:
        return notHeld;
    }
  }
}

function readCount(reader: ByteReader, what: string): number {
  const count = reader.uint();
  // Every entry takes at least two bytes.
  if (count > reader.remaining) {
    throw new DecodeError(`snapshot ${what} count ${count} exceeds the remaining input`);
  }
  return count;
}

function granted(entry: LeaseEntry): LeaseResult {
  return { status: "granted", holder: entry.holder, expiresAtMs: entry.expiresAtMs, token: entry.token };
}

/** The result a session keeps: the result itself if it fits, otherwise without its reads. */
/**
 * The result kept for retries: whole if it fits sessionResultBytesMax, else without its reads,
 * else (a commit with large `add` results) without its added values too.
 */
function resultToStore(result: CommandResult): CommandResult {
  if (result.kind !== "txn") return result;
  const txn = result.result;
  if (txn.status === "rejected" || resultBytes(result) <= limits.sessionResultBytesMax) return result;
  const withoutReads: CommandResult = { kind: "txn", result: { ...txn, reads: null } };
  if (txn.status !== "committed" || resultBytes(withoutReads) <= limits.sessionResultBytesMax)
    return withoutReads;
  return { kind: "txn", result: { ...txn, reads: null, added: null } };
}

function isLeaseCommand(command: unknown): boolean {
  if (typeof command !== "object" || command === null) return false;
  const op: unknown = (command as { op?: unknown }).op;
  return typeof op === "object" && op !== null && (op as { type?: unknown }).type === "lease";
}

function invalid(lease: boolean, problem: CommandProblem): CommandResult {
  if (lease) {
    return { kind: "lease", result: { status: "rejected", reason: "invalid", detail: problem.message } };
  }
  return { kind: "txn", result: invalidTxn(problem) };
}

function invalidTxn(problem: CommandProblem): TxnResult {
  return { status: "rejected", reason: "invalid", item: problem.item, detail: problem.message };
}

function rejectedTxn(
  reason: "type_mismatch" | "value_too_large" | "cell_full",
  item: string | null,
  detail: string,
) {
  return { status: "rejected", reason, item, detail: clipText(detail, resultDetailBytesMax) } as const;
}

function valuesEqual(current: Value, expected: Value): boolean {
  if (current instanceof Uint8Array) return expected instanceof Uint8Array && bytesEqual(current, expected);
  return current === expected;
}

function copyValue(value: Value): Value {
  return value instanceof Uint8Array ? new Uint8Array(value) : value;
}

function kindOf(value: Value): string {
  if (typeof value === "boolean") return "a boolean";
  if (typeof value === "bigint") return "an integer";
  return `a byte array of ${value.length} bytes`;
}

function valueSizeOk(value: Value): boolean {
  if (typeof value === "boolean") return true;
  if (typeof value === "bigint") return magnitudeBytes(value) <= limits.itemValueBytesMax;
  return value.length <= limits.itemValueBytesMax;
}
