import { describe, expect, it } from "vitest";
import { type Command, encodeCommand } from "../cell/index.ts";
import { ByteWriter } from "../core/index.ts";
import { makeBallot } from "../paxos/index.ts";
import { decodeFrame, encodeFrame, frameKey } from "../transport/index.ts";
import type { ServerMessage } from "./server.ts";
import { decodeServerMessage, encodeServerMessage, serverMessageCodec } from "./wire.ts";

const key = frameKey(new Uint8Array(32).fill(3));

function command(value: Uint8Array): Command {
  return {
    version: 1,
    session: 7,
    seq: 3,
    newSession: false,
    op: { type: "txn", txn: { conditions: [], reads: ["r"], writes: [{ op: "put", item: "k", value }] } },
  };
}

const accept: ServerMessage = {
  kind: "paxos",
  message: {
    type: "accept",
    cellKey: "volume-1",
    from: { serverId: "s1", incarnation: 1 },
    to: { serverId: "s2", incarnation: 2 },
    epoch: 1,
    ballot: makeBallot(9, 1),
    slot: 12,
    value: {
      kind: "commands",
      stampMs: 1_700_000_000_000,
      stampBallot: 9,
      commands: [command(new Uint8Array([5, 6, 7]))],
    },
    commit: 11,
  },
};

const request: ServerMessage = {
  kind: "request",
  id: 4,
  cellKey: "volume-1",
  body: { type: "command", leaderUnresponsive: false, command: command(new Uint8Array(100).fill(8)) },
};

const read: ServerMessage = {
  kind: "request",
  id: 5,
  cellKey: "volume-1",
  body: {
    type: "read",
    consistency: "eventual",
    watermark: 3,
    txn: {
      conditions: [{ op: "equals", item: "k", value: new Uint8Array([1, 2]) }],
      reads: ["k"],
      writes: [],
    },
  },
};

describe("server wire", () => {
  it("decoded messages keep none of the received frame's bytes", () => {
    // The transport hands the codec views of the frame; a message that kept a view would change
    // when the frame's memory does (and would pin the socket's whole chunk).
    const messages = [accept, request, read];
    const bytes = encodeFrame(key, {
      sender: "s1",
      sequence: 1,
      messages: messages.map(serverMessageCodec.encode),
    });
    const frame = decodeFrame(key, bytes);
    expect(frame.ok).toBe(true);
    if (!frame.ok) return;
    const decoded = frame.frame.messages.map((view) => serverMessageCodec.decode(view));
    expect(decoded).toEqual(messages);
    bytes.fill(0xff);
    expect(decoded).toEqual(messages);
  });

  it("writes a command in place exactly as its stand-alone encoding, after its length", () => {
    // The command is written straight into the message, its length prefix computed ahead of it.
    for (const size of [0, 3, 120, 300]) {
      const body = command(new Uint8Array(size).fill(1));
      const message: ServerMessage = {
        ...request,
        body: { type: "command", leaderUnresponsive: true, command: body },
      };
      const encoded = serverMessageCodec.encode(message);
      const alone = encodeCommand(body);
      const prefixed = new ByteWriter().uint(alone.length).raw(alone).finish();
      // A command request ends with its command.
      expect(Array.from(encoded.subarray(encoded.length - prefixed.length))).toEqual(Array.from(prefixed));
      expect(serverMessageCodec.decode(encoded)).toEqual(message);
    }
  });
});

describe("relayed responses", () => {
  const response: ServerMessage = {
    kind: "response",
    id: 41,
    cellKey: "volume-1",
    body: { type: "result", index: 12, result: { kind: "lease", result: { status: "released" } } },
  };

  it("carry the server they were relayed from; plain responses carry none", () => {
    const relayed: ServerMessage = { ...response, relayedFrom: "s2" };
    expect(decodeServerMessage(encodeServerMessage(relayed))).toEqual(relayed);
    const plain = decodeServerMessage(encodeServerMessage(response));
    expect(plain).toEqual(response);
    expect("relayedFrom" in plain).toBe(false);
  });

  it("a relayed response that names no server is rejected", () => {
    const bytes = encodeServerMessage({ ...response, relayedFrom: "s2" });
    // kind, id, cell key (length and bytes), then the relaying server's id: its length set to 0.
    const at = 1 + 1 + 1 + "volume-1".length;
    expect(bytes[at]).toBe(2);
    const emptied = Uint8Array.from([...bytes.subarray(0, at), 0, ...bytes.subarray(at + 3)]);
    expect(() => decodeServerMessage(emptied)).toThrow(/names no server/);
  });
});
