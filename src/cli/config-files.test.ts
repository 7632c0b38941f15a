import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parseTopology, readServerConfig, readTopology } from "./colony.ts";
import { readTransactionFile } from "./txn-file.ts";

describe("the files the command line reads", () => {
  it.runIf(existsSync("/dev/zero"))(
    "refuse a device that never ends with a message, rather than read it until memory runs out",
    () => {
      expect(() => readServerConfig("/dev/zero")).toThrow(/\/dev\/zero: .*is over 16777216 bytes/);
      expect(() => readTopology("/dev/zero")).toThrow(/\/dev\/zero: .*is over 16777216 bytes/);
      expect(() => readTransactionFile("/dev/zero")).toThrow(
        /\/dev\/zero is over \d+ bytes; a transaction is far smaller/,
      );
    },
  );
});

describe("a topology's endpoints", () => {
  const server = (id: string, host: string, port: number, adminPort: number) => ({
    id,
    host,
    port,
    adminPort,
    rack: "r1",
    power: "p1",
  });
  const topology = (...servers: ReturnType<typeof server>[]) => ({ cellSize: 1, servers });

  it("are refused when two entries name one endpoint, however it is spelt", () => {
    const cases: [ReturnType<typeof server>, RegExp][] = [
      [server("s2", "127.0.0.1", 7101, 7202), /127\.0\.0\.1:7101 is used twice$/m],
      [server("s2", "localhost", 7101, 7202), /localhost:7101 is used twice: it is 127\.0\.0\.1:7101 too/],
      [server("s2", "Host-A.", 7301, 7302), /Host-A\.:7301 is used twice: it is host-a:7301 too/],
      [
        server("s2", "0:0:0:0:0:0:0:1", 7401, 7402),
        /\[0:0:0:0:0:0:0:1\]:7401 is used twice: it is \[::1\]:7401 too/,
      ],
    ];
    const first = [
      server("s1", "127.0.0.1", 7101, 7201),
      server("s3", "host-a", 7301, 7303),
      server("s4", "::1", 7401, 7403),
    ];
    for (const [second, expected] of cases) {
      expect(() => parseTopology(topology(...first, second), "test")).toThrow(expected);
    }
    // Distinct endpoints, loopback ones included, are fine.
    expect(() =>
      parseTopology(
        topology(...first, server("s2", "127.0.0.2", 7101, 7202), server("s5", "localhost", 7501, 7502)),
        "test",
      ),
    ).not.toThrow();
  });
});
