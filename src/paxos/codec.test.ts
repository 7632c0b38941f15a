import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type ByteReader, type ByteWriter, DecodeError } from "../core/index.ts";
import { BALLOT_CHOSEN, BALLOT_NONE, INCARNATION_MAX, makeBallot, ROUND_MAX } from "./ballot.ts";
import {
  type CommandCodec,
  decodeNodeHeader,
  decodePaxosMessage,
  decodeStoredEntry,
  encodeNodeHeader,
  encodePaxosMessage,
  encodeStoredEntry,
  persistedNode,
} from "./codec.ts";
import type { LogEntry, LogValue, MembershipState, PaxosMessage, Snapshot } from "./types.ts";

/** The envelope of a message of cell "c" from s1 to s2. */
const envelopeS1S2 = {
  cellKey: "c",
  from: { serverId: "s1", incarnation: 1 },
  to: { serverId: "s2", incarnation: 2 },
  epoch: 1,
};

/** Commands in these tests are short strings. */
const textCodec: CommandCodec<string> = {
  write: (writer: ByteWriter, command: string) => {
    writer.string(command);
  },
  read: (reader: ByteReader) => reader.string(64),
};

const nat = fc.nat({ max: Number.MAX_SAFE_INTEGER });
/** Every ballot an election can make, and the two markers; decoders refuse other numbers. */
const ballot = fc.oneof(
  fc.constant(BALLOT_NONE),
  fc.constant(BALLOT_CHOSEN),
  fc
    .tuple(fc.integer({ min: 1, max: ROUND_MAX }), fc.integer({ min: 1, max: INCARNATION_MAX }))
    .map(([round, incarnation]) => makeBallot(round, incarnation)),
);
const nodeId = fc.record({
  serverId: fc.string({ minLength: 1, maxLength: 8 }),
  incarnation: fc.integer({ min: 1, max: 2 ** 20 - 1 }),
});
const stamp = fc.double({ noNaN: true, noDefaultInfinity: true });
const logValue: fc.Arbitrary<LogValue<string>> = fc.oneof(
  fc.record({ kind: fc.constant("noop" as const), stampMs: stamp }),
  fc.record({
    kind: fc.constant("commands" as const),
    stampMs: stamp,
    stampBallot: nat,
    commands: fc.array(fc.string({ maxLength: 20 }), { maxLength: 32 }),
  }),
  fc.record({
    kind: fc.constant("reconfigure" as const),
    stampMs: stamp,
    change: fc.record({
      add: fc.option(fc.string({ minLength: 1, maxLength: 8 }), { nil: null }),
      remove: fc.option(nodeId, { nil: null }),
    }),
  }),
);
const entries: fc.Arbitrary<LogEntry<string>[]> = fc
  .uniqueArray(fc.integer({ min: 1, max: 1_000_000 }), { maxLength: 6 })
  .chain((slots) =>
    fc.tuple(
      ...[...slots]
        .sort((a, b) => a - b)
        .map((slot) =>
          fc.record({
            slot: fc.constant(slot),
            ballot,
            value: logValue,
          }),
        ),
    ),
  );
const membership: fc.Arbitrary<MembershipState> = fc.record({
  epoch: nat,
  nextIncarnation: nat,
  configurations: fc.uniqueArray(nat, { minLength: 1, maxLength: 4 }).chain((froms) =>
    fc.tuple(
      ...[...froms]
        .sort((a, b) => a - b)
        .map((fromSlot) =>
          fc.record({
            fromSlot: fc.constant(fromSlot),
            epoch: nat,
            members: fc.array(nodeId, { minLength: 1, maxLength: 10 }),
          }),
        ),
    ),
  ),
});
const snapshot: fc.Arbitrary<Snapshot> = fc.record({
  index: nat,
  membership,
  state: fc.uint8Array({ maxLength: 100 }),
});
const envelope = {
  cellKey: fc.string({ minLength: 1, maxLength: 30 }),
  from: nodeId,
  to: nodeId,
  epoch: nat,
};
const message: fc.Arbitrary<PaxosMessage<string>> = fc.oneof(
  fc.record({ ...envelope, type: fc.constant("prepare" as const), ballot, fromSlot: nat }),
  fc.record({
    ...envelope,
    type: fc.constant("promise" as const),
    ballot,
    base: nat,
    coveredThrough: fc.oneof(fc.nat({ max: 2 ** 52 }), fc.constant(Number.POSITIVE_INFINITY)),
    applied: nat,
    entries,
  }),
  fc.record({
    ...envelope,
    type: fc.constant("accept" as const),
    ballot,
    slot: nat,
    value: logValue,
    commit: nat,
  }),
  fc.record({ ...envelope, type: fc.constant("accepted" as const), ballot, slot: nat, applied: nat }),
  fc.record({
    ...envelope,
    type: fc.constant("nack" as const),
    ballot,
    promised: ballot,
    reason: fc.constantFrom("ballot" as const, "epoch" as const),
    applied: nat,
  }),
  fc.record({ ...envelope, type: fc.constant("heartbeat" as const), ballot, commit: nat, round: nat }),
  fc.record({
    ...envelope,
    type: fc.constant("heartbeat_ack" as const),
    ballot,
    round: nat,
    applied: nat,
    ok: fc.boolean(),
  }),
  fc.record({
    ...envelope,
    type: fc.constant("catchup_request" as const),
    fromSlot: nat,
    needSnapshot: fc.boolean(),
  }),
  fc.record({
    ...envelope,
    type: fc.constant("catchup" as const),
    entries,
    snapshot: fc.option(snapshot, { nil: null }),
    applied: nat,
  }),
  fc.record({ ...envelope, type: fc.constant("campaign" as const), ballot }),
);

