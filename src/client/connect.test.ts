import { describe, expect, it } from "vitest";
import {
  ConnectError,
  type ConnectOptions,
  connect,
  connectOptionsProblem,
  parseColonyKeys,
} from "./connect.ts";

const key = new Uint8Array(32).fill(7);
const servers = Array.from({ length: 7 }, (_, i) => ({
  id: `s${i + 1}`,
  host: "127.0.0.1",
  port: 7101 + i,
  rack: `r${i % 3}`,
  power: `p${i % 3}`,
}));

/** Options a JavaScript caller could pass: whatever shape, without the types to stop it. */
function loose(options: Record<string, unknown>): ConnectOptions {
  return options as unknown as ConnectOptions;
}

describe("connect() options given directly", () => {
  it("accepts servers and a key", () => {
    expect(connectOptionsProblem({ servers, colonyKey: key })).toBeNull();
    expect(
      connectOptionsProblem({ servers, colonyKey: key, alsoAcceptedKeys: [new Uint8Array(32).fill(1)] }),
    ).toBeNull();
    expect(
      connectOptionsProblem({ servers, colonyKey: Buffer.from(key), cellSize: 5, requestTimeoutMs: 250 }),
    ).toBeNull();
  });

  it("names what is wrong with each kind of bad option", () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [
        { servers: ["127.0.0.1:7101"], colonyKey: key },
        /servers\[0\] must be \{ id, host, port, rack, power \}.*"127\.0\.0\.1:7101"/,
      ],
      [{ servers: "127.0.0.1:7101", colonyKey: key }, /servers must be an array/],
      [{ servers: [{ ...servers[0], port: "7101" }], colonyKey: key }, /servers\[0\] must be/],
      [
        { servers: [{ ...servers[0], port: 70000 }], colonyKey: key },
        /servers\[0\]\.port 70000 is not a TCP port/,
      ],
      [
        { servers: [servers[0], servers[1], servers[0]], colonyKey: key },
        /servers\[2\]\.id "s1" appears twice/,
      ],
      [{ servers, colonyKey: "07".repeat(32) }, /colonyKey must be a Uint8Array .* not its hex text/],
      [{ servers, colonyKey: key, cellSize: 0 }, /cellSize must be a whole number from 1 to/],
      [{ servers, colonyKey: key, cellSize: 7.5 }, /cellSize must be a whole number/],
      [{ servers, colonyKey: key, requestTimeoutMs: -1 }, /requestTimeoutMs must be a positive number/],
      [
        { servers, colonyKey: key, requestTimeoutMs: Number.NaN },
        /requestTimeoutMs must be a positive number/,
      ],
      [{ servers, colonyKey: key, rack: 3 }, /rack must be a string/],
      [
        { servers, colonyKey: new Uint8Array(8) },
        /^colonyKey: the colony key is 8 bytes; it must be at least 32/,
      ],
      [
        { servers, colonyKey: key, localAddress: "not-an-ip" },
        /localAddress must be an IP address .*"not-an-ip"/,
      ],
      [
        { colony: "colony.json", colonyFile: "x" },
        /unknown option "colonyFile"; the options are colony, servers/,
      ],
      [{ colony: 42 }, /colony must be the path of a connection file/],
      [{ servers, alsoAcceptedKeys: [key] }, /alsoAcceptedKeys needs colonyKey/],
      [{ servers, colonyKey: key, alsoAcceptedKeys: key }, /alsoAcceptedKeys must be an array/],
      [
        { servers, colonyKey: key, alsoAcceptedKeys: ["07".repeat(32)] },
        /alsoAcceptedKeys must be an array of Uint8Array/,
      ],
      [
        { servers, colonyKey: key, alsoAcceptedKeys: [Buffer.from(key)] },
        /the same colony key is given twice/,
      ],
      [
        {
          servers,
          colonyKey: key,
          alsoAcceptedKeys: [new Uint8Array(32).fill(1), new Uint8Array(32).fill(2)],
        },
        /3 colony keys; an endpoint holds at most 2/,
      ],
    ];
    for (const [options, expected] of cases) expect(connectOptionsProblem(loose(options))).toMatch(expected);
    expect(connectOptionsProblem(null as unknown as ConnectOptions)).toMatch(/takes an options object/);
    expect(connectOptionsProblem({ servers, colonyKey: key, localAddress: "::1" })).toBeNull();
  });

  it("refuses them with a ConnectError before opening anything", async () => {
    await expect(connect(loose({ servers: ["127.0.0.1:7101"], colonyKey: key }))).rejects.toThrow(
      ConnectError,
    );
    await expect(connect(loose({ servers: ["127.0.0.1:7101"], colonyKey: key }))).rejects.toThrow(
      /^connect\(\): servers\[0\] must be/,
    );
    await expect(connect({ servers: servers.slice(0, 3), colonyKey: key })).rejects.toThrow(
      /cells of 7 nodes need at least 7 servers; 3 are given/,
    );
    // Options that throw when read are a problem of the options too.
    const throwing = { servers, colonyKey: key, sessions: [{ cellKey: "v", id: 1, seq: 0, fresh: true }] };
    Object.defineProperty(throwing.sessions[0], "fresh", {
      get() {
        throw new Error("no");
      },
    });
    await expect(connect(throwing)).rejects.toThrow(/^connect\(\): the options could not be read \(no\)/);
    // With cells of 3, three servers are enough: a client, opened and closed (it sends nothing).
    const client = await connect({ servers: servers.slice(0, 3), colonyKey: key, cellSize: 3 });
    await client.close();
  });
});

describe("colony keys written in hex", () => {
  const a = "ab".repeat(32);
  const b = "cd".repeat(32);

  it("reads one key, or two while the key is rotated, the first signing", () => {
    expect(parseColonyKeys(`${a}\n`, "f")).toEqual({ signing: Buffer.from(a, "hex"), alsoAccepted: [] });
    for (const text of [`${a}\n${b}\n`, `  ${a} ${b}`, `${a},${b}`, `${a}\r\n\r\n${b}`]) {
      expect(parseColonyKeys(text, "f")).toEqual({
        signing: Buffer.from(a, "hex"),
        alsoAccepted: [Buffer.from(b, "hex")],
      });
    }
  });

  it("names what is wrong, and which key", () => {
    const cases: [string, RegExp][] = [
      ["", /keys\.txt holds no colony key; it should hold 64 or more hex digits/],
      [" \n ", /holds no colony key/],
      [`${a}\n${b}\n${"ef".repeat(32)}`, /holds 3 colony keys; it may hold 2 at most/],
      [`${a}\n${a}`, /lists the same colony key twice/],
      [`${a}\nxyz`, /colony key 2 of 2 in keys\.txt is not hexadecimal/],
      [`${a}\n${"ab".repeat(16)}`, /colony key 2 of 2 in keys\.txt has 16 bytes; it needs at least 32/],
      ["ab".repeat(16), /the colony key in keys\.txt has 16 bytes/],
    ];
    for (const [text, expected] of cases) expect(() => parseColonyKeys(text, "keys.txt")).toThrow(expected);
    expect(() => parseColonyKeys("", "keys.txt")).toThrow(ConnectError);
  });
});