describe("paxos codec", () => {
  it("encodes a value once for all its accepts and its record, and keeps an accepted value's bytes", () => {
    let writes = 0;
    const counting: CommandCodec<string> = {
      write: (writer, command) => {
        writes += 1;
        textCodec.write(writer, command);
      },
      read: textCodec.read,
    };
    const node = { serverId: "s1", incarnation: 1 };
    const accept = (value: LogValue<string>, slot: number): PaxosMessage<string> => ({
      type: "accept",
      cellKey: `cell-${slot}`,
      from: node,
      to: { serverId: "s2", incarnation: 2 },
      epoch: 1,
      ballot: makeBallot(1, 3),
      slot,
      value,
      commit: 0,
    });
    // A leader's turn of many values, sent to six members one destination after the other, then
    // journaled: each value is encoded once.
    const values = Array.from(
      { length: 200 },
      (_, i): LogValue<string> => ({
        kind: "commands",
        stampMs: i,
        stampBallot: 3,
        commands: [`write ${i}`],
      }),
    );
    const sent: Uint8Array[] = [];
    for (let member = 0; member < 6; member++) {
      for (const [i, value] of values.entries())
        sent.push(encodePaxosMessage(accept(value, i + 1), counting));
    }
    for (const value of values) encodeStoredEntry({ slot: 1, ballot: makeBallot(1, 3), value }, counting);
    expect(writes).toBe(values.length);
    // A follower's accepted values are journaled with the bytes they came in, never encoded.
    writes = 0;
    const received = sent.slice(0, values.length).map((bytes) => decodePaxosMessage(bytes, counting));
    const records = received.map((m) =>
      m.type === "accept"
        ? encodeStoredEntry({ slot: m.slot, ballot: m.ballot, value: m.value }, counting)
        : null,
    );
    expect(writes).toBe(0);
    records.forEach((record, i) => {
      expect(decodeStoredEntry(record as Uint8Array, counting)).toEqual({
        slot: i + 1,
        ballot: makeBallot(1, 3),
        value: values[i],
      });
      expect(record).toEqual(
        encodeStoredEntry(
          { slot: i + 1, ballot: makeBallot(1, 3), value: structuredClone(values[i] as LogValue<string>) },
          textCodec,
        ),
      );
    });
  });

  it("every message round-trips, and encoding is a function of the value", () => {
    fc.assert(
      fc.property(message, (m) => {
        const bytes = encodePaxosMessage(m, textCodec);
        const back = decodePaxosMessage(bytes, textCodec);
        expect(back).toEqual(m);
        expect(encodePaxosMessage(back, textCodec)).toEqual(bytes);
      }),
      { numRuns: 2000 },
    );
  });

  it("decoded node ids are shared between messages, and only for small incarnations", () => {
    const accepted = (from: { serverId: string; incarnation: number }): PaxosMessage<string> => ({
      type: "accepted",
      cellKey: "vol-1",
      from,
      to: { serverId: "s1", incarnation: 1 },
      epoch: 1,
      ballot: makeBallot(2, 1),
      slot: 4,
      applied: 3,
    });
    const decode = (m: PaxosMessage<string>) =>
      decodePaxosMessage(encodePaxosMessage(m, textCodec), textCodec);
    const a = decode(accepted({ serverId: "s2", incarnation: 5 }));
    const b = decode(accepted({ serverId: "s2", incarnation: 5 }));
    expect(a.from).toBe(b.from);
    expect(a.to).toBe(b.to);
    expect(a.from).toEqual({ serverId: "s2", incarnation: 5 });
    // Another incarnation or server is another object.
    expect(decode(accepted({ serverId: "s2", incarnation: 6 })).from).not.toBe(a.from);
    expect(decode(accepted({ serverId: "s3", incarnation: 5 })).from).not.toBe(a.from);
    // Large incarnations are decoded afresh each time, equal all the same.
    const big = { serverId: "s2", incarnation: 1_000_000 };
    const c = decode(accepted(big));
    const d = decode(accepted(big));
    expect(c.from).not.toBe(d.from);
    expect(c.from).toEqual(d.from);
  });

  it("arbitrary bytes, and every truncation of a real message, fail only with DecodeError", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        try {
          decodePaxosMessage(bytes, textCodec);
        } catch (error) {
          expect(error).toBeInstanceOf(DecodeError);
        }
      }),
      { numRuns: 5000 },
    );
    fc.assert(
      fc.property(message, fc.nat(), (m, cut) => {
        const bytes = encodePaxosMessage(m, textCodec);
        const at = cut % bytes.length;
        expect(() => decodePaxosMessage(bytes.subarray(0, at), textCodec)).toThrow(DecodeError);
      }),
      { numRuns: 1000 },
    );
  });

  it("refuses a number that no election makes where a ballot goes", () => {
    const campaign = (b: number): PaxosMessage<string> => ({ ...envelopeS1S2, type: "campaign", ballot: b });
    const decode = (b: number) => decodePaxosMessage(encodePaxosMessage(campaign(b), textCodec), textCodec);
    for (const good of [BALLOT_NONE, BALLOT_CHOSEN, makeBallot(1, 1), makeBallot(ROUND_MAX, INCARNATION_MAX)])
      expect(decode(good)).toEqual(campaign(good));
    expect(() => decode(7)).toThrow(/ballot 7 has round 0/);
    expect(() => decode(makeBallot(ROUND_MAX, 1) + 2 ** 20)).toThrow(DecodeError);
    expect(() => decode(makeBallot(3, 1) - 1)).toThrow(/names no incarnation/);
    // In a nack, its promise too; in a log entry, its ballot.
    const nack = encodePaxosMessage(
      { ...envelopeS1S2, type: "nack", ballot: makeBallot(1, 1), promised: 3, reason: "ballot", applied: 0 },
      textCodec,
    );
    expect(() => decodePaxosMessage(nack, textCodec)).toThrow(/ballot 3 has round 0/);
    const entry = encodeStoredEntry(
      { slot: 4, ballot: 2 ** 20 * 5, value: { kind: "noop", stampMs: 0 } },
      textCodec,
    );
    expect(() => decodeStoredEntry(entry, textCodec)).toThrow(/names no incarnation/);
  });

  it("refuses another wire version, an unknown type and counts beyond their limits", () => {
    const m: PaxosMessage<string> = { ...envelopeS1S2, type: "campaign", ballot: makeBallot(1, 5) };
    const bytes = encodePaxosMessage(m, textCodec);
    const otherVersion = Uint8Array.from(bytes);
    otherVersion[0] = 2;
    expect(() => decodePaxosMessage(otherVersion, textCodec)).toThrow(/version 2/);
    const otherType = Uint8Array.from(bytes);
    otherType[1] = 99;
    expect(() => decodePaxosMessage(otherType, textCodec)).toThrow(/unknown paxos message type 99/);
    // A catch-up announcing a million entries is refused before anything is allocated for them.
    const huge = encodePaxosMessage(
      { ...m, type: "catchup", entries: [], snapshot: null, applied: 0 } as PaxosMessage<string>,
      textCodec,
    );
    const header = huge.subarray(0, huge.length - 3);
    const announced = Uint8Array.from([...header, 0xc0, 0x84, 0x3d]);
    expect(() => decodePaxosMessage(announced, textCodec)).toThrow(/exceed the limit/);
  });

  it("node records round-trip and reassemble above the snapshot, in slot order", () => {
    fc.assert(
      fc.property(nodeId, nat, snapshot, entries, (node, promised, snap, logEntries) => {
        const header = decodeNodeHeader(encodeNodeHeader({ node, promised, snapshot: snap }));
        expect(header).toEqual({ node, promised, snapshot: snap });
        const stored = logEntries.map((entry) =>
          decodeStoredEntry(encodeStoredEntry(entry, textCodec), textCodec),
        );
        expect(stored).toEqual(logEntries);
        const node2 = persistedNode(header, [...stored].reverse());
        expect(node2.entries).toEqual(logEntries.filter((entry) => entry.slot > snap.index));
      }),
      { numRuns: 500 },
    );
  });
});
